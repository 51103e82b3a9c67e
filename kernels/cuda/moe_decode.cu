// The MoE layer for steps of at most MOE_DECODE_MAX_ROWS token rows (decode, MTP verify), in three
// launches and without moe_plan or a separate combine (the grouped-GEMM path takes 6–7 launches and
// sizes its grid for the worst case of 16-row tiles, which one decode row leaves mostly empty):
//
//   route  router logits (R, E) = x · gateᵀ; the last gate block to finish (an atomic counter)
//          routes every row, one warp per row (moe_route.cuh). Its other blocks compute the
//          shared expert's up projection, relu(x · shared_upᵀ)² in bf16 (R, S).
//   up     one block column per choice c = (r, j) and slice of inter rows; the block of the first
//          choice of each distinct expert computes relu(v[r'] · W_upᵀ)² for every choice c' of
//          that expert (the rows that chose it, ≤ R), so each expert's weights stream once;
//          blocks of repeated choices exit.
//   down   likewise the down projection of each distinct expert into expert_out (R·k, Din) fp32,
//          plus one block column for the shared expert's down projection (R, Din); the last
//          block to finish a slice of 8 output columns (a counter per slice) sums, per token in
//          the fixed order h + Σ_j w_j · expert_j + shared, into out.
//
// Every dot product is gemv.cuh's warp_dot (16-byte weight loads, fp32 in a fixed order), so an
// output does not depend on which rows share an expert, a launch or a batch. The counters are
// device memory the engine zeroes once; each launch's last blocks put them back to zero. All three
// kernels use programmatic dependent launch (launch.cuh); the route and down kernels ask L2 for
// their fixed weights (gate, shared expert) before waiting for their inputs.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/gemv.cuh"
#include "cuda/launch.cuh"
#include "cuda/moe_route.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {

constexpr int ROWS = 2;   // output features per warp
constexpr int WARPS = 4;  // per block
constexpr int THREADS = WARPS * 32;
constexpr int SLICE = ROWS * WARPS;  // output features per block
constexpr int MAX_K = 32;
constexpr int MAX_CHOICES = MOE_DECODE_MAX_ROWS * MAX_K;

/**
 * The choices of choice c's expert, in index order, into members / *count (shared memory); returns
 * whether c is the first of them (its block does the expert's work). Called by the whole block.
 */
__device__ bool expert_group(const int32_t* ids, int M, int c, int* members, int* count, int* first) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, e = ids[c];
    int n = 0;
    bool is_first = true;
    for (int base = 0; base < M; base += 32) {
      const int i = base + lane;
      const bool match = i < M && ids[i] == e;
      const unsigned m = __ballot_sync(0xffffffffu, match);
      const unsigned before = c >= base + 32 ? m : c > base ? m & ((1u << (c - base)) - 1u) : 0u;
      if (before) is_first = false;
      if (match) members[n + __popc(m & ((1u << lane) - 1u))] = i;
      n += __popc(m);
    }
    if (lane == 0) {
      *count = n;
      *first = is_first;
    }
  }
  __syncthreads();
  return *first != 0;
}

/** Block-wide: whether this block is the last of `total` to arrive at *counter (which it then owns). */
__device__ bool arrive_last(unsigned* counter, unsigned total, int* flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    *flag = atomicAdd(counter, 1u) == total - 1;
  }
  __syncthreads();
  if (*flag) __threadfence();
  return *flag != 0;
}

template <int MT>
__global__ void __launch_bounds__(THREADS) moe_decode_route_kernel(MoeDecodeParams p, int gate_blocks) {
  extern __shared__ float route_smem[];  // (WARPS, 2, E): scores and choices of each routing warp
  __shared__ int last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool gate = static_cast<int>(blockIdx.x) < gate_blocks;
  const bf16* W = gate ? p.gate : p.shared_up;
  const int N = gate ? p.E : p.S;
  const int n0 = ((gate ? blockIdx.x : blockIdx.x - gate_blocks) * WARPS + warp) * ROWS;
  prefetch_rows<ROWS>(W, n0, N, p.H);
  pdl_wait();
  pdl_trigger();
  if (n0 < N) {
    const bf16* w_rows[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) w_rows[r] = W + static_cast<int64_t>(min(n0 + r, N - 1)) * p.H;
    const bf16* x[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) x[m] = p.x + static_cast<int64_t>(min(m, p.R - 1)) * p.H;
    float acc[ROWS][MT];
    warp_dot<ROWS, MT>(w_rows, x, p.R, p.H, acc);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          if (n0 + r >= N || m >= p.R) continue;
          if (gate) p.logits[static_cast<int64_t>(m) * N + n0 + r] = acc[r][m];
          else p.shared_act[static_cast<int64_t>(m) * N + n0 + r] = __float2bfloat16(relu2(acc[r][m]));
        }
      __threadfence();
    }
  }
  if (!gate) return;
  if (!arrive_last(p.counters, gate_blocks, &last)) return;
  float* sm = route_smem + static_cast<int64_t>(warp) * 2 * p.E;
  for (int r = warp; r < p.R; r += WARPS)
    route_row_warp(p.logits + static_cast<int64_t>(r) * p.E, p.correction_bias, p.E, p.n_group, p.topk_group, p.k, p.norm_topk, p.scaling, sm, sm + p.E, p.ids + r * p.k, p.weights + r * p.k);
  if (threadIdx.x == 0) p.counters[0] = 0;
}

template <int MT>
__global__ void __launch_bounds__(THREADS) moe_decode_up_kernel(MoeDecodeParams p) {
  __shared__ int members[MAX_CHOICES];
  __shared__ int count, first;
  pdl_wait();
  pdl_trigger();
  const int c = blockIdx.x;
  if (!expert_group(p.ids, p.R * p.k, c, members, &count, &first)) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int N = p.inter, K = p.Din, n0 = (blockIdx.y * WARPS + warp) * ROWS;
  if (n0 >= N) return;
  const bf16* W = p.up[p.ids[c]];
  const bf16* w_rows[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) w_rows[r] = W + static_cast<int64_t>(min(n0 + r, N - 1)) * K;
  for (int g0 = 0; g0 < count; g0 += MT) {
    const int nx = min(MT, count - g0);
    const bf16* x[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) x[m] = p.v + static_cast<int64_t>(members[g0 + min(m, nx - 1)] / p.k) * K;
    float acc[ROWS][MT];
    warp_dot<ROWS, MT>(w_rows, x, nx, K, acc);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m)
          if (n0 + r < N && m < nx) p.act[static_cast<int64_t>(members[g0 + m]) * N + n0 + r] = __float2bfloat16(relu2(acc[r][m]));
    }
  }
}

template <int MT>
__global__ void __launch_bounds__(THREADS) moe_decode_down_kernel(MoeDecodeParams p) {
  __shared__ int members[MAX_CHOICES];
  __shared__ int count, first, last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int M = p.R * p.k, N = p.Din, n0 = (blockIdx.y * WARPS + warp) * ROWS;
  const bool shared = static_cast<int>(blockIdx.x) == M;
  if (shared) prefetch_rows<ROWS>(p.shared_down, n0, N, p.S);
  pdl_wait();
  pdl_trigger();
  if (shared) {
    if (n0 < N) {
      const bf16* w_rows[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w_rows[r] = p.shared_down + static_cast<int64_t>(min(n0 + r, N - 1)) * p.S;
      const bf16* x[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) x[m] = p.shared_act + static_cast<int64_t>(min(m, p.R - 1)) * p.S;
      float acc[ROWS][MT];
      warp_dot<ROWS, MT>(w_rows, x, p.R, p.S, acc);
      if (lane == 0) {
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
          for (int m = 0; m < MT; ++m)
            if (n0 + r < N && m < p.R) p.shared_out[static_cast<int64_t>(m) * N + n0 + r] = acc[r][m];
        __threadfence();
      }
    }
  } else if (expert_group(p.ids, M, blockIdx.x, members, &count, &first) && n0 < N) {
    const int K = p.inter;
    const bf16* W = p.down[p.ids[blockIdx.x]];
    const bf16* w_rows[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) w_rows[r] = W + static_cast<int64_t>(min(n0 + r, N - 1)) * K;
    for (int g0 = 0; g0 < count; g0 += MT) {
      const int nx = min(MT, count - g0);
      const bf16* x[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) x[m] = p.act + static_cast<int64_t>(members[g0 + min(m, nx - 1)]) * K;
      float acc[ROWS][MT];
      warp_dot<ROWS, MT>(w_rows, x, nx, K, acc);
      if (lane == 0) {
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
          for (int m = 0; m < MT; ++m)
            if (n0 + r < N && m < nx) p.expert_out[static_cast<int64_t>(members[g0 + m]) * N + n0 + r] = acc[r][m];
      }
    }
    if (lane == 0) __threadfence();
  }
  if (!arrive_last(p.counters + 1 + blockIdx.y, gridDim.x, &last)) return;
  // This block owns output columns [c0, c0 + SLICE): every expert's and the shared expert's values are in.
  const int c0 = blockIdx.y * SLICE;
  for (int i = threadIdx.x; i < p.R * SLICE; i += THREADS) {
    const int r = i / SLICE, n = c0 + i % SLICE;
    if (n >= N) continue;
    const int64_t at = static_cast<int64_t>(r) * N + n;
    float acc = p.accumulate ? p.out[at] : 0.f;
    for (int j = 0; j < p.k; ++j) acc += p.weights[r * p.k + j] * __ldcg(p.expert_out + static_cast<int64_t>(r * p.k + j) * N + n);
    if (p.shared_down) acc += __ldcg(p.shared_out + at);
    p.out[at] = acc;
  }
  if (threadIdx.x == 0) p.counters[1 + blockIdx.y] = 0;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

int moe_decode_counters(int Din) { return 1 + ceil_div(Din, SLICE); }

bool moe_decode_supported(const MoeDecodeParams& p) {
  const bool shared_ok = !p.shared_up || (p.shared_down && p.S > 0 && p.S % 8 == 0 && p.Din == p.H);
  const bool groups_ok = p.n_group <= 1 || (p.n_group <= 64 && p.E % p.n_group == 0 && p.topk_group >= 1 && p.topk_group <= p.n_group);
  return p.R >= 1 && p.R <= MOE_DECODE_MAX_ROWS && p.E >= 1 && p.E <= 1024 && p.k >= 1 && p.k <= MAX_K && p.k <= p.E && groups_ok && shared_ok && p.H % 8 == 0 && p.Din % 8 == 0 &&
         p.inter % 8 == 0 && p.inter > 0 && aligned16(p.x) && aligned16(p.v) && aligned16(p.act) && (!p.shared_up || aligned16(p.shared_act));
}

namespace {
void require(const MoeDecodeParams& p, const char* what) {
  if (!moe_decode_supported(p)) throw Error(std::string(what) + ": shape not supported (see moe_decode_supported)");
}
/** The kernel instance for R rows: MT = R rounded up to a power of two. */
template <class Kernel>
Kernel by_rows(int R, Kernel k1, Kernel k2, Kernel k4, Kernel k8) {
  return R <= 1 ? k1 : R <= 2 ? k2 : R <= 4 ? k4 : k8;
}
}  // namespace

void moe_decode_route(const MoeDecodeParams& p, cudaStream_t s) {
  require(p, "moe_decode_route");
  const int gate_blocks = ceil_div(p.E, SLICE), shared_blocks = p.shared_up ? ceil_div(p.S, SLICE) : 0;
  auto kernel = by_rows(p.R, moe_decode_route_kernel<1>, moe_decode_route_kernel<2>, moe_decode_route_kernel<4>, moe_decode_route_kernel<8>);
  launch("moe_decode_route", kernel, dim3(gate_blocks + shared_blocks), dim3(THREADS), WARPS * 2 * p.E * sizeof(float), s, p, gate_blocks);
}

void moe_decode_up(const MoeDecodeParams& p, cudaStream_t s) {
  require(p, "moe_decode_up");
  auto kernel = by_rows(p.R, moe_decode_up_kernel<1>, moe_decode_up_kernel<2>, moe_decode_up_kernel<4>, moe_decode_up_kernel<8>);
  launch("moe_decode_up", kernel, dim3(p.R * p.k, ceil_div(p.inter, SLICE)), dim3(THREADS), 0, s, p);
}

void moe_decode_down(const MoeDecodeParams& p, cudaStream_t s) {
  require(p, "moe_decode_down");
  auto kernel = by_rows(p.R, moe_decode_down_kernel<1>, moe_decode_down_kernel<2>, moe_decode_down_kernel<4>, moe_decode_down_kernel<8>);
  launch("moe_decode_down", kernel, dim3(p.R * p.k + (p.shared_down ? 1 : 0), ceil_div(p.Din, SLICE)), dim3(THREADS), 0, s, p);
}

}  // namespace lm::cuda
