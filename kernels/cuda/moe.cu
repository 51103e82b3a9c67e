// MoE on the device: the router (moe_route.cuh, one warp per token row: sigmoid scores in fp32,
// correction bias for the choice only, group top-k by top-2 sums, top-k experts, normalise + scale;
// ties to the lower index, as cpu::moe_route),
// the device-side plan that lays the (token, k) choices out expert by expert (histogram, exclusive
// scan, tile table, scatter; one block whose size does not depend on the routing), the row gather,
// and the weighted combine back to token order (fixed j order per token: deterministic).
#include <algorithm>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/moe_route.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

constexpr int ROUTE_WARPS = 4;  // rows per block of moe_route

__global__ void __launch_bounds__(ROUTE_WARPS * 32) moe_route_kernel(const float* logits, const float* bias, int R, int E, int n_group, int topk_group, int k, bool norm_topk, float scaling, int32_t* ids,
                                                                       float* weights) {
  extern __shared__ float smem[];  // (warps, 2, E): scores and choices of each warp's row
  pdl_wait();
  pdl_trigger();
  const int warp = threadIdx.x >> 5;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * ROUTE_WARPS + warp;
  if (r >= R) return;
  float* s = smem + static_cast<int64_t>(warp) * 2 * E;
  route_row_warp(logits + r * E, bias, E, n_group, topk_group, k, norm_topk, scaling, s, s + E, ids + r * k, weights + r * k);
}

/** Inclusive scan of v over the block (blockDim.x ≤ 1024, a multiple of 32); total gets the block's sum. */
__device__ __forceinline__ int block_inclusive_scan(int v, int* warp_sums /* 32 */, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += u;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int w = lane < nwarps ? warp_sums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int u = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += u;
    }
    warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int before = warp > 0 ? warp_sums[warp - 1] : 0;
  *total = warp_sums[nwarps - 1];
  return v + before;
}

__global__ void moe_plan_kernel(const int32_t* ids, int M, int k, int E, int tile_rows, MoePlan plan) {
  extern __shared__ int sh[];
  pdl_wait();
  pdl_trigger();
  int* count = sh;     // (E)
  int* fill = sh + E;  // (E) next free position of each expert
  __shared__ int warp_sums[32];
  const int e = threadIdx.x;
  if (e < E) count[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < M; i += blockDim.x) atomicAdd(&count[ids[i]], 1);
  __syncthreads();
  const int c = e < E ? count[e] : 0, t = (c + tile_rows - 1) / tile_rows;
  int total_rows = 0, total_tiles = 0;
  const int row_end = block_inclusive_scan(c, warp_sums, &total_rows);
  __syncthreads();  // warp_sums is reused
  const int tile_end = block_inclusive_scan(t, warp_sums, &total_tiles);
  if (e < E) {
    const int start = row_end - c, first_tile = tile_end - t;
    fill[e] = start;
    plan.offsets[e] = start;
    for (int i = 0; i < t; ++i) plan.tiles[first_tile + i] = make_int4(e, start + i * tile_rows, row_end, 0);
  }
  if (threadIdx.x == 0) {
    plan.offsets[E] = total_rows;
    *plan.num_tiles = total_tiles;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < M; i += blockDim.x) {
    const int pos = atomicAdd(&fill[ids[i]], 1);
    plan.src_row[pos] = i / k;
    plan.slot_of[i] = pos;
  }
}

// Long steps (more than PLAN_ONE_BLOCK_MAX choices) plan in three launches after a memset instead of
// one block, whose shared-memory atomics serialise on 128 counters (Nano 8K prefill: 69 us a layer):
//  1. plan_rank_kernel, PLAN_PER_BLOCK choices per block: each choice's rank among its block's
//     choices of the same expert (shared atomics), then one global atomicAdd per expert and block
//     reserves the block's range; slot_of[i] = the choice's index within its expert. offsets[0..E)
//     holds the counts meanwhile (zeroed by the memset).
//  2. plan_scan_kernel (one block): counts -> starts (offsets), the tile table and num_tiles.
//  3. plan_scatter_kernel: slot_of[i] += start of its expert; src_row[slot_of[i]] = i / k.
// Positions within an expert depend on atomic order; every consumer treats an expert's rows alike.
constexpr int PLAN_ONE_BLOCK_MAX = 4096;
constexpr int PLAN_THREADS = 256, PLAN_PER_THREAD = 8, PLAN_PER_BLOCK = PLAN_THREADS * PLAN_PER_THREAD;

__global__ void __launch_bounds__(PLAN_THREADS) plan_rank_kernel(const int32_t* ids, int M, int E, int32_t* counts, int32_t* slot_of) {
  extern __shared__ int sh[];
  int* cnt = sh;       // (E) this block's choices per expert
  int* base = sh + E;  // (E) the block's first index within each expert
  pdl_wait();
  pdl_trigger();
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  const int i0 = blockIdx.x * PLAN_PER_BLOCK + threadIdx.x;
  int rank[PLAN_PER_THREAD], ex[PLAN_PER_THREAD];
#pragma unroll
  for (int j = 0; j < PLAN_PER_THREAD; ++j) {
    const int i = i0 + j * PLAN_THREADS;
    ex[j] = i < M ? ids[i] : -1;
    rank[j] = ex[j] >= 0 ? atomicAdd(&cnt[ex[j]], 1) : 0;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) base[e] = cnt[e] > 0 ? atomicAdd(&counts[e], cnt[e]) : 0;
  __syncthreads();
#pragma unroll
  for (int j = 0; j < PLAN_PER_THREAD; ++j)
    if (ex[j] >= 0) slot_of[i0 + j * PLAN_THREADS] = base[ex[j]] + rank[j];
}

__global__ void plan_scan_kernel(int E, int tile_rows, MoePlan plan) {
  __shared__ int warp_sums[32];
  pdl_wait();
  pdl_trigger();
  const int e = threadIdx.x;
  const int c = e < E ? plan.offsets[e] : 0, t = (c + tile_rows - 1) / tile_rows;
  int total_rows = 0, total_tiles = 0;
  const int row_end = block_inclusive_scan(c, warp_sums, &total_rows);
  __syncthreads();  // warp_sums is reused; every count has been read
  const int tile_end = block_inclusive_scan(t, warp_sums, &total_tiles);
  if (e < E) {
    const int start = row_end - c, first_tile = tile_end - t;
    plan.offsets[e] = start;
    for (int i = 0; i < t; ++i) plan.tiles[first_tile + i] = make_int4(e, start + i * tile_rows, row_end, 0);
  }
  if (threadIdx.x == 0) {
    plan.offsets[E] = total_rows;
    *plan.num_tiles = total_tiles;
  }
}

__global__ void plan_scatter_kernel(const int32_t* ids, int M, int k, MoePlan plan) {
  pdl_wait();
  pdl_trigger();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < M; i += gridDim.x * blockDim.x) {
    const int pos = plan.offsets[ids[i]] + plan.slot_of[i];
    plan.slot_of[i] = pos;
    plan.src_row[pos] = i / k;
  }
}

__global__ void gather_rows_kernel(const bf16* src, const int32_t* idx, int D, bf16* dst) {
  pdl_wait();
  pdl_trigger();
  const int64_t i = blockIdx.x, from = idx[i];
  for (int d = threadIdx.x; d < D; d += blockDim.x) dst[i * D + d] = src[from * D + d];
}

__global__ void moe_combine_kernel(const float* expert_out, const int32_t* slot_of, const float* weights, int k, int D, float* out, bool accumulate) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = accumulate ? out[r * D + d] : 0.f;
    for (int j = 0; j < k; ++j) acc += weights[r * k + j] * expert_out[static_cast<int64_t>(slot_of[r * k + j]) * D + d];
    out[r * D + d] = acc;
  }
}

/** moe_combine with float4 loads and stores (D % 4 == 0, 16-byte aligned buffers): the same sums in the same order. */
__global__ void moe_combine_vec_kernel(const float* __restrict__ expert_out, const int32_t* __restrict__ slot_of, const float* __restrict__ weights, int k, int D, float* __restrict__ out,
                                       bool accumulate) {
  __shared__ float wsh[16];
  __shared__ int64_t rowsh[16];
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  if (threadIdx.x < k) {
    wsh[threadIdx.x] = weights[r * k + threadIdx.x];
    rowsh[threadIdx.x] = static_cast<int64_t>(slot_of[r * k + threadIdx.x]) * D;
  }
  __syncthreads();
  for (int d = 4 * threadIdx.x; d < D; d += 4 * blockDim.x) {
    float4 acc = accumulate ? *reinterpret_cast<const float4*>(out + r * D + d) : make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j = 0; j < k; ++j) {
      const float w = wsh[j];
      const float4 x = *reinterpret_cast<const float4*>(expert_out + rowsh[j] + d);
      acc.x += w * x.x;
      acc.y += w * x.y;
      acc.z += w * x.z;
      acc.w += w * x.w;
    }
    *reinterpret_cast<float4*>(out + r * D + d) = acc;
  }
}

void moe_route(const float* logits, const float* correction_bias, int R, int E, int n_group, int topk_group, int k, bool norm_topk, float scaling, int32_t* ids, float* weights, cudaStream_t s) {
  if (R == 0) return;
  if (n_group > 64) throw Error("moe_route: n_group > 64 is not supported");
  if (E < 1 || E > 1024) throw Error("moe_route: E must be in [1, 1024], got " + std::to_string(E));
  launch("moe_route", moe_route_kernel, dim3(ceil_div(R, ROUTE_WARPS)), dim3(ROUTE_WARPS * 32), ROUTE_WARPS * 2 * E * sizeof(float), s, logits, correction_bias, R, E, n_group, topk_group, k, norm_topk,
         scaling, ids, weights);
}

void moe_plan(const int32_t* ids, int R, int k, int E, int tile_rows, const MoePlan& plan, cudaStream_t s) {
  if (E < 1 || E > 1024) throw Error("moe_plan: E must be in [1, 1024], got " + std::to_string(E));
  if (tile_rows < 1) throw Error("moe_plan: tile_rows must be positive");
  if (R == 0) return;
  const int M = R * k;
  if (M > PLAN_ONE_BLOCK_MAX) {
    LM_CUDA_CHECK(cudaMemsetAsync(plan.offsets, 0, E * sizeof(int32_t), s));
    launch("moe_plan (rank)", plan_rank_kernel, dim3(ceil_div(M, PLAN_PER_BLOCK)), dim3(PLAN_THREADS), 2 * E * sizeof(int), s, ids, M, E, plan.offsets, plan.slot_of);
    launch("moe_plan (scan)", plan_scan_kernel, dim3(1), dim3(std::max(128, ceil_div(E, 32) * 32)), 0, s, E, tile_rows, plan);
    launch("moe_plan (scatter)", plan_scatter_kernel, dim3(ceil_div(M, 256)), dim3(256), 0, s, ids, M, k, plan);
    return;
  }
  // Enough threads for every expert in the scan, more for long steps (the scatter's loop).
  const int threads = std::max({128, ceil_div(E, 32) * 32, std::min(1024, ceil_div(int64_t(R) * k, 32) * 32)});
  launch("moe_plan", moe_plan_kernel, dim3(1), dim3(threads), 2 * E * sizeof(int), s, ids, R * k, k, E, tile_rows, plan);
}

void gather_rows(const bf16* src, const int32_t* idx, int M, int D, bf16* dst, cudaStream_t s) {
  if (M == 0) return;
  launch("gather_rows", gather_rows_kernel, dim3(M), dim3(256), 0, s, src, idx, D, dst);
}

void moe_combine(const float* expert_out, const int32_t* slot_of, const float* weights, int R, int k, int D, float* out, bool accumulate, cudaStream_t s) {
  if (R == 0) return;
  const bool vec = D % 4 == 0 && k <= 16 && (reinterpret_cast<uintptr_t>(expert_out) | reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  if (vec) {
    launch("moe_combine_vec", moe_combine_vec_kernel, dim3(R), dim3(std::min(256, ceil_div(D / 4, 32) * 32)), 0, s, expert_out, slot_of, weights, k, D, out, accumulate);
    return;
  }
  launch("moe_combine", moe_combine_kernel, dim3(R), dim3(256), 0, s, expert_out, slot_of, weights, k, D, out, accumulate);
}

}  // namespace lm::cuda
