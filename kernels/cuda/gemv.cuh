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
/** A 16-byte load of streamed (read-once) data: read-only path, not kept in L1. */
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

/** The 8 bf16 of a 16-byte slice as floats. */
__device__ __forceinline__ void to_float8(const uint4& v, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

/**
 * One warp's walk over ROWS weight rows: acc[r][m] = Σ_k W[row r, k] · x_m[k], summed over the warp
 * (every lane gets the totals). w_rows[r]: the ROWS weight rows (callers point rows past the matrix
 * at a valid row and drop their results); x[m]: activation rows for m < nx (16-byte aligned, K a
 * multiple of 8). Each lane takes slices lane, lane + 32, ... in that order whatever the unrolling:
 * the loads of UNROLL slices are issued before their products, so more bytes are in flight per
 * warp; each slice is converted to fp32 once and its products run in element order.
 *
 * preload() issues the first UNROLL slices' weight loads, which need nothing an earlier kernel
 * writes: kernels call it before pdl_wait(), so the first round trip overlaps the kernel before.
 */
template <int ROWS, int MT>
struct WeightStream {
  // About 8 weight loads of 16 bytes in flight per lane, fewer where many activation rows share them.
  static constexpr int UNROLL = 8 / (ROWS * (MT > 2 ? MT / 2 : 1)) > 0 ? 8 / (ROWS * (MT > 2 ? MT / 2 : 1)) : 1;
  uint4 first[UNROLL][ROWS];

  __device__ __forceinline__ void preload(const bf16* const (&w_rows)[ROWS], int K) {
    const int lane = threadIdx.x & 31, K8 = K / 8;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) first[u][r] = lane + 32 * u < K8 ? ld_stream(reinterpret_cast<const uint4*>(w_rows[r]) + lane + 32 * u) : make_uint4(0u, 0u, 0u, 0u);
  }

  __device__ __forceinline__ static void slice(const uint4 (&w)[ROWS], const bf16* const (&x)[MT], int nx, int k8, float (&acc)[ROWS][MT]) {
    float wf[ROWS][8];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) to_float8(w[r], wf[r]);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m < nx) {
        float xf[8];
        to_float8(__ldg(reinterpret_cast<const uint4*>(x[m]) + k8), xf);
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
      }
    }
  }

  /** The whole dot product, starting from the preloaded slices (preload() must have run with the same rows and K). */
  __device__ __forceinline__ void dot(const bf16* const (&w_rows)[ROWS], const bf16* const (&x)[MT], int nx, int K, float (&acc)[ROWS][MT]) const {
    const int lane = threadIdx.x & 31, K8 = K / 8;
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
      if (lane + 32 * u < K8) slice(first[u], x, nx, lane + 32 * u, acc);
    int k8 = lane + 32 * UNROLL;
    for (; k8 + 32 * (UNROLL - 1) < K8; k8 += 32 * UNROLL) {
      uint4 w[UNROLL][ROWS];
#pragma unroll
      for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) w[u][r] = ld_stream(reinterpret_cast<const uint4*>(w_rows[r]) + k8 + 32 * u);
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) slice(w[u], x, nx, k8 + 32 * u, acc);
    }
    for (; k8 < K8; k8 += 32) {
      uint4 w[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[r] = ld_stream(reinterpret_cast<const uint4*>(w_rows[r]) + k8);
      slice(w, x, nx, k8, acc);
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[r][m] = warp_sum(acc[r][m]);
  }
};

/** preload() then dot(), for callers with nothing to wait for in between. */
template <int ROWS, int MT>
__device__ __forceinline__ void warp_dot(const bf16* const (&w_rows)[ROWS], const bf16* const (&x)[MT], int nx, int K, float (&acc)[ROWS][MT]) {
  WeightStream<ROWS, MT> ws;
  ws.preload(w_rows, K);
  ws.dot(w_rows, x, nx, K, acc);
}

/**
 * Block-wide: whether this block is the last of `total` to arrive at *counter. Writes the block
 * made before arriving are visible to the last block (each writer fences before the barrier);
 * the last block resets the counter, so every launch leaves it at zero. flag: shared memory.
 */
__device__ __forceinline__ bool arrive_last(unsigned* counter, unsigned total, int* flag) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const bool last = atomicAdd(counter, 1u) == total - 1;
    if (last) *counter = 0;
    *flag = last;
  }
  __syncthreads();
  if (*flag) __threadfence();
  return *flag != 0;
}

#endif  // __CUDACC__

}  // namespace lm::cuda
