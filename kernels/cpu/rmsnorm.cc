// RMSNorm (per row, fp32) and the Mamba-2 gated group RMSNorm: norm(y * silu(z)) per group of
// `group` contiguous channels, then times the weight (gate before norm, as in transformers).
#include "cpu/ops.h"

namespace lm::cpu {

void rmsnorm(const float* x, const float* w, int64_t rows, int64_t H, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * H;
    double ss = 0.0;
    for (int64_t i = 0; i < H; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.f / std::sqrt(static_cast<float>(ss / H) + eps);
    float* o = out + r * H;
    for (int64_t i = 0; i < H; ++i) o[i] = w[i] * (xr[i] * inv);
  }
}

void gated_group_rmsnorm(const float* y, const float* z, int64_t z_stride, const float* w, int64_t rows, int64_t I, int64_t group, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g0 = 0; g0 < I; g0 += group) {
      const float* yr = y + r * I + g0;
      const float* zr = z + r * z_stride + g0;
      float* o = out + r * I + g0;
      double ss = 0.0;
      for (int64_t i = 0; i < group; ++i) {
        o[i] = yr[i] * silu(zr[i]);
        ss += static_cast<double>(o[i]) * o[i];
      }
      const float inv = 1.f / std::sqrt(static_cast<float>(ss / group) + eps);
      for (int64_t i = 0; i < group; ++i) o[i] = w[g0 + i] * (o[i] * inv);
    }
  }
}

}  // namespace lm::cpu
