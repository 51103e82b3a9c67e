// Host-side helpers shared by the CUDA op tests (kernels/tests/test-cuda-*.cc): random inputs,
// bf16 rounding, and copies to and from the device (leaked on purpose: each test is one process).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda_test {

inline std::vector<float> randn(std::mt19937& g, size_t n, float s = 1.f) {
  std::normal_distribution<float> d(0.f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}

/** A device copy of h (at least one element allocated, so empty inputs still get a valid pointer). */
template <class T>
T* dev(const std::vector<T>& h) {
  T* p = nullptr;
  lm::cuda::check(cudaMalloc(&p, std::max<size_t>(1, h.size()) * sizeof(T)), "cudaMalloc");
  lm::cuda::check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

/** n elements of p, as they are. */
template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  lm::cuda::check(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return h;
}

/**
 * Device view of a batch: sequence i in slot[i], feeding lens[i] tokens from position pos0[i], its block
 * table at bt0[i] in `tables` (device); rows packed in sequence order.
 */
inline lm::cuda::BatchView batch_view(const std::vector<int>& slot, const std::vector<int>& lens, const std::vector<int>& pos0, const std::vector<int>& bt0, const int* tables, int block_size) {
  std::vector<int> row0, row_seq;
  int r = 0;
  for (size_t i = 0; i < lens.size(); ++i) {
    row0.push_back(r);
    row_seq.insert(row_seq.end(), static_cast<size_t>(lens[i]), static_cast<int>(i));
    r += lens[i];
  }
  lm::cuda::BatchView v;
  v.nseq = static_cast<int>(lens.size());
  v.rows = r;
  v.seq_slot = dev(slot);
  v.seq_row0 = dev(row0);
  v.seq_len = dev(lens);
  v.seq_pos0 = dev(pos0);
  v.seq_bt0 = dev(bt0);
  v.block_tables = tables;
  v.block_size = block_size;
  v.row_seq = dev(row_seq);
  v.max_len = lens.empty() ? 0 : *std::max_element(lens.begin(), lens.end());
  return v;
}

}  // namespace lm::cuda_test
