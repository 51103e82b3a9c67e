// Weight storage for the CPU backend: every tensor converted to fp32 at load, looked up by its
// canonical checkpoint name with the shape the model expects. Dummy weights are generated in
// place with the same names, from a seeded generator, with values in realistic ranges.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine.h"

namespace lm {

/** How a dummy tensor is initialised. */
enum class Init { Linear, Norm, Zero, ALog, DtBias, Ones, Embedding, Bias };

class WeightStore {
 public:
  WeightStore(const std::vector<TensorRef>& refs, bool dummy, uint64_t seed);
  /** The tensor `name` as fp32, checked against `shape`; throws lm::Error naming the tensor. */
  const float* get(const std::string& name, const std::vector<int64_t>& shape, Init init = Init::Linear);
  /** Like get, or nullptr when the checkpoint lacks it (optional biases). */
  const float* get_optional(const std::string& name, const std::vector<int64_t>& shape, Init init = Init::Bias);
  bool has(const std::string& name) const { return dummy_ || refs_.count(name) > 0; }
  uint64_t num_parameters() const { return num_parameters_; }

 private:
  std::map<std::string, TensorRef> refs_;
  std::map<std::string, std::vector<float>> data_;
  bool dummy_;
  uint64_t seed_;
  uint64_t num_parameters_ = 0;
};

std::string shape_str(const std::vector<int64_t>& shape);

/** The raw bytes of one checkpoint tensor, after checking its shape; throws lm::Error naming it. */
std::vector<char> read_tensor_bytes(const TensorRef& ref, const std::vector<int64_t>& shape);

}  // namespace lm
