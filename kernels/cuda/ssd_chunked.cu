// Mamba-2 SSD chunked scan for prefill (the math of cpu::ssd_chunked_scan), fp32 state.
// Per head h (group g), chunk of L tokens starting at t0, cum_l = Σ_{j≤l} dt_j·A_h:
//   CB[l, s]  = C_l · B_s                                            (per group, ssd_cb_kernel)
//   y_l       = e^{cum_l} C_l · S_in  +  Σ_{s≤l} CB[l,s] e^{cum_l − cum_s} dt_s x_s  +  D x_l
//   S_out     = e^{cum_{L−1}} S_in  +  Σ_s e^{cum_{L−1} − cum_s} dt_s x_s ⊗ B_s
// In matrix form, with C' = diag(e^{cum}) C, W = (CB ∘ decay ∘ causal mask) · diag(dt) and
// Xw = diag(e^{cum_{L−1} − cum} dt) X:   Y = C' S_inᵀ + W X ,   S_out = e^{cum_{L−1}} S_in + Xwᵀ B.
// Only S_out = e·S_in + S_loc (S_loc = Xwᵀ B) chains the chunks of a sequence; the rest of a
// chunk's work is independent of the others.
//
// Two kernels, both persistent (as many blocks as fit on the SMs loop over work items):
//  - ssd_cb_kernel, items (chunk, group): CB of one chunk on tensor cores into the workspace
//    (ngroups, rows, Lp), lower-triangle 16×16 tiles of valid rows only; it also clears the
//    chunk's chain flags and the work ticket of ssd_chunk_kernel.
//  - ssd_chunk_kernel<WARPS>, items (chunk, head) taken from an atomic ticket in sequence-major
//    chunk order; 8 warps and 113 KB of shared memory at the Nano shape, two blocks per SM. Per item:
//      1. x and B stream into shared memory while dt, cum and the decay tables are computed.
//      2. S_loc = Xwᵀ B  (P × N, K = L) into registers (m16n8k8 TF32 mma.sync).
//      3. CB streams into B's buffer, then Y = D x + W X (L × P, causal K) in registers; W's decays
//         are e^{cum_l − cum_r} · e^{cum_r − cum_s} dt_s with r the first row of the 16-row tile
//         (both factors ≤ 1), direct exponentials on the diagonal tiles.
//      4. C streams into that buffer while the chain runs: wait until the previous chunk's item of
//         this head has published its S_out into the slot's state, read it (this chunk's S_in)
//         into shared memory where x was, write S_out = e·S_in + S_loc over it, fence, publish
//         (a flag counter).
//      5. Y += C' S_inᵀ, and Y is stored.
//    The state slot is the chain's only buffer: each chunk reads S_in before it writes S_out,
//    and the next chunk reads only after the flag. Tickets go out in order and an item waits
//    only for an earlier one, so the wait cannot deadlock; the hop between chunks is one state
//    read, one write and a flag, while everything else of neighbouring chunks runs in parallel.
// The Nano shape (head 64, state 128, chunk 128) takes ssd_chunk_wg_kernel on sm_90 with 16-byte
// aligned rows: the same items and chain with the three products on wgmma m64n64k8 TF32 (A from
// registers, B = x transposed or S_in from shared memory; see the comment above it). Otherwise the
// Nano shape runs ssd_chunk_kernel with its sizes as template constants (layout, tile assignment
// and loop bounds fold; products unrolled by 2). In both, B carries the S_loc weights from its
// TF32 rounding pass. H100, one 8K sequence (.ssd harness, CB kernel 0.069 ms included): mma.sync
// generic 0.688 ms, Nano instance 0.56-0.57, wgmma 0.486, wgmma with the short chain hop 0.455
// (errors unchanged, 5e-4 against 5e-3). Per-item clock64 profile of the wgmma kernel (cycles of
// ~43k): loads + tables 10.6k, S_loc 2.2k, CB wait + W X 8.9k, chain wait 10.2k, S_in/S_out 5.6k,
// C' S_inᵀ + store 4.8k: the products are no longer the limit; the chain (64 hops for 8K tokens)
// and the loads are.
// LM_SSD_WGMMA=0 in the environment takes the mma.sync instance (A/B timing). LM_SSD_SCAN=wg takes
// ssd_scan_wg.cu instead at the Nano shape on sm_90: no chain between blocks (each block walks one
// sequence for half a head's columns, the state in registers), 0.500 ms against these kernels'
// 0.453 on the H100, so opt-in until its per-sub-chunk scalar work shrinks (see its header).
// Speed before that (H100, Nano heads, one 8K sequence): ~0.7 ms, the CB kernel ~0.07 ms of it. Timed per
// step, a two-head item took ~39 µs of one SM: ~10 loading, ~20 in the three products (~75
// TFLOP/s of TF32 mma.sync), ~10 in the chain; two blocks per SM (this layout) gained nothing over
// one block of two heads, so the products are the limit: the next step is wgmma (TF32 operands
// must be K-major there: x and B transposed on their way into shared memory).
// Shapes: x (R, conv_dim) row stride xbc_stride with x | B | C; y (R, nheads·P); state (slots,
// nheads, P, N). P, N and chunk are zero-padded to multiples of 16 (Pp, Np, Lp) in shared memory.
// Workspace: CB (ngroups, rows, Lp) floats, then flags (ngroups, rows) and the ticket, as ints:
// the flag of (chunk, head h of group g) is at (g, first row of the chunk + (h mod heads per
// group) mod L), so every chunk that has a successor (a full one, L rows) owns L flag rows per
// group (heads of a group beyond L share flags: a flag counts every head that publishes to it).
// Sequences of at most SSM_RECURRENT_MAX_LEN rows are skipped (ssm_scan does them).
// Rounding: operands are rounded to TF32 (10-bit mantissa) inside the products; sums, decays and
// the state stay fp32, and the state is never rounded between chunks.
#include <cstdint>
#include <cstdlib>

#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "cuda/ssd_scan_wg.cuh"

namespace lm::cuda {

namespace {

constexpr int SSD_THREADS = 512;  // CB kernel
constexpr int PAD = 4;                     // CB kernel row padding: fragment loads (row g, column t) free of bank conflicts
constexpr size_t SMEM_LIMIT = 227 * 1024;  // sm_90 opt-in shared memory per block
constexpr int FLAG_TAIL = 32;              // workspace floats past the flags: the ticket, 128-byte aligned

int round16(int v) { return (v + 15) / 16 * 16; }

size_t cb_smem_floats(int Np, int Lp) { return 2 * static_cast<size_t>(Lp) * (Np + PAD); }

/**
 * Shared memory of ssd_chunk_kernel, in floats: x then S_in in one buffer, B then CB then C in
 * another, and the decay tables. Row strides keep the fragment loads free of bank conflicts:
 * operands read as (row t, column g) use a stride ≡ ±8 (mod 32) (x, B), operands read as
 * (row g, column t) a stride ≡ 4 (mod 16) (C, CB, the state).
 */
struct ChunkLayout {
  int ldx, ldb, ldc, ldw, lds;
  int r1_off, tab_off, total;
};

__host__ __device__ inline int imax(int a, int b) { return a > b ? a : b; }

__host__ __device__ inline ChunkLayout chunk_layout(int Pp, int Np, int Lp) {
  ChunkLayout ly;
  ly.ldx = Pp + 8;
  ly.ldb = Np + 8;
  ly.ldc = Np + 4;
  ly.ldw = Lp + 4;
  ly.lds = Np + 4;
  ly.r1_off = imax(Lp * ly.ldx, Pp * ly.lds);
  ly.tab_off = ly.r1_off + Lp * imax(imax(ly.ldb, ly.ldc), ly.ldw);
  ly.total = ly.tab_off + 5 * Lp + (Lp / 16) * Lp;  // dt, cum, w_state, e^{cum}, e^{cum − cum_r}, F (Lp/16, Lp)
  return ly;
}

/** Warp tiles (32 × 32 outputs) of step 2 (P × N) and of steps 3 and 5 (L × P). */
__host__ __device__ inline int state_tiles(int Pp, int Np) { return ((Pp + 31) / 32) * ((Np + 31) / 32); }
__host__ __device__ inline int output_tiles(int Pp, int Lp) { return ((Pp + 31) / 32) * ((Lp + 31) / 32); }

/** Whether ssd_chunk_kernel<warps> takes this shape (shared memory and one tile per warp). */
bool chunk_kernel_fits(int warps, int Pp, int Np, int Lp) {
  return chunk_layout(Pp, Np, Lp).total * sizeof(float) <= SMEM_LIMIT && state_tiles(Pp, Np) <= warps && output_tiles(Pp, Lp) <= warps;
}

/** Async global → shared copy of VEC floats (16 bytes with .cg, or 4); zero-fills when !valid. */
template <int VEC>
__device__ __forceinline__ void cp_async(float* dst, const float* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  if constexpr (VEC == 4) asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
  else asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory"); }

/**
 * Starts copying a (rows, cols) tile, row stride src_stride, into dst (row stride ld); elements
 * past valid_rows / valid_cols become zero. lower_tiles: only 16×16 tiles on or below the diagonal.
 * Lanes walk a row's columns and warps the rows (narrow tiles: several rows per warp), so no
 * per-element index division.
 */
template <int VEC>
__device__ void load_tile_async(float* dst, int ld, int rows, int cols, const float* src, int64_t src_stride, int valid_rows, int valid_cols, bool lower_tiles = false) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int lanes_per_row = min(cols / VEC, 32), rows_per_warp = 32 / lanes_per_row;
  const int sub = lane / lanes_per_row, col_lane = lane % lanes_per_row;
  if (sub >= rows_per_warp) return;
  for (int r = warp * rows_per_warp + sub; r < rows; r += nwarps * rows_per_warp) {
    const int cmax = lower_tiles ? min(cols, (r / 16 + 1) * 16) : cols;
    for (int c = col_lane * VEC; c < cmax; c += lanes_per_row * VEC) {
      const bool ok = r < valid_rows && c < valid_cols;
      cp_async<VEC>(dst + r * ld + c, ok ? src + r * src_stride + c : src, ok);
    }
  }
}

/**
 * x rounded to TF32 for an mma operand: half an ulp of the 10-bit mantissa added to the bits; the
 * tensor cores ignore the 13 low bits, so this is round-to-nearest (ties away), as cvt.rna, in one
 * integer add instead of a conversion (16 per clock per SM on sm_90, the bottleneck here).
 */
__device__ __forceinline__ uint32_t to_tf32(float x) { return __float_as_uint(x) + 0x1000u; }
/** Rounds n floats of shared memory to TF32 in place (operands read later as raw bits). */
__device__ __forceinline__ void round_tf32(float* v, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) v[i] = __uint_as_float((__float_as_uint(v[i]) + 0x1000u) & 0xffffe000u);
}

/** d += a · b, m16n8k8, TF32 operands, fp32 accumulators (PTX fragment layouts). */
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ float ssd_dt(const SsmParams& p, int64_t r, int h) {
  const float d = softplus(p.dt_raw[r * p.dt_stride + h] + p.dt_bias[h]);
  return fminf(fmaxf(d, p.dt_min), p.dt_max);
}

__device__ __forceinline__ int seq_chunks(int len, int L) { return len > SSM_RECURRENT_MAX_LEN ? (len + L - 1) / L : 0; }

/** Chunks of all long sequences; called by a whole warp, every lane gets the count. */
__device__ int count_chunks(const BatchView& b, int L) {
  int n = 0;
  for (int s = threadIdx.x & 31; s < b.nseq; s += 32) n += seq_chunks(b.seq_len[s], L);
  for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
  return n;
}

/** (sequence, chunk index) of chunk k in sequence-major order; called by a whole warp. */
__device__ int2 locate_chunk(const BatchView& b, int L, int k) {
  const int lane = threadIdx.x & 31;
  int base = 0;
  for (int s0 = 0; s0 < b.nseq; s0 += 32) {
    const int s = s0 + lane;
    const int n = s < b.nseq ? seq_chunks(b.seq_len[s], L) : 0;
    int incl = n;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const int total = __shfl_sync(0xffffffffu, incl, 31);
    if (k < base + total) {
      const int src = __ffs(__ballot_sync(0xffffffffu, k < base + incl)) - 1;
      const int before = __shfl_sync(0xffffffffu, incl - n, src);
      return make_int2(s0 + src, k - base - before);
    }
    base += total;
  }
  return make_int2(-1, -1);
}

/** Warp work units of the CB kernel: (16-row tile i, group of ≤ 8 n8 tiles left of or on the diagonal tile). */
__device__ __forceinline__ int cb_units(int Mt) {
  int n = 0;
  for (int i = 0; i < Mt; ++i) n += (i + 4) / 4;
  return n;
}

template <int VEC>
__global__ void __launch_bounds__(SSD_THREADS) ssd_cb_kernel(BatchView b, SsmParams p, int L, int Lp, int Np, float* cb, int* flags, int* ticket) {
  extern __shared__ __align__(128) float smem[];
  __shared__ int2 s_chunk;
  if (blockIdx.x == 0 && threadIdx.x == 0) *ticket = 0;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5, g8 = lane >> 2, t4 = lane & 3;
  const int N = p.dstate, ldn = Np + PAD, I = p.nheads * p.head_dim, Mt = Lp / 16, units = cb_units(Mt);
  float* Cs = smem;           // (Lp, ldn)
  float* Bs = Cs + Lp * ldn;  // (Lp, ldn)
  const int items = count_chunks(b, L) * p.ngroups;
  for (int item = blockIdx.x; item < items; item += gridDim.x) {
    const int k = item / p.ngroups, g = item % p.ngroups;
    __syncthreads();  // the previous item is done with every buffer
    if (warp == 0) {
      const int2 sc = locate_chunk(b, L, k);
      if (lane == 0) s_chunk = sc;
    }
    __syncthreads();
    const int seq = s_chunk.x, t0 = s_chunk.y * L;
    const int clen = min(L, b.seq_len[seq] - t0);
    const int64_t rb = b.seq_row0[seq] + t0;
    for (int l = threadIdx.x; l < clen; l += blockDim.x) flags[static_cast<int64_t>(g) * b.rows + rb + l] = 0;
    const float* rows = p.xbc + rb * p.xbc_stride + I;
    load_tile_async<VEC>(Bs, ldn, Lp, Np, rows + g * N, p.xbc_stride, clen, N);
    load_tile_async<VEC>(Cs, ldn, Lp, Np, rows + (p.ngroups + g) * N, p.xbc_stride, clen, N);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    round_tf32(smem, 2 * Lp * ldn);
    __syncthreads();
    for (int u = warp; u < units; u += nwarps) {
      int i = 0, jg = u;
      while (jg >= (i + 4) / 4) jg -= (i++ + 4) / 4;
      if (16 * i >= clen) continue;
      const int jend = min(8 * jg + 8, 2 * i + 2);  // n8 tiles [8·jg, jend): columns of tiles on or left of the diagonal
      float acc[8][4] = {};
      for (int k0 = 0; k0 < Np; k0 += 8) {
        const float* ca = Cs + (16 * i + g8) * ldn + k0 + t4;
        const uint32_t a[4] = {__float_as_uint(ca[0]), __float_as_uint(ca[8 * ldn]), __float_as_uint(ca[4]), __float_as_uint(ca[8 * ldn + 4])};
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
          const int j = 8 * jg + jj;
          if (j >= jend) break;
          const float* bb = Bs + (8 * j + g8) * ldn + k0 + t4;  // Bᵀ: element (n, s) at Bs[s·ldn + n]
          const uint32_t bf[2] = {__float_as_uint(bb[0]), __float_as_uint(bb[4])};
          mma_tf32(acc[jj], a, bf);
        }
      }
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        const int j = 8 * jg + jj;
        if (j >= jend) break;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int l = 16 * i + g8 + 8 * half;
          if (l < clen) *reinterpret_cast<float2*>(cb + (static_cast<int64_t>(g) * b.rows + rb + l) * Lp + 8 * j + 2 * t4) = make_float2(acc[jj][2 * half], acc[jj][2 * half + 1]);
        }
      }
    }
  }
}

/** Accumulators of one warp tile: 2 m16 tiles × 4 n8 tiles, fragment layout. */
using Acc = float[2][4][4];

template <int WARPS, int VEC, int FP = 0, int FN = 0, int FL = 0>
__global__ void __launch_bounds__(WARPS * 32, 16 / WARPS)
    ssd_chunk_kernel(BatchView b, SsmParams p, int L_arg, int Pp_arg, int Np_arg, int Lp_arg, const float* cb, int* flags, int* ticket, bool vec_y, bool vec_state) {
  extern __shared__ __align__(128) float smem[];
  __shared__ int s_ticket;
  __shared__ int2 s_chunk;
  // FP, FN, FL > 0: head_dim, dstate and chunk fixed at compile time (multiples of 16), so the
  // layout, the tile assignment and the loop bounds fold into constants.
  const int P = FP ? FP : p.head_dim, N = FN ? FN : p.dstate, L = FL ? FL : L_arg;
  const int Pp = FP ? FP : Pp_arg, Np = FN ? FN : Np_arg, Lp = FL ? FL : Lp_arg;
  const ChunkLayout ly = chunk_layout(Pp, Np, Lp);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g8 = lane >> 2, t4 = lane & 3;  // fragment row group and column within it
  const int G = p.ngroups, hpg = p.nheads / G;
  const int I = p.nheads * P, Mt = Lp / 16;
  const int ldx = ly.ldx, ldb = ly.ldb, ldc = ly.ldc, ldw = ly.ldw, lds = ly.lds;
  float* Xs = smem;              // (Lp, ldx) x of the head; then (Pp, lds) S_in
  float* Ss = smem;
  float* R1 = smem + ly.r1_off;  // (Lp, ldb) B, then (Lp, ldw) CB (lower 16×16 tiles), then (Lp, ldc) C
  float* dts = smem + ly.tab_off;  // (Lp) dt, 0 past the chunk
  float* cum = dts + Lp;           // (Lp) inclusive Σ dt·A
  float* wst = cum + Lp;           // (Lp) e^{cum_last − cum_l} dt_l: the weights of S_loc
  float* ecum = wst + Lp;          // (Lp) e^{cum_l}
  float* er = ecum + Lp;           // (Lp) e^{cum_l − cum_r}, r = 16·⌊l/16⌋
  float* F = er + Lp;              // (Lp/16, Lp) e^{cum_{16i} − cum_s} dt_s for s < 16i, else 0
  const int n_state = state_tiles(Pp, Np), n_out = output_tiles(Pp, Lp);
  const int items = (warp == 0 ? count_chunks(b, L) : 0) * p.nheads;  // used by warp 0 only
  // The next ticket is taken while an item computes (its latency hidden); a block holds at most
  // one ticket it has not started, taken after the one it is working on, so the minimal
  // unfinished item always belongs to a running block that waits on nothing unfinished.
  int next_ticket = 0;
  if (tid == 0) s_ticket = atomicAdd(ticket, 1);
  for (;;) {
    __syncthreads();
    const int t = s_ticket;
    if (warp == 0) {
      const int2 sc = t < items ? locate_chunk(b, L, t / p.nheads) : make_int2(-1, -1);
      if (lane == 0) s_chunk = sc;
    }
    __syncthreads();
    const int seq = s_chunk.x;
    if (seq < 0) break;
    const int c = s_chunk.y, h = t % p.nheads, g = h / hpg, hl = h % hpg;
    const int len = b.seq_len[seq], clen = min(L, len - c * L), klen = (clen + 7) / 8 * 8;
    const bool last = (c + 1) * L >= len;
    const int64_t rb = b.seq_row0[seq] + static_cast<int64_t>(c) * L;

    // 1. x and B stream in; dt, cum and the decay tables meanwhile.
    const float* rows = p.xbc + rb * p.xbc_stride;
    load_tile_async<VEC>(Xs, ldx, Lp, Pp, rows + h * P, p.xbc_stride, clen, P);
    load_tile_async<VEC>(R1, ldb, Lp, Np, rows + I + g * N, p.xbc_stride, clen, N);
    cp_async_commit();
    if (tid == 0) next_ticket = atomicAdd(ticket, 1);
    for (int l = tid; l < Lp; l += blockDim.x) dts[l] = l < clen ? ssd_dt(p, rb + l, h) : 0.f;
    __syncthreads();
    if (warp == 0) {  // inclusive prefix sum of dt·A
      const float A = p.A[h];
      float carry = 0.f;
      for (int base = 0; base < Lp; base += 32) {
        float v = base + lane < Lp ? dts[base + lane] * A : 0.f;
        for (int o = 1; o < 32; o <<= 1) {
          const float w = __shfl_up_sync(0xffffffffu, v, o);
          if (lane >= o) v += w;
        }
        v += carry;
        if (base + lane < Lp) cum[base + lane] = v;
        carry = __shfl_sync(0xffffffffu, v, 31);
      }
    }
    __syncthreads();
    for (int l = tid; l < Lp; l += blockDim.x) {
      const float cl = cum[l];
      wst[l] = __expf(cum[Lp - 1] - cl) * dts[l];
      ecum[l] = __expf(cl);
      er[l] = __expf(cl - cum[l & ~15]);
    }
    for (int i = tid; i < Mt * Lp; i += blockDim.x) {
      const int mi = i / Lp, s = i % Lp;
      F[i] = s < 16 * mi ? __expf(cum[16 * mi] - cum[s]) * dts[s] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();
    // B rounded to TF32 in place (read as raw bits below). In the Nano instance B also carries the
    // S_loc weights, so step 2 reads x unscaled; the generic kernel scales x in step 2 (its
    // rounding as before this instance existed).
    for (int l = warp; l < Lp; l += WARPS) {
      const float w = FP ? wst[l] : 1.f;
      float* row = R1 + l * ldb;
      for (int n = lane; n < Np; n += 32) row[n] = __uint_as_float((__float_as_uint(row[n] * w) + 0x1000u) & 0xffffe000u);
    }
    __syncthreads();

    // 2. S_loc = Xwᵀ B (Nano instance: Xᵀ (diag(w) B)): warp tile rows p ∈ [pb, pb+32), columns n ∈ [nb, nb+32), K = l.
    Acc acc1;
    const int nb_tiles = (Np + 31) / 32;
    const int pb = (warp / nb_tiles) * 32, nb = (warp % nb_tiles) * 32;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int nj = 0; nj < 4; ++nj)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc1[mi][nj][q] = 0.f;
    if (warp < n_state) {
#pragma unroll 2
      for (int l0 = 0; l0 < klen; l0 += 8) {
        const float* xa = Xs + (l0 + t4) * ldx + pb + g8;
        const float* xb = xa + 4 * ldx;
        const float wa = FP ? 1.f : wst[l0 + t4], wb = FP ? 1.f : wst[l0 + t4 + 4];
        uint32_t a[2][4], bf[4][2];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          a[mi][0] = to_tf32(FP ? xa[16 * mi] : xa[16 * mi] * wa);
          a[mi][1] = to_tf32(FP ? xa[16 * mi + 8] : xa[16 * mi + 8] * wa);
          a[mi][2] = to_tf32(FP ? xb[16 * mi] : xb[16 * mi] * wb);
          a[mi][3] = to_tf32(FP ? xb[16 * mi + 8] : xb[16 * mi + 8] * wb);
        }
        const float* ba = R1 + (l0 + t4) * ldb + nb + g8;
#pragma unroll
        for (int nj = 0; nj < 4; ++nj) {
          bf[nj][0] = __float_as_uint(ba[8 * nj]);
          bf[nj][1] = __float_as_uint(ba[4 * ldb + 8 * nj]);
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
          if (pb + 16 * mi < Pp)
#pragma unroll
            for (int nj = 0; nj < 4; ++nj)
              if (nb + 8 * nj < Np) mma_tf32(acc1[mi][nj], a[mi], bf[nj]);
      }
    }
    __syncthreads();  // B is done with: CB takes its buffer
    load_tile_async<4>(R1, ldw, Lp, Lp, cb + (static_cast<int64_t>(g) * b.rows + rb) * Lp, Lp, clen, Lp, /*lower_tiles=*/true);
    cp_async_commit();

    // 3. Y = D x + W X: warp tile rows l ∈ [32·rblk, +32) (two m16 tiles), columns p ∈ [pc, pc+32).
    // Row blocks snake across the column blocks so that warps w and w+4 (one scheduler) get a
    // short and a long causal row block.
    Acc acc2;
    const int rblocks = (Mt + 1) / 2, cblk = warp / rblocks, rr = warp % rblocks;
    const int rblk = (cblk & 1) ? rblocks - 1 - rr : rr, pc = cblk * 32;
    const bool out_warp = warp < n_out;
    const float Dh = p.D[h];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int nj = 0; nj < 4; ++nj)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int l = 32 * rblk + 16 * mi + g8 + (q >> 1) * 8, pp = pc + 8 * nj + 2 * t4 + (q & 1);
          acc2[mi][nj][q] = out_warp && l < Lp && pp < Pp ? Dh * Xs[l * ldx + pp] : 0.f;
        }
    cp_async_wait<0>();
    __syncthreads();
    if (out_warp) {
      const int i_last = min(2 * rblk + 1, Mt - 1);
      const int kend = min(16 * (i_last + 1), klen);
#pragma unroll 2
      for (int s0 = 0; s0 < kend; s0 += 8) {
        uint32_t bf[4][2];
        const float* xa = Xs + (s0 + t4) * ldx + pc + g8;
#pragma unroll
        for (int nj = 0; nj < 4; ++nj) {
          bf[nj][0] = to_tf32(xa[8 * nj]);
          bf[nj][1] = to_tf32(xa[4 * ldx + 8 * nj]);
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          const int i = 2 * rblk + mi;
          if (i >= Mt || s0 >= 16 * i + 16 || 16 * i >= clen) continue;
          const int la = 16 * i + g8, lb = la + 8, sa = s0 + t4, sb = sa + 4;
          const float* wa = R1 + la * ldw;
          const float* wb = R1 + lb * ldw;
          uint32_t a[4];
          if (s0 < 16 * i) {  // below the diagonal tile: both decay factors ≤ 1
            const float ea = er[la], eb = er[lb], fa = F[i * Lp + sa], fb = F[i * Lp + sb];
            a[0] = to_tf32(wa[sa] * ea * fa);
            a[1] = to_tf32(wb[sa] * eb * fa);
            a[2] = to_tf32(wa[sb] * ea * fb);
            a[3] = to_tf32(wb[sb] * eb * fb);
          } else {  // the diagonal tile: causal mask, direct decays (cum_l − cum_s ≤ 0)
            const float ca = cum[la], cbv = cum[lb], da = dts[sa], db = dts[sb], csa = cum[sa], csb = cum[sb];
            a[0] = to_tf32(sa <= la ? wa[sa] * __expf(ca - csa) * da : 0.f);
            a[1] = to_tf32(sa <= lb ? wb[sa] * __expf(cbv - csa) * da : 0.f);
            a[2] = to_tf32(sb <= la ? wa[sb] * __expf(ca - csb) * db : 0.f);
            a[3] = to_tf32(sb <= lb ? wb[sb] * __expf(cbv - csb) * db : 0.f);
          }
#pragma unroll
          for (int nj = 0; nj < 4; ++nj)
            if (pc + 8 * nj < Pp) mma_tf32(acc2[mi][nj], a, bf[nj]);
        }
      }
    }
    __syncthreads();  // x and CB are done with: S_in and C take their buffers
    load_tile_async<VEC>(R1, ldc, Lp, Np, rows + I + (G + g) * N, p.xbc_stride, clen, N);
    cp_async_commit();

    // 4. The chain: S_in from the slot (written by the previous chunk's item of this head, or the
    // initial state) into shared memory for step 5; S_out = e^{cum_last}·S_in + S_loc written over it.
    if (c > 0 && tid == 0) {
      const int r = hl % L, want = (hpg - 1 - r) / L + 1;
      const int* flag = flags + static_cast<int64_t>(g) * b.rows + (rb - L) + r;
      while (ld_acquire(flag) < want) {
      }
    }
    __syncthreads();
    float* gst = p.state + (static_cast<int64_t>(b.seq_slot[seq]) * p.nheads + h) * P * N;
    load_tile_async<VEC>(Ss, lds, Pp, Np, gst, N, P, N);
    cp_async_commit();
    cp_async_wait<0>();  // C and S_in
    __syncthreads();
    if (warp < n_state) {
      const float e_last = __expf(cum[Lp - 1]);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int nj = 0; nj < 4; ++nj)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int pr = pb + 16 * mi + g8 + half * 8, nc = nb + 8 * nj + 2 * t4;
            if (pr >= P || nc >= N) continue;
            float* sin = Ss + pr * lds + nc;
            const float s0 = sin[0], s1 = sin[1];
            sin[0] = __uint_as_float(to_tf32(s0) & 0xffffe000u);  // step 5 reads S_in as raw TF32 bits
            sin[1] = __uint_as_float(to_tf32(s1) & 0xffffe000u);
            const float o0 = e_last * s0 + acc1[mi][nj][2 * half], o1 = e_last * s1 + acc1[mi][nj][2 * half + 1];
            float* dst = gst + pr * N + nc;
            if (vec_state) {
              *reinterpret_cast<float2*>(dst) = make_float2(o0, o1);
            } else {
              dst[0] = o0;
              if (nc + 1 < N) dst[1] = o1;
            }
          }
      __threadfence();
    }
    __syncthreads();
    if (!last && tid == 0) atomicAdd(flags + static_cast<int64_t>(g) * b.rows + rb + hl % L, 1);

    // 5. Y += C' S_inᵀ (K = n), then y = Y.
    if (out_warp) {
#pragma unroll 2
      for (int k0 = 0; k0 < Np; k0 += 8) {
        uint32_t bf[4][2];
        const float* sa = Ss + (pc + g8) * lds + k0 + t4;
#pragma unroll
        for (int nj = 0; nj < 4; ++nj) {
          bf[nj][0] = __float_as_uint(sa[8 * nj * lds]);
          bf[nj][1] = __float_as_uint(sa[8 * nj * lds + 4]);
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          const int i = 2 * rblk + mi;
          if (i >= Mt || 16 * i >= clen) continue;
          const int la = 16 * i + g8, lb = la + 8;
          const float ea = ecum[la], eb = ecum[lb];
          const float* ca = R1 + la * ldc + k0 + t4;
          const float* cbp = R1 + lb * ldc + k0 + t4;
          const uint32_t a[4] = {to_tf32(ca[0] * ea), to_tf32(cbp[0] * eb), to_tf32(ca[4] * ea), to_tf32(cbp[4] * eb)};
#pragma unroll
          for (int nj = 0; nj < 4; ++nj)
            if (pc + 8 * nj < Pp) mma_tf32(acc2[mi][nj], a, bf[nj]);
        }
      }
      float* yh = p.y + rb * I + static_cast<int64_t>(h) * P;
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int nj = 0; nj < 4; ++nj)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int l = 32 * rblk + 16 * mi + g8 + half * 8, pp = pc + 8 * nj + 2 * t4;
            if (l >= clen || pp >= P) continue;
            float* dst = yh + static_cast<int64_t>(l) * I + pp;
            if (vec_y) {
              *reinterpret_cast<float2*>(dst) = make_float2(acc2[mi][nj][2 * half], acc2[mi][nj][2 * half + 1]);
            } else {
              dst[0] = acc2[mi][nj][2 * half];
              if (pp + 1 < P) dst[1] = acc2[mi][nj][2 * half + 1];
            }
          }
    }
    __syncthreads();  // the next item's loads overwrite every buffer
    if (tid == 0) s_ticket = next_ticket;
  }
}

// ---- The Nano shape on Hopper wgmma (head 64, state 128, chunk 128, 16-byte aligned rows).
// Same items, tickets, chain and decay tables as ssd_chunk_kernel; the three products run as
// wgmma m64n64k8 TF32 with A from registers (computed as the mma.sync fragments were) and B from
// shared memory. TF32 B operands must be K-major, and K is the token for x (steps 2 and 3) and the
// state column for S_in (step 5), so x is stored transposed and S_in as it is, both in the
// no-swizzle core-matrix layout: element (row r, k) at (r/8)·SBO + (k/4)·LBO + (r%8)·16 + (k%4)·4
// bytes, LBO = 128 (core matrices along K adjacent), SBO = 4096 (K = 128 values per 8-row group).
// Warpgroup j (warps 4j..4j+3) takes output rows 64j..64j+63: state columns n of S_locᵀ in step 2,
// tokens l of Y in steps 3 and 5; warp w of a warpgroup its 16 rows 16w.., as the m64 fragments.
namespace wg {

constexpr int P = 64, N = 128, L = 128;
constexpr int LDB = N + 8, LDW = L + 4, LDC = N + 4;  // row strides of B, CB, C (as ssd_chunk_kernel)
constexpr int KT = 128;                                // K extent of both tiled operands (tokens, state)
constexpr int R1_OFF = P * KT;                         // x transposed, then S_in (P × 128 floats)
constexpr int TAB_OFF = R1_OFF + L * LDB;
constexpr int TOTAL = TAB_OFF + 5 * L + (L / 16) * L;  // dt, cum, w_state, e^{cum}, e^{cum − cum_r}, F
#ifndef LM_SSD_WG_SWAP
constexpr int LBO = 128, SBO = 4096;
#else
constexpr int LBO = 4096, SBO = 128;
#endif

/** Float offset of (row r, k) in a tiled K-major operand (K = 128). */
__device__ __forceinline__ int tiled(int r, int k) { return (r >> 3) * (KT * 8) + (k >> 2) * 32 + (r & 7) * 4 + (k & 3); }

__device__ __forceinline__ uint64_t desc(const float* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return static_cast<uint64_t>((a >> 4) & 0x3FFF) | (static_cast<uint64_t>(LBO >> 4) << 16) | (static_cast<uint64_t>(SBO >> 4) << 32);
}
// The wgmma instructions exist in sm_90a code only (the CMake default); built for anything else
// the kernel traps, and use_wgmma() keeps it off devices other than compute capability 9.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#else
__device__ __forceinline__ void proxy_fence() {}
__device__ __forceinline__ void fence() { __trap(); }
__device__ __forceinline__ void commit() {}
__device__ __forceinline__ void wait_all() {}
#endif
/** Keeps the compiler from moving accumulator accesses across the asynchronous products. */
__device__ __forceinline__ void pin(float (&d)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define LM_SSD_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
/** d += a · B, m64n64k8, TF32, A from registers (fragment layout of mma.m16n8k8 per warp), B by descriptor. */
__device__ __forceinline__ void mma(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1;\n}\n"
      : LM_SSD_D8(0), LM_SSD_D8(8), LM_SSD_D8(16), LM_SSD_D8(24)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
#endif
}
#undef LM_SSD_D8

/** Products over K in groups of 4 k8 steps: A fragments first, then the 4 wgmmas, then the wait. */
template <class FragA>
__device__ __forceinline__ void products(float (&d)[32], const float* b_tiles, int ksteps, FragA frag) {
  for (int k0 = 0; k0 < ksteps; k0 += 4) {
    uint32_t a[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) frag(8 * (k0 + kk), a[kk]);
    pin(d);
    fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) mma(d, a[kk], desc(b_tiles + (k0 + kk) * 64));
    commit();
    wait_all();
    pin(d);
  }
}

}  // namespace wg

__global__ void __launch_bounds__(256, 2) ssd_chunk_wg_kernel(BatchView b, SsmParams p, const float* cb, int* flags, int* ticket, bool vec_y) {
  using namespace wg;
  extern __shared__ __align__(128) float smem[];
  __shared__ int s_ticket, s_next_ticket;
  __shared__ int2 s_chunk, s_next_chunk;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g8 = lane >> 2, t4 = lane & 3;
  const int grp = warp >> 2, r0 = 64 * grp + 16 * (warp & 3);  // warpgroup, first of the warp's 16 rows
  const int G = p.ngroups, hpg = p.nheads / G, I = p.nheads * P;
  float* XT = smem;  // x transposed (P × tokens, tiled), then S_in (P × N, tiled)
  float* R1 = smem + R1_OFF;
  float* dts = smem + TAB_OFF;
  float* cum = dts + L;
  float* wst = cum + L;
  float* ecum = wst + L;
  float* er = ecum + L;
  float* F = er + L;
  const int items = (warp == 0 ? count_chunks(b, L) : 0) * p.nheads;
  // The next item's ticket is taken in step 1 and located by warp 0 before it waits on the chain
  // (step 4), so an item starts with one barrier.
  int next_ticket = 0;
  if (warp == 0) {
    const int t0 = __shfl_sync(0xffffffffu, lane == 0 ? atomicAdd(ticket, 1) : 0, 0);
    const int2 sc = t0 < items ? locate_chunk(b, L, t0 / p.nheads) : make_int2(-1, -1);
    if (lane == 0) s_ticket = t0, s_chunk = sc;
  }
  for (;;) {
    __syncthreads();
    const int t = s_ticket;
    const int seq = s_chunk.x;
    if (seq < 0) break;
    const int c = s_chunk.y, h = t % p.nheads, g = h / hpg, hl = h % hpg;
    const int len = b.seq_len[seq], clen = min(L, len - c * L);
    const int ksteps = (clen + 31) / 32 * 4;  // k8 steps over the chunk's tokens, whole groups of 4
    const bool last = (c + 1) * L >= len;
    const int64_t rb = b.seq_row0[seq] + static_cast<int64_t>(c) * L;

    // 1. B streams in; x into registers (lanes along p, 4 tokens each), transposed into XT below.
    const float* rows = p.xbc + rb * p.xbc_stride;
    load_tile_async<4>(R1, LDB, L, N, rows + I + g * N, p.xbc_stride, clen, N);
    cp_async_commit();
    if (tid == 0) next_ticket = atomicAdd(ticket, 1);
    const int xp = tid & 63, xq = tid >> 6;
    float xv[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int l = 4 * (xq + 4 * j) + i;
        xv[j][i] = l < clen ? rows[static_cast<int64_t>(l) * p.xbc_stride + h * P + xp] : 0.f;
      }
    for (int l = tid; l < L; l += blockDim.x) dts[l] = l < clen ? ssd_dt(p, rb + l, h) : 0.f;
    __syncthreads();
    if (warp == 0) {
      const float A = p.A[h];
      float carry = 0.f;
      for (int base = 0; base < L; base += 32) {
        float v = dts[base + lane] * A;
        for (int o = 1; o < 32; o <<= 1) {
          const float w = __shfl_up_sync(0xffffffffu, v, o);
          if (lane >= o) v += w;
        }
        v += carry;
        cum[base + lane] = v;
        carry = __shfl_sync(0xffffffffu, v, 31);
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float4 v;
      v.x = __uint_as_float((__float_as_uint(xv[j][0]) + 0x1000u) & 0xffffe000u);
      v.y = __uint_as_float((__float_as_uint(xv[j][1]) + 0x1000u) & 0xffffe000u);
      v.z = __uint_as_float((__float_as_uint(xv[j][2]) + 0x1000u) & 0xffffe000u);
      v.w = __uint_as_float((__float_as_uint(xv[j][3]) + 0x1000u) & 0xffffe000u);
      *reinterpret_cast<float4*>(XT + tiled(xp, 4 * (xq + 4 * j))) = v;
    }
    __syncthreads();
    for (int l = tid; l < L; l += blockDim.x) {
      const float cl = cum[l];
      wst[l] = __expf(cum[L - 1] - cl) * dts[l];
      ecum[l] = __expf(cl);
      er[l] = __expf(cl - cum[l & ~15]);
    }
    for (int i = tid; i < (L / 16) * L; i += blockDim.x) {
      const int mi = i / L, s = i % L;
      F[i] = s < 16 * mi ? __expf(cum[16 * mi] - cum[s]) * dts[s] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();
    for (int l = warp; l < L; l += 8) {  // B·diag(w_state), TF32
      const float w = wst[l];
      float* row = R1 + l * LDB;
      for (int n = lane; n < N; n += 32) row[n] = __uint_as_float((__float_as_uint(row[n] * w) + 0x1000u) & 0xffffe000u);
    }
    proxy_fence();  // XT was written through the generic proxy; wgmma reads it through the async one
    __syncthreads();

    // 2. S_locᵀ (N × P) = (diag(w) B)ᵀ X: rows n ∈ [r0, r0+16) of this warp, K = tokens.
    float acc1[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) acc1[i] = 0.f;
    products(acc1, XT, ksteps, [&](int k0, uint32_t(&a)[4]) {
      const float* ba = R1 + (k0 + t4) * LDB + r0 + g8;
      a[0] = __float_as_uint(ba[0]);
      a[1] = __float_as_uint(ba[8]);
      a[2] = __float_as_uint(ba[4 * LDB]);
      a[3] = __float_as_uint(ba[4 * LDB + 8]);
    });
    __syncthreads();  // B is done with: CB takes its buffer
    load_tile_async<4>(R1, LDW, L, L, cb + (static_cast<int64_t>(g) * b.rows + rb) * L, L, clen, L, /*lower_tiles=*/true);
    cp_async_commit();

    // 3. Y = D x + W X: rows l ∈ [r0, r0+16), K = tokens s < 64·(grp+1).
    float acc2[32];
    const float Dh = p.D[h];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc2[4 * j + q] = Dh * XT[tiled(8 * j + 2 * t4 + (q & 1), r0 + g8 + 8 * (q >> 1))];
    cp_async_wait<0>();
    __syncthreads();
    {
      const int i = r0 / 16, la = r0 + g8, lb = la + 8;
      const float* wa = R1 + la * LDW;
      const float* wb = R1 + lb * LDW;
      const float ea = er[la], eb = er[lb], ca = cum[la], cbv = cum[lb];
      products(acc2, XT, min(ksteps, 8 * (grp + 1)), [&](int s0, uint32_t(&a)[4]) {
        const int sa = s0 + t4, sb = sa + 4;
        if (s0 < 16 * i) {  // below the diagonal tile: both decay factors ≤ 1
          const float fa = F[i * L + sa], fb = F[i * L + sb];
          a[0] = to_tf32(wa[sa] * ea * fa);
          a[1] = to_tf32(wb[sa] * eb * fa);
          a[2] = to_tf32(wa[sb] * ea * fb);
          a[3] = to_tf32(wb[sb] * eb * fb);
        } else if (s0 < 16 * i + 16) {  // the diagonal tile: causal mask, direct decays
          const float da = dts[sa], db = dts[sb], csa = cum[sa], csb = cum[sb];
          a[0] = to_tf32(sa <= la ? wa[sa] * __expf(ca - csa) * da : 0.f);
          a[1] = to_tf32(sa <= lb ? wb[sa] * __expf(cbv - csa) * da : 0.f);
          a[2] = to_tf32(sb <= la ? wa[sb] * __expf(ca - csb) * db : 0.f);
          a[3] = to_tf32(sb <= lb ? wb[sb] * __expf(cbv - csb) * db : 0.f);
        } else {  // above the diagonal
          a[0] = a[1] = a[2] = a[3] = 0u;
        }
      });
    }
    __syncthreads();  // x and CB are done with: S_in and C take their buffers
    load_tile_async<4>(R1, LDC, L, N, rows + I + (G + g) * N, p.xbc_stride, clen, N);
    cp_async_commit();

    // 4. The chain (as ssd_chunk_kernel), kept short: once the flag is seen each thread reads its
    // own S_in elements from L2 into registers, writes S_out = e·S_in + S_loc and fences; S_in goes
    // to XT (tiled, TF32) for step 5 after the flag is published.
    if (warp == 0) {
      const int nt = __shfl_sync(0xffffffffu, next_ticket, 0);
      const int2 sc = nt < items ? locate_chunk(b, L, nt / p.nheads) : make_int2(-1, -1);
      if (lane == 0) s_next_ticket = nt, s_next_chunk = sc;
      if (c > 0 && lane == 0) {
        const int r = hl % L, want = (hpg - 1 - r) / L + 1;
        const int* flag = flags + static_cast<int64_t>(g) * b.rows + (rb - L) + r;
        while (ld_acquire(flag) < want) {
        }
      }
    }
    __syncthreads();
    float* gst = p.state + (static_cast<int64_t>(b.seq_slot[seq]) * p.nheads + h) * P * N;
    float sin[32];
    {
      const float e_last = __expf(cum[L - 1]);
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) sin[4 * j + q] = __ldcg(gst + (8 * j + 2 * t4 + (q & 1)) * N + r0 + g8 + 8 * (q >> 1));
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) gst[(8 * j + 2 * t4 + (q & 1)) * N + r0 + g8 + 8 * (q >> 1)] = e_last * sin[4 * j + q] + acc1[4 * j + q];
      __threadfence();
    }
    __syncthreads();
    if (!last && tid == 0) atomicAdd(flags + static_cast<int64_t>(g) * b.rows + rb + hl % L, 1);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) XT[tiled(8 * j + 2 * t4 + (q & 1), r0 + g8 + 8 * (q >> 1))] = __uint_as_float(to_tf32(sin[4 * j + q]) & 0xffffe000u);
    cp_async_wait<0>();  // C
    proxy_fence();
    __syncthreads();

    // 5. Y += C' S_inᵀ (K = n), then y = Y.
    {
      const int la = r0 + g8, lb = la + 8;
      const float ea = ecum[la], eb = ecum[lb];
      const float* ca = R1 + la * LDC + t4;
      const float* cbp = R1 + lb * LDC + t4;
      products(acc2, XT, N / 8, [&](int k0, uint32_t(&a)[4]) {
        a[0] = to_tf32(ca[k0] * ea);
        a[1] = to_tf32(cbp[k0] * eb);
        a[2] = to_tf32(ca[k0 + 4] * ea);
        a[3] = to_tf32(cbp[k0 + 4] * eb);
      });
    }
    float* yh = p.y + rb * I + static_cast<int64_t>(h) * P;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int l = r0 + g8 + 8 * half, pp = 8 * j + 2 * t4;
        if (l >= clen) continue;
        float* dst = yh + static_cast<int64_t>(l) * I + pp;
        if (vec_y) {
          *reinterpret_cast<float2*>(dst) = make_float2(acc2[4 * j + 2 * half], acc2[4 * j + 2 * half + 1]);
        } else {
          dst[0] = acc2[4 * j + 2 * half];
          dst[1] = acc2[4 * j + 2 * half + 1];
        }
      }
    __syncthreads();
    if (tid == 0) s_ticket = s_next_ticket, s_chunk = s_next_chunk;
  }
}

int multiprocessors() {
  int dev = 0, sms = 0;
  LM_CUDA_CHECK(cudaGetDevice(&dev));
  LM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

/** Persistent grid: as many blocks as fit on every SM at once (an item may wait on an earlier one). */
template <class Kernel>
int resident_blocks(Kernel kernel, int threads, size_t smem, int sms) {
  LM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  LM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  if (per_sm < 1) throw Error("ssd_chunked_scan: a block does not fit on an SM");
  return per_sm * sms;
}

template <int WARPS, int VEC, int FP = 0, int FN = 0, int FL = 0>
void launch_chunks(const BatchView& b, const SsmParams& p, int L, int Pp, int Np, int Lp, const float* cb, int* flags, int* ticket, int sms, cudaStream_t s) {
  auto kernel = ssd_chunk_kernel<WARPS, VEC, FP, FN, FL>;
  const size_t smem = chunk_layout(Pp, Np, Lp).total * sizeof(float);
  const int grid = resident_blocks(kernel, WARPS * 32, smem, sms);
  const bool vec_y = p.head_dim % 2 == 0 && (reinterpret_cast<uintptr_t>(p.y) & 7) == 0;
  const bool vec_state = p.dstate % 2 == 0 && (reinterpret_cast<uintptr_t>(p.state) & 7) == 0;
  kernel<<<grid, WARPS * 32, smem, s>>>(b, p, L, Pp, Np, Lp, cb, flags, ticket, vec_y, vec_state);
  LM_LAUNCH_CHECK("ssd_chunked_scan (chunks)");
}

/** wgmma needs sm_90 (the kernels are built for sm_90a); LM_SSD_WGMMA=0 takes the mma.sync path (A/B timing). */
bool use_wgmma() {
  static const bool on = [] {
    int dev = 0, major = 0;
    LM_CUDA_CHECK(cudaGetDevice(&dev));
    LM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    const char* env = std::getenv("LM_SSD_WGMMA");
    return major == 9 && !(env != nullptr && env[0] == '0');
  }();
  return on;
}

template <int VEC>
void launch_all(const BatchView& b, const SsmParams& p, int L, float* ws, cudaStream_t s) {
  const int Lp = round16(L), Np = round16(p.dstate), Pp = round16(p.head_dim), sms = multiprocessors();
  float* cb = ws;
  int* flags = reinterpret_cast<int*>(ws + static_cast<int64_t>(p.ngroups) * b.rows * Lp);
  int* ticket = flags + static_cast<int64_t>(p.ngroups) * b.rows;
  const size_t cb_smem = cb_smem_floats(Np, Lp) * sizeof(float);
  const int cb_grid = resident_blocks(ssd_cb_kernel<VEC>, SSD_THREADS, cb_smem, sms);
  ssd_cb_kernel<VEC><<<cb_grid, SSD_THREADS, cb_smem, s>>>(b, p, L, Lp, Np, cb, flags, ticket);
  LM_LAUNCH_CHECK("ssd_chunked_scan (CB)");
  const bool nano = p.head_dim == 64 && p.dstate == 128 && L == 128;
  if (nano && VEC == 4 && use_wgmma()) {
    const size_t smem = wg::TOTAL * sizeof(float);
    const int grid = resident_blocks(ssd_chunk_wg_kernel, 256, smem, sms);
    const bool vec_y = (reinterpret_cast<uintptr_t>(p.y) & 7) == 0;
    ssd_chunk_wg_kernel<<<grid, 256, smem, s>>>(b, p, cb, flags, ticket, vec_y);
    LM_LAUNCH_CHECK("ssd_chunked_scan (chunks, wgmma)");
  } else if (nano) launch_chunks<8, VEC, 64, 128, 128>(b, p, L, Pp, Np, Lp, cb, flags, ticket, sms, s);
  else if (chunk_kernel_fits(8, Pp, Np, Lp)) launch_chunks<8, VEC>(b, p, L, Pp, Np, Lp, cb, flags, ticket, sms, s);
  else launch_chunks<16, VEC>(b, p, L, Pp, Np, Lp, cb, flags, ticket, sms, s);
}

}  // namespace

bool ssd_chunked_supported(int head_dim, int dstate, int chunk_size) {
  if (head_dim < 1 || dstate < 1 || chunk_size < 1) return false;
  const int Np = round16(dstate), Lp = round16(chunk_size), Pp = round16(head_dim);
  return chunk_kernel_fits(16, Pp, Np, Lp) && cb_smem_floats(Np, Lp) * sizeof(float) <= SMEM_LIMIT;
}

int64_t ssd_chunked_workspace_floats(int rows, int ngroups, int chunk_size) {
  const int64_t per_group = static_cast<int64_t>(rows) * (round16(chunk_size) + 1);  // CB rows and flags
  return ngroups * per_group + FLAG_TAIL;
}

void ssd_chunked_scan(const BatchView& b, const SsmParams& p, int chunk_size, float* workspace, cudaStream_t s) {
  if (b.nseq == 0 || b.max_len <= SSM_RECURRENT_MAX_LEN) return;
  if (!ssd_chunked_supported(p.head_dim, p.dstate, chunk_size)) throw Error("ssd_chunked_scan: head_dim, ssm_state_size or chunk_size too large for shared memory");
  if (p.ngroups < 1 || p.nheads % p.ngroups != 0) throw Error("ssd_chunked_scan: mamba_num_heads must be a multiple of n_groups");
  if (workspace == nullptr) throw Error("ssd_chunked_scan: no workspace");
  // 16-byte copies need every row segment (x of a head, B and C of a group, a state row) 16-byte aligned.
  const bool vec4 = p.xbc_stride % 4 == 0 && p.head_dim % 4 == 0 && p.dstate % 4 == 0 && reinterpret_cast<uintptr_t>(p.xbc) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(p.state) % 16 == 0;
  if (use_wgmma() && ssd_scan_wg_fits(p)) {  // opt-in (LM_SSD_SCAN=wg): the Nano shape without a chain between blocks
    ssd_scan_wg(b, p, s);
    return;
  }
  if (vec4) launch_all<4>(b, p, chunk_size, workspace, s);
  else launch_all<1>(b, p, chunk_size, workspace, s);
}

}  // namespace lm::cuda
