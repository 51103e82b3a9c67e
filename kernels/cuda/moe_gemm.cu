// Grouped expert GEMM: one launch computes every routed expert's projection of its rows,
//   out[p, n] = Σ_k A[row(p), k] · W_e[n, k]      for every expert-major position p of expert e,
// with row(p) = a_rows[p] (the up projection gathers token rows through the plan) or p itself (the
// down projection reads the expert-major activations), W_e (N, K) bf16 row-major as in checkpoints,
// bf16 operands and fp32 accumulation on the tensor cores. The up projection's epilogue applies
// relu(x)² and writes bf16; the down projection writes fp32 rows that moe_combine sums per token in
// a fixed order.
//
// Row tiles come from moe_plan's tile table, read on the device. Three paths:
// - 64-row plan tiles with 16-byte rows (steps of at least 32 slots over at least 32 experts, and
//   steps of 32 slots per expert; moe_tile_rows): Hopper wgmma, a producer warpgroup feeding two MMA
//   warpgroups, items of up to 128 rows × up to 256 columns on a persistent grid (moe_gemm_wgmma.cu);
//   at decode sizes (a few rows per expert) it is a weight stream, its MMAs mostly on zero rows;
// - 16-row plan tiles (the other steps: fewer than 32 slots or experts): BM 16 × BN 64 on 16×16×16
//   wmma, 4 warps, many small blocks in flight;
// - 64-row tiles whose K or lda is not a multiple of 8: BM 64 × BN 128 wmma with plain loads.
// The wmma kernels take one block per row tile and column tile (the grid sized for the worst case
// ceil(M/BM) + min(E, M) row tiles, blocks past the plan's count exit) and walk K in BK steps
// through a STAGES-deep ring of shared-memory tiles (16-byte cp.async zero-filled past the matrix
// edges, or plain loads). Each output element's sum runs over k in the same order wherever its row
// sits in a tile, so results do not depend on the order of rows within an expert.
#include <mma.h>

#include <algorithm>
#include <cstdlib>

#include "cuda/common.cuh"
#include "cuda/moe_gemm_wgmma.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {

namespace wmma = nvcuda::wmma;

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct TileShape {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int WARPS_N = BN / WN, WARPS = (BM / WM) * WARPS_N, THREADS = WARPS * 32;
  static constexpr int LDS = BK + 8;  // bf16 per shared row: 16-byte padding keeps ldmatrix rows on distinct banks
  static constexpr int LDC = BN + 4;  // floats per row of the epilogue's staging tile
  static constexpr size_t SMEM = sizeof(bf16) * STAGES * (BM + BN) * LDS;
  static_assert(BM * LDC * sizeof(float) <= SMEM, "epilogue tile must fit in the pipeline's shared memory");
  static_assert(BK % 16 == 0 && WM % 16 == 0 && WN % 16 == 0, "wmma tiles are 16×16×16");
};
using SmallTiles = TileShape<16, 64, 64, 16, 16, 5>;
using LargeTiles = TileShape<64, 128, 32, 32, 32, 4>;

/** Copies rows [0, ROWS) × [k0, k0 + BK) of a row-major bf16 matrix into a shared tile; src_row < 0 is a zero row. */
template <class S, int ROWS, bool VEC, class RowFn>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* base, int64_t ld, int K, int k0, RowFn src_row) {
  constexpr int CHUNKS = S::BK / 8;
  for (int c = threadIdx.x; c < ROWS * CHUNKS; c += S::THREADS) {
    const int r = c / CHUNKS, kc = (c % CHUNKS) * 8, gk = k0 + kc;
    const int64_t sr = src_row(r);
    bf16* d = dst + r * S::LDS + kc;
    if constexpr (VEC) {
      const bool ok = sr >= 0 && gk < K;
      cp_async16(d, ok ? base + sr * ld + gk : base, ok);
    } else {
#pragma unroll
      for (int q = 0; q < 8; ++q) d[q] = (sr >= 0 && gk + q < K) ? base[sr * ld + gk + q] : __float2bfloat16(0.f);
    }
  }
}

template <class S, bool VEC, bool RELU2>
__global__ void __launch_bounds__(S::THREADS) grouped_gemm_kernel(GroupedGemmParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sA = reinterpret_cast<bf16*>(smem);     // (STAGES, BM, LDS)
  bf16* sB = sA + S::STAGES * S::BM * S::LDS;   // (STAGES, BN, LDS)
  __shared__ int a_row[S::BM];                  // source row of each tile row, -1 past the expert's rows

  if (static_cast<int>(blockIdx.x) >= *p.num_tiles) return;
  const int4 tile = p.tiles[blockIdx.x];  // {expert, first position, end of the expert's positions}
  const int p0 = tile.y, pend = tile.z, n0 = blockIdx.y * S::BN;
  const bf16* W = p.w[tile.x];
  for (int i = threadIdx.x; i < S::BM; i += S::THREADS) {
    const int pos = p0 + i;
    a_row[i] = pos < pend ? (p.a_rows ? p.a_rows[pos] : pos) : -1;
  }
  __syncthreads();

  const int ktiles = (p.K + S::BK - 1) / S::BK;
  auto load_stage = [&](int stage, int kt) {
    const int k0 = kt * S::BK;
    load_tile<S, S::BM, VEC>(sA + stage * S::BM * S::LDS, p.a, p.lda, p.K, k0, [&](int r) { return int64_t(a_row[r]); });
    load_tile<S, S::BN, VEC>(sB + stage * S::BN * S::LDS, W, p.K, p.K, k0, [&](int r) { return n0 + r < p.N ? int64_t(n0 + r) : int64_t(-1); });
  };

  constexpr int FM = S::WM / 16, FN = S::WN / 16;
  const int warp = threadIdx.x >> 5, wm = (warp / S::WARPS_N) * S::WM, wn = (warp % S::WARPS_N) * S::WN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);

#pragma unroll
  for (int s = 0; s < S::STAGES - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<S::STAGES - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt-1 is free to refill
    const int next = kt + S::STAGES - 1;
    if (next < ktiles) load_stage(next % S::STAGES, next);
    cp_async_commit();
    const bf16* a = sA + (kt % S::STAGES) * S::BM * S::LDS;
    const bf16* b = sB + (kt % S::STAGES) * S::BN * S::LDS;
#pragma unroll
    for (int kk = 0; kk < S::BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(fa[i], a + (wm + i * 16) * S::LDS + kk, S::LDS);
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(fb[j], b + (wn + j * 16) * S::LDS + kk, S::LDS);
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  float* sC = reinterpret_cast<float*>(smem);  // (BM, LDC), reusing the pipeline's tiles
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::store_matrix_sync(sC + (wm + i * 16) * S::LDC + wn + j * 16, acc[i][j], S::LDC, wmma::mem_row_major);
  __syncthreads();
  const int rows = min(S::BM, pend - p0);
  for (int idx = threadIdx.x; idx < rows * S::BN; idx += S::THREADS) {
    const int r = idx / S::BN, c = idx % S::BN, n = n0 + c;
    if (n >= p.N) continue;
    const float v = sC[r * S::LDC + c];
    const int64_t o = int64_t(p0 + r) * p.N + n;
    if constexpr (RELU2) p.out_relu2[o] = __float2bfloat16(relu2(v));
    else p.out[o] = v;
  }
}

template <class S, bool VEC, bool RELU2>
void launch(const GroupedGemmParams& p, cudaStream_t s) {
  auto kernel = grouped_gemm_kernel<S, VEC, RELU2>;
  static bool configured = false;  // the shared-memory opt-in is per kernel, once per process
  if (!configured) {
    LM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(S::SMEM)));
    configured = true;
  }
  const dim3 grid(p.max_tiles, ceil_div(p.N, S::BN));
  kernel<<<grid, S::THREADS, S::SMEM, s>>>(p);
  LM_LAUNCH_CHECK("grouped_gemm");
}

template <class S, bool VEC>
void dispatch(const GroupedGemmParams& p, cudaStream_t s) {
  if (p.out_relu2 != nullptr) launch<S, VEC, true>(p, s);
  else launch<S, VEC, false>(p, s);
}

}  // namespace

int moe_tile_rows(int M, int E) {
  // 64-row tiles (wgmma when the rows allow) once experts hold 32 slots each on average, or once at
  // least WGMMA_MIN_EXPERTS experts can hold rows: the wgmma path then streams the expert weights at
  // 0.94-0.99 of copy (weight bytes read against the copy ceiling's read + write) from 0.4 rows per
  // expert up, where the 16-row wmma kernel reaches 0.61-0.90 (H100, Nano's 128 experts, 8-512
  // token rows; Nano decode ms/step b8 10.7 -> 9.8, b32 21.4 -> 19.6, b64 26.9 -> 25.0, b256 39.8 ->
  // 36.1). With fewer experts holding rows its persistent grid (experts × column tiles items) would
  // leave SMs idle, so those steps keep the 16-row tiles (32 is a guess: the smallest step timed, 48
  // slots, held 40 experts, and wgmma won there by 16 %).
  // Dev switch for A/B timing: LM_CUDA_MOE_WGMMA_EXPERTS=<n> replaces WGMMA_MIN_EXPERTS (a large n
  // gives the old choice: 16-row tiles below 32 slots per expert).
  constexpr int WGMMA_MIN_EXPERTS = 32;
  static const int min_experts = [] {
    const char* v = std::getenv("LM_CUDA_MOE_WGMMA_EXPERTS");
    return v != nullptr && *v != '\0' ? std::max(1, std::atoi(v)) : WGMMA_MIN_EXPERTS;
  }();
  return int64_t(M) >= int64_t(32) * E || std::min(M, E) >= min_experts ? LargeTiles::BM : SmallTiles::BM;
}

int moe_plan_max_tiles(int M, int E, int tile_rows) { return ceil_div(M, tile_rows) + std::min(E, M); }

void grouped_gemm(const GroupedGemmParams& p, cudaStream_t s) {
  if (p.max_tiles == 0 || p.N == 0) return;
  if (p.K <= 0) throw Error("grouped_gemm: K must be positive");
  if ((p.out_relu2 == nullptr) == (p.out == nullptr)) throw Error("grouped_gemm: exactly one of out_relu2 and out must be set");
  if (!p.a || !p.w || !p.tiles || !p.num_tiles) throw Error("grouped_gemm: a, w, tiles and num_tiles must be set");
  static_assert(LargeTiles::BM == moe_wgmma::TILE_ROWS, "both 64-row paths take the same plan tiles");
  // 16-byte copies need 16-byte rows and bases; every expert matrix is its own cudaMalloc (256-byte aligned).
  const bool vec = p.K % 8 == 0 && p.lda % 8 == 0 && reinterpret_cast<uintptr_t>(p.a) % 16 == 0;
  if (p.tile_rows == SmallTiles::BM) {
    if (vec) dispatch<SmallTiles, true>(p, s);
    else dispatch<SmallTiles, false>(p, s);
  } else if (p.tile_rows == LargeTiles::BM) {
    if (moe_wgmma::supported(p)) moe_wgmma::grouped_gemm_wgmma(p, s);
    else dispatch<LargeTiles, false>(p, s);
  } else {
    throw Error("grouped_gemm: tile_rows must come from moe_tile_rows (16 or 64), got " + std::to_string(p.tile_rows));
  }
}

}  // namespace lm::cuda
