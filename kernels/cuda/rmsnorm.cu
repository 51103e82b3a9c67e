// RMSNorm of fp32 rows into bf16: out = w * x / sqrt(mean(x²) + eps), fp32 math, one block per row.
// `rows` optionally gathers (the final norm runs only on the rows whose logits are needed).
//
// Rows whose width is a multiple of 4 (every model's hidden size) take one pass: each thread loads
// its VEC float4 slices of x and w into registers, the block sums the squares, and the same
// registers are scaled and stored as bf16 — one round of global loads instead of three, with the
// gains loaded before waiting for the kernel that writes x (programmatic dependent launch). The
// block size depends only on the width, so a row's result never depends on the batch.
#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {
constexpr int FAST_THREADS_MAX = 256;
}

__global__ void rmsnorm_kernel(const float* h, const int32_t* rows, int H, const float* w, float eps, bf16* out) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_trigger();
  const int64_t src = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* x = h + src * H;
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / H + eps);
  bf16* o = out + static_cast<int64_t>(blockIdx.x) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = __float2bfloat16(w[i] * (x[i] * inv));
}

template <int VEC>
__global__ void __launch_bounds__(FAST_THREADS_MAX) rmsnorm_vec_kernel(const float* h, const int32_t* rows, int H, const float* w, float eps, bf16* out) {
  __shared__ float scratch[32];
  const int H4 = H / 4;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4 wv[VEC], xv[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int i = threadIdx.x + v * blockDim.x;
    wv[v] = i < H4 ? w4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  pdl_wait();
  pdl_trigger();
  const int64_t src = rows ? rows[blockIdx.x] : blockIdx.x;
  const float4* x4 = reinterpret_cast<const float4*>(h + src * H);
  float ss = 0.f;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int i = threadIdx.x + v * blockDim.x;
    xv[v] = i < H4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    ss += xv[v].x * xv[v].x + xv[v].y * xv[v].y + xv[v].z * xv[v].z + xv[v].w * xv[v].w;
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / H + eps);
  uint2* o = reinterpret_cast<uint2*>(out + static_cast<int64_t>(blockIdx.x) * H);
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int i = threadIdx.x + v * blockDim.x;
    if (i >= H4) continue;
    const __nv_bfloat162 a = __floats2bfloat162_rn(wv[v].x * (xv[v].x * inv), wv[v].y * (xv[v].y * inv));
    const __nv_bfloat162 b = __floats2bfloat162_rn(wv[v].z * (xv[v].z * inv), wv[v].w * (xv[v].w * inv));
    uint2 packed;
    packed.x = *reinterpret_cast<const unsigned*>(&a);
    packed.y = *reinterpret_cast<const unsigned*>(&b);
    o[i] = packed;
  }
}

void rmsnorm_bf16(const float* h, const int32_t* rows, int R, int H, const float* w, float eps, bf16* out, cudaStream_t s) {
  if (R == 0) return;
  const bool aligned = ((reinterpret_cast<uintptr_t>(h) | reinterpret_cast<uintptr_t>(w)) & 15) == 0 && (reinterpret_cast<uintptr_t>(out) & 7) == 0;
  if (H % 4 == 0 && aligned && H / 4 <= 8 * FAST_THREADS_MAX) {
    // The fewest float4 per thread that fit in FAST_THREADS_MAX threads, then the fewest warps.
    const int H4 = H / 4;
    const int vec = H4 <= FAST_THREADS_MAX ? 1 : H4 <= 2 * FAST_THREADS_MAX ? 2 : H4 <= 4 * FAST_THREADS_MAX ? 4 : 8;
    const int threads = ceil_div(ceil_div(H4, vec), 32) * 32;
    const dim3 grid(R), block(threads);
    if (vec == 1) launch("rmsnorm_bf16", rmsnorm_vec_kernel<1>, grid, block, 0, s, h, rows, H, w, eps, out);
    else if (vec == 2) launch("rmsnorm_bf16", rmsnorm_vec_kernel<2>, grid, block, 0, s, h, rows, H, w, eps, out);
    else if (vec == 4) launch("rmsnorm_bf16", rmsnorm_vec_kernel<4>, grid, block, 0, s, h, rows, H, w, eps, out);
    else launch("rmsnorm_bf16", rmsnorm_vec_kernel<8>, grid, block, 0, s, h, rows, H, w, eps, out);
    return;
  }
  // Few rows (decode): 1024 threads, so each thread's loads are few and issued together; the
  // 256-thread blocks of prefill leave a single decode row latency-bound on 11 serial loads.
  launch("rmsnorm_bf16", rmsnorm_kernel, dim3(R), dim3(R < 128 ? 1024 : 256), 0, s, h, rows, H, w, eps, out);
}

}  // namespace lm::cuda
