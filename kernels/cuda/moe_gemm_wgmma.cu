// Grouped expert GEMM on Hopper warpgroup MMAs (wgmma, sm_90a): the path grouped_gemm takes for
// 64-row plan tiles, prefill and decode steps of at least 32 experts' rows (moe_gemm.cu holds the
// formulas and dispatches),
//   out[p, n] = Σ_k A[row(p), k] · W_e[n, k],  then relu(·)² → bf16, or fp32.
//
// Work: items are (super tile, column tile) pairs. A super tile is up to two consecutive plan tiles
// of one expert (BM = 128 rows): plan tiles pair from the end of each expert, so a tile with an even
// number of its expert's tiles left (itself included) leads a pair with the next one, a first tile
// with an odd number left stands alone, and every other tile is skipped. An expert of at most 128
// rows is one item per column tile, and its weights are streamed once. Column tiles are BN wide, BN
// chosen per N (128 to 256) to waste the fewest columns. The grid is persistent, one block per SM:
// each block first reads the plan's tile table into a per-expert index (first plan tile, super
// tiles before it: a block-wide scan), then walks the dense items blockIdx.x, + gridDim.x, ... in
// (super tile, column tile) order, so every block gets the same share of real work and blocks
// running together share their A rows and their expert's weights in L2.
//
// Warp roles (3 warpgroups): warpgroup 0 produces, warpgroups 1 and 2 each multiply 64 rows of the
// super tile (warpgroup 2 idles through items of at most 64 rows). The producer copies BK = 64 wide
// K slices of the gathered A rows and of the weight tile into a STAGES-deep shared-memory ring with
// 16-byte cp.async, zero-filled past the matrix edges, each thread's copies completing on the
// stage's full barrier (cp.async.mbarrier.arrive.noinc, 128 arrivals). Where the experts' weights
// are one (E, N, K) array (GroupedGemmParams::w_base), the weight tile comes instead by one 3-D tensor
// copy (TMA, same swizzle, zeros past N and K) issued by producer thread 0, whose expect_tx is the
// barrier's 129th arrival: 12–14 % faster at 65,536 slots than the per-thread copies, the same
// bytes, bitwise the same result (kernels/dev/NOTES.md, run 32). It runs ahead across items,
// so the next item's first stages load during the current item's epilogue. A consumer warpgroup
// waits on the full barrier, issues BK/16 wgmma m64nBNk16 from shared-memory descriptors, keeps one
// k-step in flight and releases the previous stage on its empty barrier (8 arrivals: every consumer
// warp, busy or idle). Tiles sit in the 128-byte swizzled K-major layout (moe_gemm_sm90.cuh); eight
// consecutive producer threads copy one 128-byte row, so each warp reads four whole lines and writes
// four whole shared-memory rows. Accumulators (fp32) go from registers straight to global memory.
//
// Each output's sum runs k-step by k-step in the same order wherever its row sits in a tile, so
// results do not depend on the order of rows within an expert.
//
// The last round: with items = whole rounds · G + tail (G blocks, 0 < tail), tail blocks would work
// while G − tail idle. Given a workspace (split_ws), the tail items are split along K instead: block
// q < tail · S takes k-steps [part · ktiles / S, (part + 1) · ktiles / S) of tail item q / S (part =
// q % S, S = min(G / tail, 8, ktiles / 4)), writes its fp32 sums to the workspace, and once all S parts
// of the item are in (an arrival counter), sums rows [part · BM / S, …) of the S parts in part order
// and runs the epilogue on them. Results stay deterministic; a tail item's rows sum in S partial sums.
// The blocks of one item wait for each other: a launch with a workspace is cooperative (all blocks
// resident at once, or an error — never a hang behind other work on the GPU), at most one block per
// SM. The counters are reset by the last part out, so a workspace serves one launch at a time (one
// stream), and this kernel is not launched under PDL (the next launch must not start early).
#include <algorithm>
#include <cstdlib>

#include <cuda.h>  // CUtensorMap (the encoder is reached through the runtime: no libcuda link)

#include <string>

#include "cuda/common.cuh"
#include "cuda/moe_gemm_sm90.cuh"
#include "cuda/moe_gemm_wgmma.cuh"

namespace lm::cuda::moe_wgmma {

namespace {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LM_MOE_WGMMA 1
#endif

constexpr int BM = 2 * TILE_ROWS;  // rows of a super tile: 64 per consumer warpgroup
constexpr int BK = 64;             // K per stage: one 128-byte swizzled row
constexpr int THREADS = 384;       // producer warpgroup + 2 consumer warpgroups
constexpr int MAX_EXPERTS = 1024;  // moe_plan's limit on E
constexpr int MAX_SPLIT = 8;       // parts of a split tail item
constexpr int MIN_PART_KSTEPS = 4; // k-steps of a part at least
constexpr int MAX_BN = 256;        // the workspace's per-part stride is BM · MAX_BN floats
constexpr int SMEM_LIMIT = 227 * 1024 - (2 * MAX_EXPERTS + 64) * 4;  // less the expert index

template <int BN_>
struct Shape {
  static constexpr int BN = BN_;
  static constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int STAGES = std::min(6, (SMEM_LIMIT - 2048) / STAGE_BYTES);
  static constexpr int SMEM = STAGES * STAGE_BYTES + 1024;  // + slack to align the ring on 1024 bytes
  static_assert(BN % 8 == 0 && BN <= 256 && B_BYTES % 1024 == 0, "wgmma N: a multiple of 8 up to 256; whole 8-row swizzle groups");
  static_assert(STAGES >= 3, "the ring needs 3 stages to overlap loads with MMAs");
  static_assert(STAGES * STAGE_BYTES >= (BM + MAX_SPLIT) * MAX_BN * 4, "a split part's rows of every part fit in the ring");
};

/** The experts that hold rows, in plan order: first plan tile and super tiles before each; see build_index. */
struct ExpertIndex {
  int first_tile[MAX_EXPERTS];
  int super0[MAX_EXPERTS + 1];  // super0[count] = all super tiles
  int count;
  int warp_sums[2][THREADS / 32];
};

/** Exclusive block-wide prefix sums of (a, b); totals of the whole block in ta, tb. */
__device__ __forceinline__ void block_scan2(int& a, int& b, int& ta, int& tb, int (&sums)[2][THREADS / 32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int ia = a, ib = b;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int ua = __shfl_up_sync(0xffffffffu, ia, o), ub = __shfl_up_sync(0xffffffffu, ib, o);
    if (lane >= o) ia += ua, ib += ub;
  }
  if (lane == 31) sums[0][warp] = ia, sums[1][warp] = ib;
  __syncthreads();
  int ba = 0, bb = 0;
  ta = tb = 0;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) {
    if (w < warp) ba += sums[0][w], bb += sums[1][w];
    ta += sums[0][w], tb += sums[1][w];
  }
  a = ba + ia - a, b = bb + ib - b;
  __syncthreads();  // sums are reused by the next call
}

/** Super tiles of an expert with n plan tiles: pairs from the end, a first tile alone when n is odd. */
__device__ __forceinline__ int super_tiles(int n) { return (n + 1) / 2; }

/**
 * Builds the expert index from the plan's tile table (every thread of the block takes part): an
 * expert's first plan tile is the one whose predecessor belongs to another expert, and its tile
 * count follows from its rows, {expert, first position, end} of that tile.
 */
__device__ void build_index(const GroupedGemmParams& p, int num_tiles, ExpertIndex& x) {
  int experts = 0, supers = 0;
  for (int t0 = 0; t0 < num_tiles; t0 += THREADS) {
    const int t = t0 + threadIdx.x;
    int first = 0, sup = 0;
    if (t < num_tiles) {
      const int4 tile = p.tiles[t];
      if (t == 0 || p.tiles[t - 1].x != tile.x) first = 1, sup = super_tiles((tile.z - tile.y + TILE_ROWS - 1) / TILE_ROWS);
    }
    int rank = first, before = sup, n_first, n_sup;
    block_scan2(rank, before, n_first, n_sup, x.warp_sums);
    if (first && experts + rank < MAX_EXPERTS) {
      x.first_tile[experts + rank] = t;
      x.super0[experts + rank] = supers + before;
    }
    experts += n_first, supers += n_sup;
  }
  if (threadIdx.x == 0) {
    x.count = min(experts, MAX_EXPERTS);
    x.super0[x.count] = supers;
  }
  __syncthreads();
}

/** One item: rows [p0, p0 + rows) of expert e, columns [n0, n0 + BN). */
struct Item {
  int expert, p0, rows, n0;
};

/** Item i (< super tiles × col_tiles) of the index. */
template <int BN>
__device__ __forceinline__ Item item_at(const GroupedGemmParams& p, const ExpertIndex& x, int col_tiles, int i) {
  const int st = i / col_tiles;
  int lo = 0, hi = x.count - 1;  // the last expert e with super0[e] <= st
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (x.super0[mid] <= st) lo = mid;
    else hi = mid - 1;
  }
  const int4 tile = p.tiles[x.first_tile[lo]];  // {expert, first position = the expert's first row, end}
  const int n = (tile.z - tile.y + TILE_ROWS - 1) / TILE_ROWS, j = st - x.super0[lo];
  const int local = n % 2 == 1 ? (j == 0 ? 0 : 2 * j - 1) : 2 * j;  // its first plan tile within the expert
  const int p0 = tile.y + local * TILE_ROWS;
  return {tile.x, p0, min((n - local) % 2 == 0 ? BM : TILE_ROWS, tile.z - p0), (i % col_tiles) * BN};
}

/** A block's unit of work: k-steps [k0, k1) of item `item`; q ≥ 0 for part q % split of a split tail item. */
struct Unit {
  int item, k0, k1, q;
};

/** The persistent schedule: whole items blockIdx.x, + G, … below `whole`, then the split tail (see the top). */
struct Schedule {
  int whole, split, ktiles, tail;
  __device__ Schedule(int items, int G, int ktiles_, int max_split) : whole(items), split(1), ktiles(ktiles_), tail(0) {
    const int t = items % G;
    if (max_split >= 2 && t > 0) {
      const int s = min(min(G / t, max_split), ktiles / MIN_PART_KSTEPS);
      if (s >= 2) split = s, whole = items - t, tail = t;
    }
  }
  /** Round r of block b: false once the block has no more work. */
  __device__ bool at(int b, int G, int r, Unit& u) const {
    const int i = b + r * G;
    if (i < whole) {
      u = {i, 0, ktiles, -1};
      return true;
    }
    if (split < 2 || r != whole / G || b >= tail * split) return false;
    const int part = b % split;
    u = {whole + b / split, part * ktiles / split, (part + 1) * ktiles / split, b};
    return true;
  }
};

/** The one arrival of the TMA thread on a stage's full barrier, announcing the bytes its tensor copy completes. */
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/** Tensor copy of the weight box at (k, n, expert) into shared memory (128-byte swizzle), completing on bar. */
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int k, int n, int e, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(k),
               "r"(n), "r"(e), "r"(bar)
               : "memory");
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

template <bool RELU2>
__device__ __forceinline__ void store_out(const GroupedGemmParams& p, int64_t o, float v) {
  if constexpr (RELU2) p.out_relu2[o] = __float2bfloat16(relu2(v));
  else p.out[o] = v;
}

/** The wait for a split item's parts and the sums of this part's rows (see finish_part). */
template <class S, bool RELU2>
__device__ __forceinline__ void reduce_parts(const GroupedGemmParams& p, const Schedule& sched, const Unit& u, const Item& item, float* ring) {
  constexpr int BN = S::BN, STRIDE = BM * MAX_BN;
  const int t = threadIdx.x - 128, part = u.q % sched.split;
  bar_sync(1, 256);  // the block's sums are written (CTA scope) …
  unsigned* arrive = p.split_counters + 2 * (u.item - sched.whole);
  if (t == 0) {
    __threadfence();  // … and, cumulatively, visible at GPU scope before the arrival (the grid-sync order)
    atomicAdd(arrive, 1u);
    while (ld_acquire(arrive) < static_cast<unsigned>(sched.split)) __nanosleep(32);
    __threadfence();
  }
  bar_sync(1, 256);
  // This part's rows of every part, contiguous in each (rows of MAX_BN floats), into the free ring with
  // 16-byte cp.async (all in flight at once: one L2 round trip), then summed in part order from shared
  // memory. Columns past N (never written by a part) are copied but not stored.
  const int per = (BM + sched.split - 1) / sched.split, r0 = part * per, rows = min(r0 + per, item.rows) - r0;
  const int cols = min(BN, p.N - item.n0), slice = max(rows, 0) * MAX_BN, vecs = slice / 4;
  const float* base = p.split_ws + int64_t(u.q - part) * STRIDE + r0 * MAX_BN;
  for (int i = t; i < sched.split * vecs; i += 256) {
    const int q = i / vecs, v = i % vecs;
    cp_async16(smem_addr(ring + q * slice + 4 * v), base + q * STRIDE + 4 * v, true);
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  bar_sync(1, 256);
  for (int e = t; e < rows * cols; e += 256) {
    const int r = e / cols, c = e % cols;
    float v = 0.f;
    for (int q = 0; q < sched.split; ++q) v += ring[q * slice + r * MAX_BN + c];
    store_out<RELU2>(p, int64_t(item.p0 + r0 + r) * p.N + item.n0 + c, v);
  }
  bar_sync(1, 256);
  if (t == 0 && atomicAdd(arrive + 1, 1u) == static_cast<unsigned>(sched.split - 1)) {
    arrive[0] = 0;
    arrive[1] = 0;
  }
}

/**
 * A split tail item's part (both consumer warpgroups, named barrier 1): its sums d (busy: this
 * warpgroup holds rows) to the workspace, wait for the item's other parts, then rows [part · BM / S,
 * …) of every part into the ring (free by then) and summed in part order through the epilogue; the
 * last part out zeroes the counters.
 */
template <class S, bool RELU2>
__device__ __forceinline__ void finish_part(const GroupedGemmParams& p, const Schedule& sched, const Unit& u, const Item& item, const float (&d)[S::BN / 2], bool busy, float* ring) {
  constexpr int BN = S::BN, STRIDE = BM * MAX_BN;
  const int t = threadIdx.x - 128, w = t / 128, warp = (t % 128) >> 5, lane = t & 31;
  if (busy) {
    float* ws = p.split_ws + int64_t(u.q) * STRIDE;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = w * TILE_ROWS + warp * 16 + (lane >> 2) + 8 * h;
      if (r >= item.rows) continue;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) *reinterpret_cast<float2*>(ws + r * MAX_BN + 8 * j + 2 * (lane & 3)) = make_float2(d[4 * j + 2 * h], d[4 * j + 2 * h + 1]);
    }
  }
  reduce_parts<S, RELU2>(p, sched, u, item, ring);
}

template <class S, bool RELU2>
__global__ void __launch_bounds__(THREADS, 1) grouped_gemm_wgmma_kernel(GroupedGemmParams p, int max_split, const __grid_constant__ CUtensorMap w_map, bool tma) {
#ifdef LM_MOE_WGMMA
  constexpr int BN = S::BN, STAGES = S::STAGES;
  extern __shared__ __align__(1024) unsigned char smem[];  // (STAGES) × {A (BM, BK), B (BN, BK)}, swizzled
  __shared__ __align__(8) uint64_t full_bar[STAGES], empty_bar[STAGES];
  __shared__ ExpertIndex index;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_addr(&full_bar[s]), tma ? 129 : 128);  // the producers' cp.async arrivals (+ the tensor copy's expect_tx)
      mbar_init(smem_addr(&empty_bar[s]), 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  build_index(p, *p.num_tiles, index);  // ends with a block barrier, which also publishes the barriers' init

  const uint32_t ring = (smem_addr(smem) + 1023) & ~1023u;
  float* const ring_f = reinterpret_cast<float*>(smem + (ring - smem_addr(smem)));  // the ring, free after a split part's main loop
  const int col_tiles = (p.N + BN - 1) / BN, ktiles = (p.K + BK - 1) / BK, items = index.super0[index.count] * col_tiles;
  const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
  const Schedule sched(items, gridDim.x, ktiles, p.split_ws != nullptr && p.split_counters != nullptr ? max_split : 1);
  uint32_t it = 0;  // k-steps through the ring so far: stage it % STAGES, phase (it / STAGES) & 1
  Unit u;

  if (wg == 0) {
    // Producer: this thread copies chunk c of tile rows r0 + 16·j, to byte 128·(r0 + 16·j) + 16·(c ^ (r0 % 8)).
    const int c = tid & 7, r0 = tid >> 3;
    const uint32_t dst = r0 * 128 + ((c ^ (r0 & 7)) << 4);
    for (int r = 0; sched.at(blockIdx.x, gridDim.x, r, u); ++r) {
      const Item item = item_at<BN>(p, index, col_tiles, u.item);
      const bf16* a_src[BM / 16];
#pragma unroll
      for (int j = 0; j < BM / 16; ++j) {
        const int r = r0 + 16 * j;
        a_src[j] = r < item.rows ? p.a + int64_t(p.a_rows ? p.a_rows[item.p0 + r] : item.p0 + r) * p.lda + c * 8 : nullptr;
      }
      const int a_js = item.rows > TILE_ROWS ? BM / 16 : TILE_ROWS / 16;  // rows an idle warpgroup would read stay unloaded
      const bf16* W = p.w[item.expert];
      const int b_rows = min(BN, p.N - item.n0);  // weight rows n0 + r of this column tile, r < b_rows
      const bf16* b_src = W + (int64_t(item.n0 + min(r0, b_rows - 1)) * p.K + c * 8);
      const int64_t b_step = int64_t(16) * p.K;
      for (int kt = u.k0; kt < u.k1; ++kt, ++it) {
        const int s = it % STAGES, k0 = kt * BK;
        mbar_wait(smem_addr(&empty_bar[s]), ((it / STAGES) & 1) ^ 1);
        const bool k_ok = k0 + c * 8 < p.K;
        const uint32_t sa = ring + s * S::STAGE_BYTES + dst, sb = sa + S::A_BYTES;
#pragma unroll
        for (int j = 0; j < BM / 16; ++j) {
          if (j < a_js) {
            const bool ok = k_ok && a_src[j] != nullptr;
            cp_async16(sa + j * 2048, ok ? a_src[j] + k0 : p.a, ok);
          }
        }
        if (tma) {  // the weight tile by one tensor copy: rows past N and columns past K arrive as zeros
          if (tid == 0) {
            mbar_expect_tx(smem_addr(&full_bar[s]), S::B_BYTES);
            tma_load_3d(ring + s * S::STAGE_BYTES + S::A_BYTES, &w_map, k0, item.n0, item.expert, smem_addr(&full_bar[s]));
          }
        } else {
#pragma unroll
          for (int j = 0; j < (BN + 15) / 16; ++j) {
            if (BN % 16 == 0 || j < BN / 16 || r0 < BN % 16) {  // tile row r0 + 16·j < BN
              const bool ok = k_ok && r0 + 16 * j < b_rows;
              cp_async16(sb + j * 2048, ok ? b_src + j * b_step + k0 : W, ok);
            }
          }
        }
        mbar_arrive_cp_async(smem_addr(&full_bar[s]));
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // Consumers: warpgroup w = wg - 1 multiplies super-tile rows [64w, 64w + 64).
  const int w = wg - 1, warp = tid >> 5, lane = tid & 31;
  const bool pairs = p.N % 2 == 0;  // then (row·N + even column) is even: 4- and 8-byte stores are aligned
  float d[BN / 2];
  for (int round = 0; sched.at(blockIdx.x, gridDim.x, round, u); ++round) {
    const Item item = item_at<BN>(p, index, col_tiles, u.item);
    const int nk = u.k1 - u.k0;
    if (item.rows <= w * TILE_ROWS) {  // no rows here: keep the barrier count, multiply nothing
      for (int kt = 0; kt < nk; ++kt, ++it) {
        mbar_wait(smem_addr(&full_bar[it % STAGES]), (it / STAGES) & 1);
        if (lane == 0) mbar_arrive(smem_addr(&empty_bar[it % STAGES]));
      }
      if (u.q >= 0) finish_part<S, RELU2>(p, sched, u, item, d, false, ring_f);
      continue;
    }
#pragma unroll
    for (int q = 0; q < BN / 2; ++q) d[q] = 0.f;
    for (int kt = 0; kt < nk; ++kt, ++it) {
      const int s = it % STAGES;
      mbar_wait(smem_addr(&full_bar[s]), (it / STAGES) & 1);
      fence_proxy_async();  // cp.async wrote the stage through the generic proxy; wgmma reads it through the async one
      const uint32_t sa = ring + s * S::STAGE_BYTES + w * (TILE_ROWS * BK * 2), sb = ring + s * S::STAGE_BYTES + S::A_BYTES;
      fence_regs(d);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) wgmma_ss<BN>(d, sw128_desc(sa + kk * 32), sw128_desc(sb + kk * 32));
      wgmma_commit();
      wgmma_wait<1>();  // the previous k-step's MMAs are done: its stage can be refilled
      fence_regs(d);
      if (kt > 0 && lane == 0) mbar_arrive(smem_addr(&empty_bar[(it - 1) % STAGES]));
    }
    wgmma_wait<0>();
    fence_regs(d);
    if (lane == 0) mbar_arrive(smem_addr(&empty_bar[(it - 1) % STAGES]));
    if (u.q >= 0) {
      finish_part<S, RELU2>(p, sched, u, item, d, true, ring_f);
      continue;
    }

    // Epilogue: rows 64w + 16·warp + lane/4 (+8), columns n0 + 8·j + 2·(lane%4) (+1).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = w * TILE_ROWS + warp * 16 + (lane >> 2) + 8 * h;
      if (r >= item.rows) continue;
      const int64_t o = int64_t(item.p0 + r) * p.N;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int n = item.n0 + 8 * j + 2 * (lane & 3);
        const float v0 = d[4 * j + 2 * h], v1 = d[4 * j + 2 * h + 1];
        if (n + 1 < p.N && pairs) {
          if constexpr (RELU2) *reinterpret_cast<__nv_bfloat162*>(p.out_relu2 + o + n) = __floats2bfloat162_rn(relu2(v0), relu2(v1));
          else *reinterpret_cast<float2*>(p.out + o + n) = make_float2(v0, v1);
        } else {
          if (n < p.N) {
            if constexpr (RELU2) p.out_relu2[o + n] = __float2bfloat16(relu2(v0));
            else p.out[o + n] = v0;
          }
          if (n + 1 < p.N) {
            if constexpr (RELU2) p.out_relu2[o + n + 1] = __float2bfloat16(relu2(v1));
            else p.out[o + n + 1] = v1;
          }
        }
      }
    }
  }
#endif
}

/** cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda link). */
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/**
 * The 3-D map (K, N, experts) over p.w_base, boxes of BK × BN × 1 in the 128-byte swizzle; false
 * (the per-thread copies then) where the layout does not allow one: strides not multiples of 16
 * bytes, a base not 16-byte aligned, or no encoder in the driver. LM_CUDA_MOE_TMA=0 turns it off.
 */
bool weight_map(const GroupedGemmParams& p, int bn, CUtensorMap& map) {
  static const EncodeTiled encode = []() -> EncodeTiled {
    const char* v = std::getenv("LM_CUDA_MOE_TMA");
    if (v != nullptr && std::string(v) == "0") return nullptr;
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return reinterpret_cast<EncodeTiled>(fn);
  }();
  if (encode == nullptr || p.w_experts < 1 || p.w_stride < int64_t(p.N) * p.K || p.w_stride % 8 != 0 || p.K % 8 != 0 || reinterpret_cast<uintptr_t>(p.w_base) % 16 != 0) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(p.K), static_cast<cuuint64_t>(p.N), static_cast<cuuint64_t>(p.w_experts)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(p.K) * sizeof(bf16), static_cast<cuuint64_t>(p.w_stride) * sizeof(bf16)};
  const cuuint32_t box[3] = {BK, static_cast<cuuint32_t>(bn), 1}, elem[3] = {1, 1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16*>(p.w_base), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw Error("grouped_gemm: cuTensorMapEncodeTiled failed (" + std::to_string(static_cast<int>(r)) + ")");
  return true;
}

int device_sms() {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "grouped_gemm: cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "grouped_gemm: cudaDeviceGetAttribute");
  return sms;
}

/** Whether the device takes cooperative launches (read once); devices or sharing modes without them never split. */
bool cooperative_launches() {
  static const bool on = [] {
    int device = 0, v = 0;
    return cudaGetDevice(&device) == cudaSuccess && cudaDeviceGetAttribute(&v, cudaDevAttrCooperativeLaunch, device) == cudaSuccess && v != 0;
  }();
  return on;
}

template <class S, bool RELU2>
void launch(const GroupedGemmParams& p, cudaStream_t s) {
  auto kernel = grouped_gemm_wgmma_kernel<S, RELU2>;
  static bool configured = false;  // the shared-memory opt-in is per kernel, once per process
  if (!configured) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM), "grouped_gemm: cudaFuncSetAttribute");
    configured = true;
  }
  const int sms = device_sms();
  const int64_t items = int64_t(p.max_tiles) * ceil_div(p.N, S::BN);
  // Dev switch for A/B timing, read at every launch: LM_CUDA_MOE_SPLIT_MAX=<n> caps the parts of a
  // split tail item (1: no split), default MAX_SPLIT.
  const char* cap = std::getenv("LM_CUDA_MOE_SPLIT_MAX");
  const int max_split = cap != nullptr && *cap != '\0' ? std::clamp(std::atoi(cap), 1, MAX_SPLIT) : MAX_SPLIT;
  CUtensorMap map{};
  const bool tma = p.w_base != nullptr && weight_map(p, S::BN, map);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(std::min<int64_t>(sms, items)));
  cfg.blockDim = dim3(THREADS);
  cfg.dynamicSmemBytes = S::SMEM;
  cfg.stream = s;
  cudaLaunchAttribute coop{};
  coop.id = cudaLaunchAttributeCooperative;  // a split tail's parts wait for each other: all blocks resident
  coop.val.cooperative = 1;
  const bool split = cooperative_launches() && p.split_ws != nullptr && p.split_counters != nullptr && max_split >= 2;
  cfg.attrs = split ? &coop : nullptr;
  cfg.numAttrs = split ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, kernel, p, split ? max_split : 1, map, tma), "grouped_gemm (wgmma): cudaLaunchKernelEx");
  LM_LAUNCH_CHECK("grouped_gemm (wgmma)");
}

template <class S>
void dispatch(const GroupedGemmParams& p, cudaStream_t s) {
  if (p.out_relu2) launch<S, true>(p, s);
  else launch<S, false>(p, s);
}

}  // namespace

bool supported(const GroupedGemmParams& p) {
  return p.tile_rows == TILE_ROWS && p.K % 8 == 0 && p.lda % 8 == 0 && reinterpret_cast<uintptr_t>(p.a) % 16 == 0;
}

int column_tile(int N) {
  int best = 0;
  for (int bn : {256, 232, 224, 192, 128})  // widest first: ties keep the wider tile
    if (best == 0 || int64_t(ceil_div(N, bn)) * bn < int64_t(ceil_div(N, best)) * best) best = bn;
  return best;
}

bool takes_tma(const GroupedGemmParams& p) {
  CUtensorMap map{};
  return supported(p) && p.w_base != nullptr && weight_map(p, column_tile(p.N), map);
}

void grouped_gemm_wgmma(const GroupedGemmParams& p, cudaStream_t s) {
  switch (column_tile(p.N)) {
    case 256: return dispatch<Shape<256>>(p, s);
    case 232: return dispatch<Shape<232>>(p, s);
    case 224: return dispatch<Shape<224>>(p, s);
    case 192: return dispatch<Shape<192>>(p, s);
    default: return dispatch<Shape<128>>(p, s);
  }
}

}  // namespace lm::cuda::moe_wgmma

namespace lm::cuda {

// One part per block of the grid (at most one block per SM), one (arrival, done) pair per tail item.
int64_t grouped_gemm_split_floats() { return int64_t(moe_wgmma::device_sms()) * moe_wgmma::BM * moe_wgmma::MAX_BN; }
int grouped_gemm_split_counters() { return 2 * moe_wgmma::device_sms(); }
bool grouped_gemm_takes_tma(const GroupedGemmParams& p) { return p.tile_rows == moe_wgmma::TILE_ROWS && moe_wgmma::takes_tma(p); }

}  // namespace lm::cuda
