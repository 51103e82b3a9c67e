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
// kernels use programmatic dependent launch (launch.cuh); the route kernel issues its first weight
// loads (gate, shared expert) before waiting for its input.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/gemv.cuh"
#include "cuda/launch.cuh"
#include "cuda/moe_route.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {

constexpr int ROWS_PER_WARP = 2;  // weight rows per warp: 2 beat 1 and 4 at batch 1 and 8 on the H100 (kernels/dev/NOTES.md)
constexpr int WARPS = 4;          // per block
constexpr int THREADS = WARPS * 32;
constexpr int MAX_K = 32;
constexpr int MAX_CHOICES = MOE_DECODE_MAX_ROWS * MAX_K;

/**
 * The choices of choice c's expert, in index order, into members / *count (shared memory); returns
 * whether c is the first of them (its block does the expert's work). Called by the whole block.
 */
__device__ bool expert_group(const int32_t* ids, int M, int c, int* members, int* count, int* first) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, e = __ldcg(ids + c);
    int n = 0;
    bool is_first = true;
    for (int base = 0; base < M; base += 32) {
      const int i = base + lane;
      const bool match = i < M && __ldcg(ids + i) == e;
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

template <int ROWS, int MT>
__global__ void __launch_bounds__(THREADS) moe_decode_route_kernel(MoeDecodeParams p, int gate_blocks) {
  extern __shared__ float route_smem[];  // (WARPS, 2, E): scores and choices of each routing warp
  __shared__ int last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool gate = static_cast<int>(blockIdx.x) < gate_blocks;
  const bf16* W = gate ? p.gate : p.shared_up;
  const int N = gate ? p.E : p.S;
  const int n0 = ((gate ? blockIdx.x : blockIdx.x - gate_blocks) * WARPS + warp) * ROWS;
  const bf16* w_rows[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) w_rows[r] = W + static_cast<int64_t>(min(n0 + r, N - 1)) * p.H;
  WeightStream<ROWS, MT> ws;
  if (n0 < N) ws.preload(w_rows, p.H);
  pdl_wait();
  pdl_trigger();
  if (n0 < N) {
    const bf16* x[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) x[m] = p.x + static_cast<int64_t>(min(m, p.R - 1)) * p.H;
    float acc[ROWS][MT];
    ws.dot(w_rows, x, p.R, p.H, acc);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          if (n0 + r >= N || m >= p.R) continue;
          if (gate) p.logits[static_cast<int64_t>(m) * N + n0 + r] = acc[r][m];
          else p.shared_act[static_cast<int64_t>(m) * N + n0 + r] = __float2bfloat16(relu2(acc[r][m]));
        }
    }
  }
  if (!gate) return;
  if (!arrive_last(p.counters, gate_blocks, &last)) return;
  float* sm = route_smem + static_cast<int64_t>(warp) * 2 * p.E;
  for (int r = warp; r < p.R; r += WARPS)
    route_row_warp(p.logits + static_cast<int64_t>(r) * p.E, p.correction_bias, p.E, p.n_group, p.topk_group, p.k, p.norm_topk, p.scaling, sm, sm + p.E, p.ids + r * p.k, p.weights + r * p.k);
}

template <int ROWS, int MT>
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

template <int ROWS, int MT>
__global__ void __launch_bounds__(THREADS) moe_decode_down_kernel(MoeDecodeParams p) {
  __shared__ int members[MAX_CHOICES];
  __shared__ int count, first, last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int M = p.R * p.k, N = p.Din, n0 = (blockIdx.y * WARPS + warp) * ROWS;
  const bool shared = static_cast<int>(blockIdx.x) == M;
  pdl_wait();
  pdl_trigger();
  if ((shared || expert_group(p.ids, M, blockIdx.x, members, &count, &first)) && n0 < N) {
    // The group's rows: the shared expert's are the R token rows, a routed expert's its choices.
    const int K = shared ? p.S : p.inter, rows = shared ? p.R : count;
    const bf16* W = shared ? p.shared_down : p.down[p.ids[blockIdx.x]];
    const bf16* xs = shared ? p.shared_act : p.act;
    float* ys = shared ? p.shared_out : p.expert_out;
    const bf16* w_rows[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) w_rows[r] = W + static_cast<int64_t>(min(n0 + r, N - 1)) * K;
    for (int g0 = 0; g0 < rows; g0 += MT) {  // passes of MT rows
      const int nx = min(MT, rows - g0);
      const bf16* x[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const int g = g0 + min(m, nx - 1);
        x[m] = xs + static_cast<int64_t>(shared ? g : members[g]) * K;
      }
      float acc[ROWS][MT];
      warp_dot<ROWS, MT>(w_rows, x, nx, K, acc);
      if (lane == 0)
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
          for (int m = 0; m < MT; ++m)
            if (m < nx && n0 + r < N) ys[static_cast<int64_t>(shared ? g0 + m : members[g0 + m]) * N + n0 + r] = acc[r][m];
    }
  }
  if (!arrive_last(p.counters + 1 + blockIdx.y, gridDim.x, &last)) return;
  constexpr int SLICE = ROWS * WARPS;
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
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

// Counters: [0] the router's gate blocks, [1, 1 + slices) each column slice of the down projection
int moe_decode_counters(int Din) { return 1 + ceil_div(Din, ROWS_PER_WARP * WARPS); }

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

template <int ROWS>
void route_rows(const MoeDecodeParams& p, cudaStream_t s) {
  constexpr int SLICE = ROWS * WARPS;
  const int gate_blocks = ceil_div(p.E, SLICE), shared_blocks = p.shared_up ? ceil_div(p.S, SLICE) : 0;
  auto kernel = p.R <= 1 ? moe_decode_route_kernel<ROWS, 1> : p.R <= 2 ? moe_decode_route_kernel<ROWS, 2> : p.R <= 4 ? moe_decode_route_kernel<ROWS, 4> : moe_decode_route_kernel<ROWS, 8>;
  launch("moe_decode_route", kernel, dim3(gate_blocks + shared_blocks), dim3(THREADS), WARPS * 2 * p.E * sizeof(float), s, p, gate_blocks);
}

// Rows per expert pass at most 4: an expert's group is rarely larger, and a pass of 8 rows is ALU-bound.
template <int ROWS>
void up_rows(const MoeDecodeParams& p, cudaStream_t s) {
  auto kernel = p.R <= 1 ? moe_decode_up_kernel<ROWS, 1> : p.R <= 2 ? moe_decode_up_kernel<ROWS, 2> : moe_decode_up_kernel<ROWS, 4>;
  launch("moe_decode_up", kernel, dim3(p.R * p.k, ceil_div(p.inter, ROWS * WARPS)), dim3(THREADS), 0, s, p);
}

template <int ROWS>
void down_rows(const MoeDecodeParams& p, cudaStream_t s) {
  auto kernel = p.R <= 1 ? moe_decode_down_kernel<ROWS, 1> : p.R <= 2 ? moe_decode_down_kernel<ROWS, 2> : moe_decode_down_kernel<ROWS, 4>;
  launch("moe_decode_down", kernel, dim3(p.R * p.k + (p.shared_down ? 1 : 0), ceil_div(p.Din, ROWS * WARPS)), dim3(THREADS), 0, s, p);
}
}  // namespace

void moe_decode_route(const MoeDecodeParams& p, cudaStream_t s) {
  require(p, "moe_decode_route");
  route_rows<ROWS_PER_WARP>(p, s);
}

void moe_decode_up(const MoeDecodeParams& p, cudaStream_t s) {
  require(p, "moe_decode_up");
  up_rows<ROWS_PER_WARP>(p, s);
}

void moe_decode_down(const MoeDecodeParams& p, cudaStream_t s) {
  require(p, "moe_decode_down");
  down_rows<ROWS_PER_WARP>(p, s);
}

}  // namespace lm::cuda
