// Skinny projections (decode and MTP verify steps): y (M, N) fp32 = x (M, K) bf16 · W (N, K)ᵀ bf16
// (+ beta · y) for M ≤ SKINNY_MAX_M. They are weight-streaming: every byte of W is read once and
// each is used M times, so the kernel is built for bandwidth. cuBLASLt tiles N by 128 or more,
// which at decode shapes leaves most multiprocessors idle (2688 outputs = 21 tiles on 132 SMs;
// the MoE router's 128 outputs = one): measured 20× under the copy bandwidth for Nano's out_proj
// at batch 1 (kernels/dev/NOTES.md, run 13).
//
// Each warp owns ROWS consecutive output features and walks K with 16-byte loads of W (8 bf16 per
// lane per row), the same 16-byte slices of the M activation rows coming through the L1/L2 cache;
// fp32 products accumulate per lane and are summed across the warp at the end. Blocks of 4 warps
// give N / 8 blocks: 336 for N = 2688, enough to keep every SM streaming.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {
constexpr int ROWS = 2;   // output features per warp
constexpr int WARPS = 4;  // per block

__device__ __forceinline__ void fma8(float& acc, const uint4& w, const uint4& x) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(w2[i]), b = __bfloat1622float2(x2[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
}
}  // namespace

template <int MT>
__global__ void __launch_bounds__(WARPS * 32) skinny_gemm_kernel(const bf16* __restrict__ x, int M, int K, const bf16* __restrict__ W, int N, float* __restrict__ y, float beta) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n0 = (blockIdx.x * WARPS + warp) * ROWS;
  if (n0 >= N) return;
  float acc[ROWS][MT];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;
  const uint4* wrow[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) wrow[r] = reinterpret_cast<const uint4*>(W + static_cast<int64_t>(min(n0 + r, N - 1)) * K);
  const int K8 = K / 8;
  for (int k8 = lane; k8 < K8; k8 += 32) {
    uint4 w[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) w[r] = __ldg(wrow[r] + k8);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m < M) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(m) * K) + k8);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) fma8(acc[r][m], w[r], xv);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = warp_sum(acc[r][m]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      if (n0 + r >= N) continue;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m >= M) continue;
        float* out = y + static_cast<int64_t>(m) * N + n0 + r;
        *out = beta != 0.f ? acc[r][m] + beta * *out : acc[r][m];
      }
    }
  }
}

bool skinny_gemm_supported(int64_t M, int64_t K, const void* x, const void* W) {
  return M >= 1 && M <= SKINNY_MAX_M && K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(W) & 15) == 0;
}

void skinny_gemm(const bf16* x, int M, int K, const bf16* W, int N, float* y, float beta, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  const int blocks = ceil_div(N, WARPS * ROWS);
  if (M <= 1) skinny_gemm_kernel<1><<<blocks, WARPS * 32, 0, s>>>(x, M, K, W, N, y, beta);
  else if (M <= 2) skinny_gemm_kernel<2><<<blocks, WARPS * 32, 0, s>>>(x, M, K, W, N, y, beta);
  else if (M <= 4) skinny_gemm_kernel<4><<<blocks, WARPS * 32, 0, s>>>(x, M, K, W, N, y, beta);
  else if (M <= 8) skinny_gemm_kernel<8><<<blocks, WARPS * 32, 0, s>>>(x, M, K, W, N, y, beta);
  else skinny_gemm_kernel<16><<<blocks, WARPS * 32, 0, s>>>(x, M, K, W, N, y, beta);
  LM_LAUNCH_CHECK("skinny_gemm");
}

}  // namespace lm::cuda
