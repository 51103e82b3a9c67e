// Reads checkpoint tensors (F32, BF16, F16; little-endian, as safetensors stores them) into fp32.
#include "engine/weights.h"

#include <cmath>
#include <cstring>
#include <fstream>

namespace lm {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) bits = sign;
    else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

std::vector<char> read_tensor_bytes(const TensorRef& r, const std::vector<int64_t>& shape) {
  if (r.shape != shape) throw Error("tensor " + r.name + " has shape " + shape_str(r.shape) + ", expected " + shape_str(shape));
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t elem = r.dtype == DType::F32 ? 4 : 2;
  if (r.nbytes != static_cast<uint64_t>(numel) * elem) throw Error("tensor " + r.name + " has " + std::to_string(r.nbytes) + " bytes, expected " + std::to_string(numel * elem));
  std::vector<char> raw(r.nbytes);
  std::ifstream f(r.file, std::ios::binary);
  if (!f) throw Error("cannot open " + r.file + " (tensor " + r.name + ")");
  f.seekg(static_cast<std::streamoff>(r.offset));
  f.read(raw.data(), static_cast<std::streamsize>(r.nbytes));
  if (!f) throw Error("short read of tensor " + r.name + " from " + r.file);
  return raw;
}

WeightStore::WeightStore(const std::vector<TensorRef>& refs, bool dummy, uint64_t seed) : dummy_(dummy), seed_(seed) {
  for (const auto& r : refs) refs_[r.name] = r;
}

const float* WeightStore::get_optional(const std::string& name, const std::vector<int64_t>& shape, Init init) {
  if (dummy_ || refs_.count(name)) return get(name, shape, init);
  return nullptr;
}

const float* WeightStore::get(const std::string& name, const std::vector<int64_t>& shape, Init init) {
  auto found = data_.find(name);
  if (found != data_.end()) return found->second.data();
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  std::vector<float> out(static_cast<size_t>(numel));
  if (dummy_) {
    uint64_t state = seed_ ^ hash_name(name);
    const int64_t fan_in = shape.size() >= 2 ? shape.back() : 1;
    const float bound = 1.f / std::sqrt(static_cast<float>(fan_in));
    for (int64_t i = 0; i < numel; ++i) {
      const float u = static_cast<float>((splitmix64(state) >> 11) * (1.0 / 9007199254740992.0));  // [0, 1)
      switch (init) {
        case Init::Linear: out[i] = (2.f * u - 1.f) * bound; break;
        case Init::Embedding: out[i] = (2.f * u - 1.f); break;
        case Init::Norm: out[i] = 0.8f + 0.4f * u; break;
        case Init::Ones: out[i] = 1.f; break;
        case Init::Zero: out[i] = 0.f; break;
        case Init::Bias: out[i] = (2.f * u - 1.f) * 0.02f; break;
        case Init::ALog: out[i] = std::log(1.f + 15.f * u); break;
        case Init::DtBias: {  // inverse softplus of dt in [1e-3, 1e-1], log-uniform
          const float dt = std::exp(std::log(1e-3f) + u * (std::log(1e-1f) - std::log(1e-3f)));
          out[i] = dt + std::log(-std::expm1(-dt));
          break;
        }
      }
    }
  } else {
    auto it = refs_.find(name);
    if (it == refs_.end()) throw Error("missing tensor " + name + " (expected shape " + shape_str(shape) + ")");
    const TensorRef& r = it->second;
    const std::vector<char> raw = read_tensor_bytes(r, shape);
    if (r.dtype == DType::F32) {
      std::memcpy(out.data(), raw.data(), raw.size());
    } else {
      const auto* h = reinterpret_cast<const uint16_t*>(raw.data());
      for (int64_t i = 0; i < numel; ++i) out[i] = r.dtype == DType::BF16 ? bf16_to_f32(h[i]) : f16_to_f32(h[i]);
    }
  }
  num_parameters_ += static_cast<uint64_t>(numel);
  auto& slot = data_[name];
  slot = std::move(out);
  return slot.data();
}

}  // namespace lm
