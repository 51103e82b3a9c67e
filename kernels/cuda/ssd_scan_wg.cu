// Mamba-2 SSD scan for prefill at the Nano shape (head 64, state 128) on Hopper wgmma, with no
// chain between blocks: the same function as cpu::ssd_chunked_scan (see ssd_chunked.cu for the
// chunk formulas), computed in 64-token sub-chunks. Opt-in (LM_SSD_SCAN=wg): on the H100 it is
// still slower than ssd_chunked.cu's chained kernels (numbers below), so those stay the default.
//
// The state S (P × N) of a head splits by rows p: rows p of S_out depend only on rows p of S_in
// and columns p of x, and y's columns p only on rows p of S. So a block takes one (sequence, head,
// half of the 64 columns) and walks the sequence's sub-chunks in order with its 32 × 128 slice of
// the state in registers: no flags, no workspace, no CB kernel. 64 heads × 2 halves = 128 blocks
// for one sequence (one per SM); B and C are re-read from L2 by each of the 16 blocks of a group.
// Per sub-chunk of L = 64 tokens (cum_l = Σ_{j≤l} dt_j·A from the sub-chunk's start):
//   [Z | CB] = C [S_in ; B]ᵀ                  (64 × 96, K = 128)  warpgroup 0, one m64n96 product
//   W        = CB ∘ e^{cum_l − cum_s} dt_s [s ≤ l]                  warpgroup 0, in registers
//   Y        = e^{cum_l} Z + D x + W X         (64 × 32, K = 64)   warpgroup 0 → y
//   S_outᵀ   = e^{cum_last} S_inᵀ + (diag(w) B)ᵀ X,  w_s = e^{cum_last − cum_s} dt_s
//                                              (128 × 32, K = 64)  warpgroup 1, state in registers
// Warpgroup 1 also issues every copy: the next sub-chunk's B and C (tensor copies completing on an
// mbarrier), x and dt (cp.async) stream into the other buffer while this one computes, and S_out
// (TF32) goes where the next Z reads it. Each warp computes the decay tables for itself in
// registers (two tokens per lane, shuffles), so a sub-chunk costs two block barriers.
// Operands (wgmma m64nNk8 TF32, K-major): C and S_in | B in slabs of 8 state columns with 32-byte
// rows in the 32-byte swizzle (as the tensor copies write them; variant 0: slabs of 4 columns, no
// swizzle), x transposed (p × token, no swizzle, SBO 2048) with the tokens of each k8 step in the
// order 0 2 4 6 1 3 5 7, so that W's A fragments are CB's accumulator registers as they lie (a
// thread holds columns 2t, 2t+1 of each n8 tile; an A fragment wants k = t, t+4).
// Rounding: W, diag(w) B and S_in are rounded to TF32 (nearest); C, B and x enter the products
// truncated (the tensor cores drop the low 13 bits); D x, sums, decays and the state stay fp32.
// H100, one 8K sequence (test-cuda-ssd): 0.500 ms (variant 32, the default here; 16-byte slabs
// 0.560, cp.async for B and C 0.848; chained kernels 0.453); errors ≤ 1.5e-3 of max |ref| in every
// variant. Compute alone (no copies after the first sub-chunk) 0.475 ms, copies alone 0.327 ms
// (~3.6 TB/s from L2 for the 1.18 GB of B, C and x). clock64 profile per sub-chunk (~7.3k cycles),
// warpgroup 0: barrier 0.95k, [Z | CB] issue + tables 1.56k, Y + W 1.36k, W X 2.98k (its warps wait
// for warp 3, whose causal W is 4× warp 0's), store 0.3k; warpgroup 1 sits ~1k at the end barrier.
// So the next steps: the scalar work of warpgroup 0 (tables, W's exponentials: 1 warp per
// scheduler) moves to idle warps or tables, the causal rows spread evenly over the warps, and B/C
// are shared by the two halves of a head (cluster multicast) to halve the L2 traffic.
// Shapes: x (R, conv_dim) row stride xbc_stride with x | B | C; y (R, nheads·64); state (slots,
// nheads, 64, 128). Sequences of at most SSM_RECURRENT_MAX_LEN rows are skipped (ssm_scan).
// Dev switches (A/B timing only): LM_SSD_PROBE (variants, see the kernel), LM_SSD_PROFILE=1 (cycles
// per phase of block 0, read by ssd_scan_wg_profile).
#include <cuda.h>  // CUtensorMap (the encoder is reached through the runtime: no libcuda link)

#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda/common.cuh"
#include "cuda/ssd_scan_wg.cuh"

namespace lm::cuda {

namespace {

constexpr int P = 64, N = 128, L = 64;  // head size, state size, sub-chunk tokens
constexpr int PH = 32;                  // state rows (head columns) per block
constexpr int THREADS = 256;            // two warpgroups
constexpr int DEFAULT_VARIANT = 32;     // tensor copies into 32-byte-swizzled slabs (see the kernel's PROBE)
// Shared memory, in floats: two buffers of (S_in | B, C, x, raw dt), then the two buffers' copy
// barriers. B and C are stored in K slabs of 4 state columns: slab k/4 holds every row's 16 bytes
// (row r at 16·r), so a row group of 8 is one core matrix (SBO 128 bytes) and the next 4 columns
// are one slab on (LBO = the slab). S_in's 32 rows come first in each slab of B's tile (96 rows),
// so [Z | CB] is one m64n96 product over the rows of S_in then B. A tensor copy of 4 columns × 64
// rows lands as one slab.
// (Variant SW32: slabs of 8 columns, 32-byte rows in the 32-byte swizzle, one slab per k8 step.)
constexpr int SB_ROWS = PH + L;                 // S_in rows then B rows
constexpr int SB_SLAB = SB_ROWS * 4, C_SLAB = L * 4;
constexpr int SB_OFF = 0, C_OFF = SB_OFF + (N / 4) * SB_SLAB, X_OFF = C_OFF + (N / 4) * C_SLAB, DT_OFF = X_OFF + PH * L;
constexpr int BUF = DT_OFF + L;
constexpr int BAR_OFF = 2 * BUF;                // two 8-byte mbarriers
constexpr int TOTAL = BAR_OFF + 4;
constexpr uint32_t BC_BYTES = 2 * L * N * 4;     // B and C of a sub-chunk: the tensor copies' bytes
static_assert(BUF % 32 == 0 && C_OFF % 32 == 0 && X_OFF % 32 == 0 && (PH * 4) % 32 == 0, "operand tiles and slabs 128-byte aligned");

/** Float offset of (row r, column k) in S_in | B's slabs (r < 32: S_in row p; r = 32 + s: B's token s). */
template <bool SW>
__device__ __forceinline__ int sb(int r, int k) {
  if constexpr (SW) return (k >> 3) * (2 * SB_SLAB) + r * 8 + ((((k >> 2) ^ (r >> 2)) & 1) << 2) + (k & 3);
  return (k >> 2) * SB_SLAB + r * 4 + (k & 3);
}
/** Float offset of (token r, column k) in C's slabs. */
__device__ __forceinline__ int c4(int r, int k) { return (k >> 2) * C_SLAB + r * 4 + (k & 3); }
/** Float offset of (row r, k) in a K-major core-matrix tile with K = 64 (LBO 128, SBO 2048 bytes): x transposed. */
__device__ __forceinline__ int tiled64(int r, int k) { return (r >> 3) * 512 + (k >> 2) * 32 + (r & 7) * 4 + (k & 3); }
/** Token s of a sub-chunk ↔ its K position in x's tile: within each 8 tokens, k = 4·(s & 1) + (s & 7) / 2. */
__device__ __forceinline__ int k_of(int s) { return (s & ~7) | ((s & 1) << 2) | ((s & 7) >> 1); }
__device__ __forceinline__ int s_of(int k) { return (k & ~7) | ((k & 3) << 1) | ((k >> 2) & 1); }

__device__ __forceinline__ uint32_t tf32(float x) { return (__float_as_uint(x) + 0x1000u) & 0xffffe000u; }

__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait0() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/** Shared-memory matrix descriptor, no swizzle: LBO = bytes between K-adjacent core matrices, SBO = between 8-row groups. */
__device__ __forceinline__ uint64_t desc(const float* ptr, int lbo_bytes, int sbo_bytes) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
  return static_cast<uint64_t>((a >> 4) & 0x3FFF) | (static_cast<uint64_t>(lbo_bytes >> 4) << 16) | (static_cast<uint64_t>(sbo_bytes >> 4) << 32);
}
__device__ __forceinline__ uint64_t desc_sb(const float* ptr) { return desc(ptr, SB_SLAB * 4, 128); }
__device__ __forceinline__ uint64_t desc_c(const float* ptr) { return desc(ptr, C_SLAB * 4, 128); }
/** K-major tile in the 32-byte swizzle: 8-row groups of 32-byte rows 256 bytes apart, one k8 step per slab. */
__device__ __forceinline__ uint64_t desc_sw32(const float* ptr) { return desc(ptr, 16, 256) | (static_cast<uint64_t>(3) << 62); }
/** Descriptors of k8 step kk of S_in | B (from row `row`) and of C, in either slab layout. */
template <bool SW>
__device__ __forceinline__ uint64_t desc_sb_k(const float* sbs, int kk, int row) {
  if constexpr (SW) return desc_sw32(sbs + kk * 2 * SB_SLAB + row * 8);
  return desc_sb(sbs + 2 * kk * SB_SLAB + row * 4);
}
template <bool SW>
__device__ __forceinline__ uint64_t desc_c_k(const float* cs, int kk) {
  if constexpr (SW) return desc_sw32(cs + kk * 2 * C_SLAB);
  return desc_c(cs + 2 * kk * C_SLAB);
}
__device__ __forceinline__ uint64_t desc_x(const float* ptr) { return desc(ptr, 128, 2048); }

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint32_t bar) { asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar) : "memory"); }
/** The one arrival of a use of the barrier, announcing the bytes its tensor copies will complete. */
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/** Spins until the phase of this parity has completed. */
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
/** Tensor copy of the box at (column x, row y) of the map into shared memory, completing on bar. */
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, int x, int y, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(x),
               "r"(y), "r"(bar)
               : "memory");
}

// The wgmma instructions exist in sm_90a code only (the CMake default); built for anything else
// the kernel traps, and ssd_scan_wg_fits keeps it off devices other than compute capability 9.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LM_WG 1
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#else
#define LM_WG 0
__device__ __forceinline__ void wg_fence() { __trap(); }
__device__ __forceinline__ void wg_commit() {}
__device__ __forceinline__ void wg_wait() {}
__device__ __forceinline__ void proxy_fence() {}
#endif

/** A fragments computed before the products are issued (else ptxas injects extra wgmma fences). */
template <int K>
__device__ __forceinline__ void ready(uint32_t (&a)[K][4]) {
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[i][j]));
}
/** Keeps the compiler from moving accumulator accesses across the asynchronous products. */
template <int K>
__device__ __forceinline__ void pin(float (&d)[K]) {
#pragma unroll
  for (int i = 0; i < K; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define LM_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define LM_R16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
/** d += a · B, m64n32k8, A from registers (mma.m16n8k8 fragment layout per warp), B by descriptor. */
__device__ __forceinline__ void mma_n32(float (&d)[16], const uint32_t (&a)[4], uint64_t b) {
#if LM_WG
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 " LM_R16 ", {%16, %17, %18, %19}, %20, p, 1, 1;\n}\n"
               : LM_D8(0), LM_D8(8)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
#endif
}
/** d[0..48) += A · B, m64n96k8, A and B by descriptor. */
__device__ __forceinline__ void mma_n96(float* d, uint64_t a, uint64_t b) {
#if LM_WG
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n96k8.f32.tf32.tf32 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, %48, %49, p, 1, 1;\n}\n"
      : LM_D8(0), LM_D8(8), LM_D8(16), LM_D8(24), LM_D8(32), LM_D8(40)
      : "l"(a), "l"(b));
#endif
}
#undef LM_D8
#undef LM_R16

/**
 * Warpgroup 1 starts copying one sub-chunk (rows rb.., clen valid) into a buffer with cp.async:
 * this block's 32 columns of x transposed (4-byte copies; a warp covers 8 columns × 4 K positions,
 * one bank each), the raw dt of head h, and with TMA off B and C of group g (16-byte copies; 8
 * lanes fill one slab's 128 contiguous bytes). Rows past clen become zeros.
 */
template <bool TMA>
__device__ __forceinline__ void load_sub_chunk(float* buf, const SsmParams& p, int64_t rb, int clen, int h, int g, int p0) {
  const int t = threadIdx.x & 127, I = p.nheads * P;
  const float* rows = p.xbc + rb * p.xbc_stride;
  if constexpr (!TMA) {
    const float* bsrc = rows + I + g * N;
    const float* csrc = rows + I + (p.ngroups + g) * N;
#pragma unroll 4
    for (int it = 0; it < (L * N / 4) / 128; ++it) {
      const int i = t + 128 * it;
      const int r = (i >> 8) * 8 + (i & 7), k = ((i >> 3) & 31) * 4;
      const bool ok = r < clen;
      const int64_t off = ok ? static_cast<int64_t>(r) * p.xbc_stride + k : 0;
      cp_async16(buf + SB_OFF + sb<false>(PH + r, k), bsrc + off, ok);
      cp_async16(buf + C_OFF + c4(r, k), csrc + off, ok);
    }
  }
  const float* xsrc = rows + h * P + p0;
#pragma unroll 4
  for (int it = 0; it < (PH * L) / 128; ++it) {
    const int i = t + 128 * it;
    const int pp = ((i >> 9) << 3) | (i & 7), k = (((i >> 5) & 15) << 2) | ((i >> 3) & 3), s = s_of(k);
    const bool ok = s < clen;
    cp_async4(buf + X_OFF + tiled64(pp, k), xsrc + (ok ? static_cast<int64_t>(s) * p.xbc_stride + pp : 0), ok);
  }
  if (t < L) {
    const bool ok = t < clen;
    cp_async4(buf + DT_OFF + t, p.dt_raw + (ok ? (rb + t) * p.dt_stride + h : 0), ok);
  }
}

/**
 * One thread: B and C of group g for the sub-chunk at row rb as 2 × 32 tensor copies of 4 columns
 * × 64 rows (SW32: 2 × 16 of 8 columns), one slab each, completing on bar. The map spans B | C of
 * every group (columns) and the batch's rows: rows past the batch arrive as zeros, rows of the
 * next sequence as they are (their dt is 0 here, so they add nothing).
 */
template <bool SW>
__device__ __forceinline__ void load_bc_tma(float* buf, const CUtensorMap* map, int64_t rb, int g, int G, uint32_t bar) {
  constexpr int COLS = SW ? 8 : 4;
  proxy_fence();  // the buffer's last reads (generic and async proxies) come before the copies' writes
  mbar_expect(bar, BC_BYTES);
  const uint32_t sbd = smem_u32(buf + SB_OFF + PH * COLS), cd = smem_u32(buf + C_OFF);
  const int row = static_cast<int>(rb);
#pragma unroll 4
  for (int i = 0; i < N / COLS; ++i) {
    tma_load(sbd + i * (COLS / 4) * SB_SLAB * 4, map, g * N + COLS * i, row, bar);
    tma_load(cd + i * (COLS / 4) * C_SLAB * 4, map, (G + g) * N + COLS * i, row, bar);
  }
}

/**
 * Decay tables of a sub-chunk in registers, computed by every warp for itself (no barrier): lane
 * holds tokens lane and lane + 32 (d: dt, 0 past clen; v: inclusive cum). Other tokens by shuffle.
 */
struct Tables {
  float d[2], v[2], last;
};
__device__ __forceinline__ Tables tables(const float* raw, int clen, float bias, float A, float dt_min, float dt_max) {
  const int lane = threadIdx.x & 31;
  Tables tb;
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int l = lane + 32 * u;
    tb.d[u] = l < clen ? fminf(fmaxf(softplus(raw[l] + bias), dt_min), dt_max) : 0.f;
    tb.v[u] = tb.d[u] * A;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float w = __shfl_up_sync(0xffffffffu, tb.v[u], o);
      if (lane >= o) tb.v[u] += w;
    }
  }
  tb.v[1] += __shfl_sync(0xffffffffu, tb.v[0], 31);
  tb.last = __shfl_sync(0xffffffffu, tb.v[1], 31);
  return tb;
}

/** Cycles per phase of block 0 (dev profile, LM_SSD_PROFILE=1): [warpgroup][phase]. */
__device__ unsigned long long g_prof[2][12];

/**
 * PROBE bits (LM_SSD_PROBE selects an instantiated set, A/B timing only): 32 = tensor copies of 8
 * columns into 32-byte-swizzled slabs (the default), 0 = tensor copies of 4 columns into unswizzled
 * slabs, 16 = B and C by cp.async (all three the same results); + 1 = no copies after the first
 * sub-chunk (compute alone), + 2 = no products (copies and tables alone), both with wrong results.
 * (Z and CB as two products, m64n32 + m64n64, measured no faster than the one m64n96.)
 */
template <bool PROF, int PROBE>
__global__ void __launch_bounds__(THREADS, 1) ssd_scan_wg_kernel(const __grid_constant__ CUtensorMap bc_map, BatchView b, SsmParams p) {
  constexpr bool TMA = (PROBE & 16) == 0, SW = TMA && (PROBE & 32) != 0;
  extern __shared__ __align__(1024) float smem[];
  long long t_prev = 0;
  const bool prof = PROF && blockIdx.x == 0 && (threadIdx.x & 127) == 0;
  auto mark = [&](int k) {
    if (prof) {
      const long long t = clock64();
      atomicAdd(&g_prof[threadIdx.x >> 7][k], static_cast<unsigned long long>(t - t_prev));
      t_prev = t;
    }
  };
  const int half = blockIdx.x & 1, hs = blockIdx.x >> 1, h = hs % p.nheads, seq = hs / p.nheads;
  const int len = b.seq_len[seq];
  if (len <= SSM_RECURRENT_MAX_LEN) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, q = warp & 3, g8 = lane >> 2, t4 = lane & 3;
  const int p0 = half * PH, g = h / (p.nheads / p.ngroups), I = p.nheads * P;
  const int64_t row0 = b.seq_row0[seq];
  const int nsub = (len + L - 1) / L;
  float* gst = p.state + (static_cast<int64_t>(b.seq_slot[seq]) * p.nheads + h) * P * N + static_cast<int64_t>(p0) * N;
  float* yh = p.y + row0 * I + static_cast<int64_t>(h) * P + p0;
  const float A = p.A[h], Dh = p.D[h], bias = p.dt_bias[h];
  const uint32_t bar0 = smem_u32(smem + BAR_OFF);  // buffer i's barrier at bar0 + 8·i
  const bool issuer = tid == 128;                   // the thread that issues the tensor copies

  // Warpgroup 1 holds S_outᵀ (n × p) as two m64n32 accumulator tiles, st[m][4j + e] at
  // (n = 64m + 16q + g8 + 8·(e >> 1), p = 8j + 2·t4 + (e & 1)), and issues every copy.
  float st[2][16];
  if (TMA && tid == 0) {
    mbar_init(bar0);
    mbar_init(bar0 + 8);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (wg == 1) {
    if (TMA && issuer) load_bc_tma<SW>(smem, &bc_map, row0, g, p.ngroups, bar0);
    load_sub_chunk<TMA>(smem, p, row0, min(L, len), h, g, p0);
    cp_async_commit();
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int n = 64 * m + 16 * q + g8 + 8 * ((i & 3) >> 1), pp = 8 * (i >> 2) + 2 * t4 + (i & 1);
        st[m][i] = __ldcg(gst + pp * N + n);
        smem[SB_OFF + sb<SW>(pp, n)] = __uint_as_float(tf32(st[m][i]));
      }
    cp_async_wait0();
    proxy_fence();  // S_in and the cp.async copies written through the generic proxy; wgmma reads through the async one
  }

  if (prof) t_prev = clock64();
  for (int c = 0; c < nsub; ++c) {
    float* buf = smem + (c & 1) * BUF;
    const float* SBs = buf + SB_OFF;  // S_in rows, then B's tokens
    const float* Cs = buf + C_OFF;
    const float* Xs = buf + X_OFF;
    const int clen = min(L, len - c * L);
    __syncthreads();  // sub-chunk c's cp.async copies and S_in are in shared memory
    if (TMA && !((PROBE & 1) && c >= 2)) mbar_wait(bar0 + 8 * (c & 1), (c >> 1) & 1);  // and its tensor copies
    mark(0);
    if (wg == 0) {
      // [Z | CB] = C [S_in ; B]ᵀ (rows l = 16q + g8 (+8) of this warp) while the tables are computed.
      float zcb[48];  // Z (columns p, 16 registers) then CB (columns s, 32)
#pragma unroll
      for (int i = 0; i < 48; ++i) zcb[i] = 0.f;
      const float* z = zcb;
      const float* cb = zcb + 16;
      if constexpr (!(PROBE & 2)) {
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < N / 8; ++kk) {
          mma_n96(zcb, desc_c_k<SW>(Cs, kk), desc_sb_k<SW>(SBs, kk, 0));
        }
        wg_commit();
      }
      const Tables tb = tables(buf + DT_OFF, clen, bias, A, p.dt_min, p.dt_max);
      const int la = 16 * q + g8, lb = la + 8;
      const float vq = q >= 2 ? tb.v[1] : tb.v[0];
      const float ca = __shfl_sync(0xffffffffu, vq, la & 31), cbv = __shfl_sync(0xffffffffu, vq, lb & 31);
      const float ea = __expf(ca), eb = __expf(cbv);
      mark(1);
      if constexpr (!(PROBE & 2)) wg_wait();
      pin(zcb);
      mark(2);
      float y[16];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int l = e < 2 ? la : lb, pp = 8 * j + 2 * t4 + (e & 1);
          y[4 * j + e] = (e < 2 ? ea : eb) * z[4 * j + e] + Dh * Xs[tiled64(pp, k_of(l))];
        }
      // W in CB's registers, as the A fragments of W X (k = t4 ↔ token 2·t4, k = t4 + 4 ↔ 2·t4 + 1).
      uint32_t a[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int s0 = 8 * j + 2 * t4, s1 = s0 + 1;
        if (8 * j <= 16 * q + 15) {
          const float cs0 = __shfl_sync(0xffffffffu, tb.v[j >> 2], s0 & 31), cs1 = __shfl_sync(0xffffffffu, tb.v[j >> 2], s1 & 31);
          const float d0 = __shfl_sync(0xffffffffu, tb.d[j >> 2], s0 & 31), d1 = __shfl_sync(0xffffffffu, tb.d[j >> 2], s1 & 31);
          a[j][0] = tf32(s0 <= la ? cb[4 * j + 0] * __expf(ca - cs0) * d0 : 0.f);
          a[j][2] = tf32(s1 <= la ? cb[4 * j + 1] * __expf(ca - cs1) * d1 : 0.f);
          a[j][1] = tf32(s0 <= lb ? cb[4 * j + 2] * __expf(cbv - cs0) * d0 : 0.f);
          a[j][3] = tf32(s1 <= lb ? cb[4 * j + 3] * __expf(cbv - cs1) * d1 : 0.f);
        } else {
          a[j][0] = a[j][1] = a[j][2] = a[j][3] = 0u;
        }
      }
      ready(a);
      mark(3);
      if constexpr (!(PROBE & 2)) {
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < L / 8; ++kk) mma_n32(y, a[kk], desc_x(Xs + 64 * kk));
        wg_commit();
        wg_wait();
      }
      pin(y);
      mark(4);
      float* yc = yh + static_cast<int64_t>(c) * L * I;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int l = la + 8 * hf;
          if (l < clen) *reinterpret_cast<float2*>(yc + static_cast<int64_t>(l) * I + 8 * j + 2 * t4) = make_float2(y[4 * j + 2 * hf], y[4 * j + 2 * hf + 1]);
        }
      mark(5);
    } else {
      // The next sub-chunk's copies, then S_outᵀ = e^{cum_last} S_inᵀ + (diag(w) B)ᵀ X: rows n = 64m + 16q + g8 (+8).
      if (c + 1 < nsub && !((PROBE & 1) && c >= 1)) {
        float* next = smem + ((c + 1) & 1) * BUF;
        const int64_t rb = row0 + static_cast<int64_t>(c + 1) * L;
        if (TMA && issuer) load_bc_tma<SW>(next, &bc_map, rb, g, p.ngroups, bar0 + 8 * ((c + 1) & 1));
        load_sub_chunk<TMA>(next, p, rb, min(L, len - (c + 1) * L), h, g, p0);
        cp_async_commit();
      }
      mark(1);
      const Tables tb = tables(buf + DT_OFF, clen, bias, A, p.dt_min, p.dt_max);
      float w[2];
#pragma unroll
      for (int u = 0; u < 2; ++u) w[u] = __expf(tb.last - tb.v[u]) * tb.d[u];
      const float e = __expf(tb.last);
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int i = 0; i < 16; ++i) st[m][i] *= e;
      uint32_t a[2][8][4];
#pragma unroll
      for (int kk = 0; kk < L / 8; ++kk) {
        const int s0 = 8 * kk + 2 * t4, s1 = s0 + 1;
        const float w0 = __shfl_sync(0xffffffffu, w[kk >> 2], s0 & 31), w1 = __shfl_sync(0xffffffffu, w[kk >> 2], s1 & 31);
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          const int na = 64 * m + 16 * q + g8, nb = na + 8;
          a[m][kk][0] = tf32(SBs[sb<SW>(PH + s0, na)] * w0);
          a[m][kk][1] = tf32(SBs[sb<SW>(PH + s0, nb)] * w0);
          a[m][kk][2] = tf32(SBs[sb<SW>(PH + s1, na)] * w1);
          a[m][kk][3] = tf32(SBs[sb<SW>(PH + s1, nb)] * w1);
        }
      }
      ready(a[0]);
      ready(a[1]);
      mark(2);
      if constexpr (!(PROBE & 2)) {
        wg_fence();
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int kk = 0; kk < L / 8; ++kk) mma_n32(st[m], a[m][kk], desc_x(Xs + 64 * kk));
        wg_commit();
        wg_wait();
      }
      pin(st[0]);
      pin(st[1]);
      mark(3);
    }
    __syncthreads();  // Z is done with S_in and everyone with buffer c
    mark(6);
    if (wg == 1) {
      float* next_sb = smem + ((c + 1) & 1) * BUF + SB_OFF;  // S_out: the next sub-chunk's S_in
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const int n = 64 * m + 16 * q + g8 + 8 * ((i & 3) >> 1), pp = 8 * (i >> 2) + 2 * t4 + (i & 1);
          next_sb[sb<SW>(pp, n)] = __uint_as_float(tf32(st[m][i]));
        }
      mark(7);
      cp_async_wait0();  // sub-chunk c + 1's cp.async copies
      proxy_fence();
      mark(8);
    }
  }
  if (wg == 1) {
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int n = 64 * m + 16 * q + g8 + 8 * ((i & 3) >> 1), pp = 8 * (i >> 2) + 2 * t4 + (i & 1);
        gst[pp * N + n] = st[m][i];
      }
  }
}

/** cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda link). */
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/** The 2-D map over B | C of every group (columns) × the batch's rows, boxes of 4 columns × 64 rows (sw32: 8, swizzled). */
CUtensorMap bc_tensor_map(const BatchView& b, const SsmParams& p, bool sw32) {
  static const EncodeTiled encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    LM_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || fn == nullptr) throw Error("ssd_scan_wg: cuTensorMapEncodeTiled not found");
    return reinterpret_cast<EncodeTiled>(fn);
  }();
  CUtensorMap map{};
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(2) * p.ngroups * N, static_cast<cuuint64_t>(b.rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(p.xbc_stride) * sizeof(float)};
  const cuuint32_t box[2] = {sw32 ? 8u : 4u, static_cast<cuuint32_t>(L)}, elem[2] = {1, 1};
  void* base = const_cast<float*>(p.xbc + static_cast<int64_t>(p.nheads) * P);
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, base, dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, sw32 ? CU_TENSOR_MAP_SWIZZLE_32B : CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw Error("ssd_scan_wg: cuTensorMapEncodeTiled failed (" + std::to_string(static_cast<int>(r)) + ")");
  return map;
}

}  // namespace

bool ssd_scan_wg_fits(const SsmParams& p) {
  static const bool on = [] {
    int dev = 0, major = 0;
    LM_CUDA_CHECK(cudaGetDevice(&dev));
    LM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    const char* env = std::getenv("LM_SSD_SCAN");  // "wg": this kernel instead of the chained ones (opt-in)
    return major == 9 && env != nullptr && std::string(env) == "wg";
  }();
  const bool aligned = p.xbc_stride % 4 == 0 && reinterpret_cast<uintptr_t>(p.xbc) % 16 == 0 && reinterpret_cast<uintptr_t>(p.y) % 8 == 0;
  return on && aligned && p.head_dim == P && p.dstate == N && p.ngroups >= 1 && p.nheads % p.ngroups == 0;
}

void ssd_scan_wg(const BatchView& b, const SsmParams& p, cudaStream_t s) {
  if (!ssd_scan_wg_fits(p)) throw Error("ssd_scan_wg: shape or alignment not supported");
  if (b.nseq == 0 || b.rows == 0) return;
  static const int probe = [] {
    const char* env = std::getenv("LM_SSD_PROBE");
    return env != nullptr ? std::atoi(env) : DEFAULT_VARIANT;
  }();
  static const bool profile = [] {
    const char* env = std::getenv("LM_SSD_PROFILE");
    return env != nullptr && env[0] == '1';
  }();
  constexpr size_t smem = TOTAL * sizeof(float);
  using Kernel = void (*)(const CUtensorMap, BatchView, SsmParams);
  Kernel kernel = ssd_scan_wg_kernel<false, DEFAULT_VARIANT>;
  switch (profile ? -probe - 1 : probe) {  // dev variants (A/B timing); anything else runs the default
    case 0: kernel = ssd_scan_wg_kernel<false, 0>; break;
    case 16: kernel = ssd_scan_wg_kernel<false, 16>; break;
    case 33: kernel = ssd_scan_wg_kernel<false, 33>; break;
    case 34: kernel = ssd_scan_wg_kernel<false, 34>; break;
    case -33: kernel = ssd_scan_wg_kernel<true, 32>; break;
    default: break;
  }
  const int variant = !profile && (probe == 0 || probe == 16) ? probe : DEFAULT_VARIANT;  // the chosen kernel's copies
  const CUtensorMap map = variant == 16 ? CUtensorMap{} : bc_tensor_map(b, p, variant == 32);
  LM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const int64_t blocks = static_cast<int64_t>(b.nseq) * p.nheads * 2;
  if (blocks > 0x7fffffff) throw Error("ssd_scan_wg: too many sequences × heads");
  kernel<<<static_cast<unsigned>(blocks), THREADS, smem, s>>>(map, b, p);
  LM_LAUNCH_CHECK("ssd_chunked_scan (scan, wgmma)");
}

void ssd_scan_wg_profile(unsigned long long (&cycles)[2][12]) {
  LM_CUDA_CHECK(cudaMemcpyFromSymbol(cycles, g_prof, sizeof(cycles)));
  static const unsigned long long zero[2][12] = {};
  LM_CUDA_CHECK(cudaMemcpyToSymbol(g_prof, zero, sizeof(zero)));
}

}  // namespace lm::cuda
