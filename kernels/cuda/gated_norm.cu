// Gated group RMSNorm (Mamba-2 output): v = y · silu(z); per group of `group` channels
// v / sqrt(mean(v²) + eps), times w; gate before norm as in transformers. One block per (row, group).
// Where a group is a multiple of 4 channels, at most 4096, and every pointer and stride allows
// 16-byte access, gated_rmsnorm_vec_kernel has one float4 of y and z per thread, held in registers
// between the sum and the write (one pass over y and z instead of two; bf16 written 8 bytes at a time).
#include <cstdint>
#include <cstdlib>

#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

/** Dev switch for A/B runs: LM_CUDA_PREFILL_VEC=0 keeps the one-row-per-thread kernels. */
static bool prefill_vec_paths() {
  static const bool on = [] {
    const char* v = std::getenv("LM_CUDA_PREFILL_VEC");
    return v == nullptr || *v == '\0' || std::atoi(v) != 0;
  }();
  return on;
}

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

__global__ void gated_rmsnorm_vec_kernel(const float* y, const float* z, int64_t z_stride, const float* w, int I, int group, float eps, bf16* out) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const int q = 4 * threadIdx.x;  // the thread's channels within the group; threads past it add 0
  const int i = blockIdx.y * group + q;
  float v0 = 0.f, v1 = 0.f, v2 = 0.f, v3 = 0.f;
  if (q < group) {
    const float4 yv = *reinterpret_cast<const float4*>(y + r * I + i);
    const float4 zv = *reinterpret_cast<const float4*>(z + r * z_stride + i);
    v0 = yv.x * silu(zv.x);
    v1 = yv.y * silu(zv.y);
    v2 = yv.z * silu(zv.z);
    v3 = yv.w * silu(zv.w);
  }
  const float ss = block_sum(v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3, scratch);
  if (q >= group) return;
  const float inv = rsqrtf(ss / group + eps);
  const float4 wv = *reinterpret_cast<const float4*>(w + i);
  __nv_bfloat162 lo = __floats2bfloat162_rn(wv.x * (v0 * inv), wv.y * (v1 * inv));
  __nv_bfloat162 hi = __floats2bfloat162_rn(wv.z * (v2 * inv), wv.w * (v3 * inv));
  uint2 packed;
  packed.x = *reinterpret_cast<unsigned*>(&lo);
  packed.y = *reinterpret_cast<unsigned*>(&hi);
  *reinterpret_cast<uint2*>(out + r * I + i) = packed;
}

void gated_rmsnorm(const float* y, const float* z, int64_t z_stride, const float* w, int R, int I, int group, float eps, bf16* out, cudaStream_t s) {
  if (R == 0) return;
  const bool aligned = (reinterpret_cast<uintptr_t>(y) | reinterpret_cast<uintptr_t>(z) | reinterpret_cast<uintptr_t>(w)) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0;
  if (prefill_vec_paths() && aligned && group % 4 == 0 && group <= 4096 && I % 4 == 0 && z_stride % 4 == 0) {
    launch("gated_rmsnorm_vec", gated_rmsnorm_vec_kernel, dim3(R, I / group), dim3(ceil_div(group / 4, 32) * 32), 0, s, y, z, z_stride, w, I, group, eps, out);
    return;
  }
  // more threads for decode rows
  launch("gated_rmsnorm", gated_rmsnorm_kernel, dim3(R, I / group), dim3(R < 128 ? 512 : 256), 0, s, y, z, z_stride, w, I, group, eps, out);
}

}  // namespace lm::cuda
