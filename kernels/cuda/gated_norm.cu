// Gated group RMSNorm (Mamba-2 output): v = y · silu(z); per group of `group` channels
// v / sqrt(mean(v²) + eps), times w; gate before norm as in transformers. One block per (row, group).
#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void gated_rmsnorm_kernel(const float* y, const float* z, int64_t z_stride, const float* w, int I, int group, float eps, bf16* out) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const int g0 = blockIdx.y * group;
  float ss = 0.f;
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    const float v = y[r * I + g0 + i] * silu(z[r * z_stride + g0 + i]);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / group + eps);
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    const float v = y[r * I + g0 + i] * silu(z[r * z_stride + g0 + i]);
    out[r * I + g0 + i] = __float2bfloat16(w[g0 + i] * (v * inv));
  }
}

void gated_rmsnorm(const float* y, const float* z, int64_t z_stride, const float* w, int R, int I, int group, float eps, bf16* out, cudaStream_t s) {
  if (R == 0) return;
  // more threads for decode rows
  launch("gated_rmsnorm", gated_rmsnorm_kernel, dim3(R, I / group), dim3(R < 128 ? 512 : 256), 0, s, y, z, z_stride, w, I, group, eps, out);
}

}  // namespace lm::cuda
