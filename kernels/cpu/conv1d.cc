// Causal depthwise conv1d + bias + SiLU with a rolling state of the previous K-1 inputs.
// out[t, c] = silu(bias[c] + Σ_j w[c, j] · in[t - (K-1) + j, c]), `in` = state rows then x rows.
#include <vector>

#include "cpu/ops.h"

namespace lm::cpu {

void causal_conv1d_silu(const float* x, int64_t x_stride, int64_t T, int64_t C, int64_t K, const float* w, const float* bias, float* state, float* out) {
  const int64_t S = K - 1;
  std::vector<float> window(static_cast<size_t>((S + T) * C));  // (S + T, C)
  std::copy(state, state + S * C, window.begin());
  for (int64_t t = 0; t < T; ++t) std::copy(x + t * x_stride, x + t * x_stride + C, window.begin() + (S + t) * C);
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * C;
    for (int64_t c = 0; c < C; ++c) {
      float acc = bias ? bias[c] : 0.f;
      for (int64_t j = 0; j < K; ++j) acc += w[c * K + j] * window[(t + j) * C + c];
      o[c] = silu(acc);
    }
  }
  std::copy(window.begin() + T * C, window.begin() + (T + S) * C, state);
}

}  // namespace lm::cpu
