// The weight-streaming dot products shared by the skinny GEMM (gemv.cu) and the small-batch MoE
// kernels (moe_decode.cu): a warp owns ROWS consecutive rows of a bf16 weight matrix (N, K) and
// walks K with 16-byte loads (8 bf16 per lane per row, lanes interleaved), multiplying each slice
// with the same slice of up to MT activation rows (read through L1, which the weight stream
// bypasses). Products accumulate in fp32 per lane in a fixed order, then are summed across the
// warp: an output's value depends only on its weight row and activation row, never on which other
// rows share the warp, the launch or the batch.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/launch.cuh"

namespace lm::cuda {

#ifdef __CUDACC__
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

/** A 16-byte load of streamed (read-once) data: read-only path, not kept in L1. */
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

/**
 * acc[r][m] = Σ_k W[row r, k] · x_m[k] for this warp, summed over the warp (every lane gets the
 * totals). w_rows[r]: the ROWS weight rows (callers point rows past the matrix at a valid row and
 * drop their results); x[m]: activation rows for m < nx (16-byte aligned, K a multiple of 8).
 */
template <int ROWS, int MT>
__device__ __forceinline__ void warp_dot(const bf16* const (&w_rows)[ROWS], const bf16* const (&x)[MT], int nx, int K, float (&acc)[ROWS][MT]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;
  const int K8 = K / 8;
  for (int k8 = lane; k8 < K8; k8 += 32) {
    uint4 w[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) w[r] = ld_stream(reinterpret_cast<const uint4*>(w_rows[r]) + k8);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m < nx) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x[m]) + k8);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) fma8(acc[r][m], w[r], xv);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = warp_sum(acc[r][m]);
}

/** L2 prefetch of a warp's weight rows n0 .. n0 + ROWS - 1 of W (N, K), one row per lane; rows past N skipped. */
template <int ROWS>
__device__ __forceinline__ void prefetch_rows(const bf16* W, int n0, int N, int K) {
  const int lane = threadIdx.x & 31;
  if (lane < ROWS && n0 + lane < N) prefetch_l2(W + static_cast<int64_t>(n0 + lane) * K, static_cast<unsigned>(K) * sizeof(bf16));
}
#endif  // __CUDACC__

}  // namespace lm::cuda
