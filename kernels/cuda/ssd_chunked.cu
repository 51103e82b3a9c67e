// Mamba-2 SSD chunked scan for prefill (the math of cpu::ssd_chunked_scan), fp32 state.
// Per head h (group g), chunk of L tokens starting at t0, cum_l = Σ_{j≤l} dt_j·A_h:
//   CB[l, s]  = C_l · B_s                                            (per group, ssd_cb_kernel)
//   y_l       = e^{cum_l} C_l · S_in  +  Σ_{s≤l} CB[l,s] e^{cum_l − cum_s} dt_s x_s  +  D x_l
//   S_out     = e^{cum_{L−1}} S_in  +  Σ_s e^{cum_{L−1} − cum_s} dt_s x_s ⊗ B_s
// In matrix form, with C' = diag(e^{cum}) C, W = (CB ∘ decay ∘ causal mask) · diag(dt) and
// Xw = diag(e^{cum_{L−1} − cum} dt) X:   Y = C' Sᵀ + W X ,   S ← e^{cum_{L−1}} S + Xwᵀ B.
//
// Two kernels:
//  - ssd_cb_kernel, grid (chunks of the longest sequence, sequences, groups): CB of one chunk on
//    tensor cores into the workspace (ngroups, rows, Lp), lower triangle and valid rows only.
//  - ssd_chunk_scan_kernel<PT>, grid (sequences, heads, ⌈P/PT⌉): one block owns PT rows of one
//    head's state (PT × N, in shared memory across the chunks) and walks its sequence chunk by
//    chunk: dt and cum (warp scan), then Y = C'Sᵀ + WX and S ← e·S + XwᵀB as 16×16×8 TF32 wmma
//    products with fp32 accumulation. State rows p are independent, so heads split over blocks.
// Shapes: x (R, conv_dim) row stride xbc_stride with x | B | C; y (R, nheads·P); state (slots,
// nheads, P, N). Any P, N and chunk: tiles are zero-padded to multiples of 16 in shared memory.
// Sequences of one row are skipped (the recurrent ssm_scan does them).
// Rounding: operands are rounded to TF32 (10-bit mantissa) inside the products; sums, decays and
// the state stay fp32, and the state is never rounded between chunks.
#include <mma.h>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {

using namespace nvcuda;

constexpr int SSD_THREADS = 512;
constexpr int PAD = 4;                     // floats of row padding: spreads banks, keeps 32-byte tile alignment
constexpr size_t SMEM_LIMIT = 227 * 1024;  // sm_90 opt-in shared memory per block

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

int round16(int v) { return (v + 15) / 16 * 16; }

/** Shared-memory floats of the scan kernel for PT state rows. */
size_t scan_smem_floats(int PT, int Np, int Lp) {
  const size_t ldn = Np + PAD, ldp = PT + PAD, ldl = Lp + PAD;
  return PT * ldn + 3 * Lp * ldp + Lp * ldn + Lp * ldl + 3 * Lp;
}
size_t cb_smem_floats(int Np, int Lp) { return 2 * static_cast<size_t>(Lp) * (Np + PAD) + (SSD_THREADS / 32) * 256; }

template <class Frag>
__device__ __forceinline__ void to_tf32(Frag& f) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

/** Async global → shared copy of VEC floats (16 bytes with .cg, or 4); zero-fills when !valid. */
template <int VEC>
__device__ __forceinline__ void cp_async(float* dst, const float* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  if constexpr (VEC == 4) asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
  else asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

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

__device__ __forceinline__ float ssd_dt(const SsmParams& p, int64_t r, int h) {
  const float d = softplus(p.dt_raw[r * p.dt_stride + h] + p.dt_bias[h]);
  return fminf(fmaxf(d, p.dt_min), p.dt_max);
}

template <int VEC>
__global__ void __launch_bounds__(SSD_THREADS) ssd_cb_kernel(BatchView b, SsmParams p, int L, int Lp, int Np, float* cb) {
  extern __shared__ __align__(128) float smem[];
  const int c = blockIdx.x, seq = blockIdx.y, g = blockIdx.z;
  const int len = b.seq_len[seq], t0 = c * L;
  if (len <= SSM_RECURRENT_MAX_LEN || t0 >= len) return;
  const int clen = min(L, len - t0), N = p.dstate, ldn = Np + PAD, I = p.nheads * p.head_dim;
  const int64_t rb = b.seq_row0[seq] + t0;
  float* Cs = smem;              // (Lp, ldn)
  float* Bs = Cs + Lp * ldn;     // (Lp, ldn)
  float* stage = Bs + Lp * ldn;  // (warps, 16, 16)
  const float* rows = p.xbc + rb * p.xbc_stride + I;
  load_tile_async<VEC>(Bs, ldn, Lp, Np, rows + g * N, p.xbc_stride, clen, N);
  load_tile_async<VEC>(Cs, ldn, Lp, Np, rows + (p.ngroups + g) * N, p.xbc_stride, clen, N);
  cp_async_wait_all();
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5, T = Lp / 16;
  float* st = stage + warp * 256;
  for (int tile = warp; tile < T * T; tile += nwarps) {
    const int ti = tile / T, tj = tile % T;
    if (tj > ti || ti * 16 >= clen) continue;
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
    for (int k = 0; k < Np; k += 8) {
      FragA a;
      FragBT bt;  // Bᵀ: element (n, s) at Bs[s·ldn + n]
      wmma::load_matrix_sync(a, Cs + ti * 16 * ldn + k, ldn);
      wmma::load_matrix_sync(bt, Bs + tj * 16 * ldn + k, ldn);
      to_tf32(a);
      to_tf32(bt);
      wmma::mma_sync(acc, a, bt, acc);
    }
    wmma::store_matrix_sync(st, acc, 16, wmma::mem_row_major);
    __syncwarp();
    for (int i = lane; i < 256; i += 32) {
      const int l = ti * 16 + i / 16;
      if (l < clen) cb[(static_cast<int64_t>(g) * b.rows + rb + l) * Lp + tj * 16 + i % 16] = st[i];
    }
    __syncwarp();
  }
}

template <int PT, int VEC>
__global__ void __launch_bounds__(SSD_THREADS) ssd_chunk_scan_kernel(BatchView b, SsmParams p, int L, int Lp, int Np, const float* cb) {
  extern __shared__ __align__(128) float smem[];
  const int seq = blockIdx.x, h = blockIdx.y, p0 = blockIdx.z * PT;
  const int len = b.seq_len[seq];
  if (len <= SSM_RECURRENT_MAX_LEN) return;
  const int P = p.head_dim, N = p.dstate, G = p.ngroups, g = h / (p.nheads / G), I = p.nheads * P;
  const int ldn = Np + PAD, ldp = PT + PAD, ldl = Lp + PAD;
  float* S = smem;            // (PT, ldn)  state rows p0.., fp32 across chunks
  float* X = S + PT * ldn;    // (Lp, ldp)  x of the chunk
  float* Xw = X + Lp * ldp;   // (Lp, ldp)  e^{cum_last − cum_s} dt_s x_s
  float* Y = Xw + Lp * ldp;   // (Lp, ldp)  C'Sᵀ + WX
  float* M = Y + Lp * ldp;    // (Lp, ldn)  C' = e^{cum} C, then B
  float* W = M + Lp * ldn;    // (Lp, ldl)  CB ∘ e^{cum_l − cum_s} dt_s, causal
  float* cum = W + Lp * ldl;  // (Lp)
  float* dts = cum + Lp;      // (Lp)
  float* ecum = dts + Lp;     // (Lp)  e^{cum}
  const int64_t row0 = b.seq_row0[seq];
  float* gstate = p.state + (static_cast<int64_t>(b.seq_slot[seq]) * p.nheads + h) * P * N;
  for (int i = threadIdx.x; i < PT * Np; i += blockDim.x) {
    const int pp = i / Np, n = i % Np;
    S[pp * ldn + n] = (p0 + pp < P && n < N) ? gstate[static_cast<int64_t>(p0 + pp) * N + n] : 0.f;
  }
  const float A = p.A[h], Dh = p.D[h];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int TP = PT / 16, TL = Lp / 16, TN = Np / 16;
  for (int t0 = 0; t0 < len; t0 += L) {
    const int clen = min(L, len - t0);
    const int64_t rb = row0 + t0;
    __syncthreads();  // the previous chunk is done with every buffer
    // x, C and the chunk's CB rows stream in while dt and cum are computed.
    const float* rows = p.xbc + rb * p.xbc_stride;
    load_tile_async<VEC>(X, ldp, Lp, PT, rows + h * P + p0, p.xbc_stride, clen, P - p0);
    load_tile_async<VEC>(M, ldn, Lp, Np, rows + I + (G + g) * N, p.xbc_stride, clen, N);
    load_tile_async<4>(W, ldl, Lp, Lp, cb + (static_cast<int64_t>(g) * b.rows + rb) * Lp, Lp, clen, Lp, /*lower_tiles=*/true);
    for (int l = threadIdx.x; l < Lp; l += blockDim.x) dts[l] = l < clen ? ssd_dt(p, rb + l, h) : 0.f;  // padding: dt 0
    __syncthreads();
    if (warp == 0) {  // inclusive prefix sum of dt·A
      float carry = 0.f;
      for (int base = 0; base < Lp; base += 32) {
        const int l = base + lane;
        float v = l < Lp ? dts[l] * A : 0.f;
        for (int o = 1; o < 32; o <<= 1) {
          const float u = __shfl_up_sync(0xffffffffu, v, o);
          if (lane >= o) v += u;
        }
        v += carry;
        if (l < Lp) {
          cum[l] = v;
          ecum[l] = __expf(v);
        }
        carry = __shfl_sync(0xffffffffu, v, 31);
      }
    }
    cp_async_wait_all();
    __syncthreads();
    const float cum_last = cum[Lp - 1];
    for (int l = warp; l < Lp; l += nwarps) {
      const float f = __expf(cum_last - cum[l]) * dts[l];
      for (int pp = lane; pp < PT; pp += 32) Xw[l * ldp + pp] = f * X[l * ldp + pp];
    }
    for (int l = warp; l < clen; l += nwarps) {  // rows past clen are zero already
      const float e = ecum[l];
      for (int n = lane; n < Np; n += 32) M[l * ldn + n] *= e;
    }
    for (int l = warp; l < Lp; l += nwarps) {  // a select, not a product: unloaded tiles hold garbage
      const float cl = cum[l];
      for (int s = lane; s < Lp; s += 32) {
        float& w = W[l * ldl + s];
        w = (s <= l && l < clen) ? w * __expf(cl - cum[s]) * dts[s] : 0.f;
      }
    }
    __syncthreads();
    for (int tile = warp; tile < TL * TP; tile += nwarps) {  // Y = C'Sᵀ + WX
      const int lt = tile / TP, pt = tile % TP;
      if (lt * 16 >= clen) continue;
      FragC acc;
      wmma::fill_fragment(acc, 0.f);
      for (int k = 0; k < Np; k += 8) {
        FragA a;
        FragBT st;  // Sᵀ: element (n, p) at S[p·ldn + n]
        wmma::load_matrix_sync(a, M + lt * 16 * ldn + k, ldn);
        wmma::load_matrix_sync(st, S + pt * 16 * ldn + k, ldn);
        to_tf32(a);
        to_tf32(st);
        wmma::mma_sync(acc, a, st, acc);
      }
      for (int k = 0; k < (lt + 1) * 16; k += 8) {  // W is zero above the diagonal
        FragA a;
        FragB xb;
        wmma::load_matrix_sync(a, W + lt * 16 * ldl + k, ldl);
        wmma::load_matrix_sync(xb, X + k * ldp + pt * 16, ldp);
        to_tf32(a);
        to_tf32(xb);
        wmma::mma_sync(acc, a, xb, acc);
      }
      wmma::store_matrix_sync(Y + lt * 16 * ldp + pt * 16, acc, ldp, wmma::mem_row_major);
    }
    __syncthreads();
    load_tile_async<VEC>(M, ldn, Lp, Np, rows + I + g * N, p.xbc_stride, clen, N);  // B, under the y stores
    for (int i = threadIdx.x; i < clen * PT; i += blockDim.x) {
      const int l = i / PT, pp = i % PT;
      if (p0 + pp < P) p.y[(rb + l) * I + h * P + p0 + pp] = Y[l * ldp + pp] + Dh * X[l * ldp + pp];
    }
    cp_async_wait_all();
    __syncthreads();
    const float e_last = __expf(cum_last);
    const int klen = (clen + 7) / 8 * 8;  // rows past clen contribute zero
    for (int tile = warp; tile < TP * TN; tile += nwarps) {  // S ← e_last·S + Xwᵀ B
      const int pt = tile / TN, nt = tile % TN;
      FragC acc;
      wmma::load_matrix_sync(acc, S + pt * 16 * ldn + nt * 16, ldn, wmma::mem_row_major);
      for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= e_last;
      for (int k = 0; k < klen; k += 8) {
        FragAT xt;  // Xwᵀ: element (p, s) at Xw[s·ldp + p]
        FragB bm;
        wmma::load_matrix_sync(xt, Xw + k * ldp + pt * 16, ldp);
        wmma::load_matrix_sync(bm, M + k * ldn + nt * 16, ldn);
        to_tf32(xt);
        to_tf32(bm);
        wmma::mma_sync(acc, xt, bm, acc);
      }
      wmma::store_matrix_sync(S + pt * 16 * ldn + nt * 16, acc, ldn, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < PT * N; i += blockDim.x) {
    const int pp = i / N, n = i % N;
    if (p0 + pp < P) gstate[static_cast<int64_t>(p0 + pp) * N + n] = S[pp * ldn + n];
  }
}

/** State rows per block: 32 halves the reloads of C, B and CB per head where it fits. */
int pick_rows_per_block(int P, int Np, int Lp) {
  if (P > 16 && scan_smem_floats(32, Np, Lp) * sizeof(float) <= SMEM_LIMIT) return 32;
  return 16;
}

template <int PT, int VEC>
void launch_scan(const BatchView& b, const SsmParams& p, int L, int Lp, int Np, const float* cb, cudaStream_t s) {
  const size_t smem = scan_smem_floats(PT, Np, Lp) * sizeof(float);
  LM_CUDA_CHECK(cudaFuncSetAttribute(ssd_chunk_scan_kernel<PT, VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(b.nseq, p.nheads, ceil_div(p.head_dim, PT));
  ssd_chunk_scan_kernel<PT, VEC><<<grid, SSD_THREADS, smem, s>>>(b, p, L, Lp, Np, cb);
  LM_LAUNCH_CHECK("ssd_chunked_scan (scan)");
}

template <int VEC>
void launch_all(const BatchView& b, const SsmParams& p, int L, float* cb, cudaStream_t s) {
  const int Lp = round16(L), Np = round16(p.dstate);
  const size_t cb_smem = cb_smem_floats(Np, Lp) * sizeof(float);
  LM_CUDA_CHECK(cudaFuncSetAttribute(ssd_cb_kernel<VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(cb_smem)));
  const dim3 cb_grid(ceil_div(b.max_len, L), b.nseq, p.ngroups);
  ssd_cb_kernel<VEC><<<cb_grid, SSD_THREADS, cb_smem, s>>>(b, p, L, Lp, Np, cb);
  LM_LAUNCH_CHECK("ssd_chunked_scan (CB)");
  if (pick_rows_per_block(p.head_dim, Np, Lp) == 32) launch_scan<32, VEC>(b, p, L, Lp, Np, cb, s);
  else launch_scan<16, VEC>(b, p, L, Lp, Np, cb, s);
}

}  // namespace

bool ssd_chunked_supported(int head_dim, int dstate, int chunk_size) {
  if (head_dim < 1 || dstate < 1 || chunk_size < 1) return false;
  const int Np = round16(dstate), Lp = round16(chunk_size);
  return scan_smem_floats(16, Np, Lp) * sizeof(float) <= SMEM_LIMIT && cb_smem_floats(Np, Lp) * sizeof(float) <= SMEM_LIMIT;
}

int64_t ssd_chunked_workspace_floats(int rows, int ngroups, int chunk_size) { return static_cast<int64_t>(ngroups) * rows * round16(chunk_size); }

void ssd_chunked_scan(const BatchView& b, const SsmParams& p, int chunk_size, float* workspace, cudaStream_t s) {
  if (b.nseq == 0 || b.max_len <= SSM_RECURRENT_MAX_LEN) return;
  if (!ssd_chunked_supported(p.head_dim, p.dstate, chunk_size)) throw Error("ssd_chunked_scan: head_dim, ssm_state_size or chunk_size too large for shared memory");
  if (p.ngroups < 1 || p.nheads % p.ngroups != 0) throw Error("ssd_chunked_scan: mamba_num_heads must be a multiple of n_groups");
  if (workspace == nullptr) throw Error("ssd_chunked_scan: no workspace");
  // 16-byte copies need every row segment (x of a head, B and C of a group) 16-byte aligned.
  const bool vec4 = p.xbc_stride % 4 == 0 && p.head_dim % 4 == 0 && p.dstate % 4 == 0 && reinterpret_cast<uintptr_t>(p.xbc) % 16 == 0;
  if (vec4) launch_all<4>(b, p, chunk_size, workspace, s);
  else launch_all<1>(b, p, chunk_size, workspace, s);
}

}  // namespace lm::cuda
