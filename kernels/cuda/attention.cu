// Attention without positional encoding over a paged bf16 KV cache (GQA: query head j reads KV head
// j / (nq/nkv)), causal, scale 1/sqrt(hd): out[r, j] = Σ_p softmax_p(q[r, j] · k[p] / sqrt(hd)) v[p]
// over positions p = 0 .. pos0 + (r - row0) of the row's sequence. kv_write stores this step's
// keys/values; paged_attention picks one of three paths per sequence:
//
// - prefill (sequences of more than DECODE_MAX_LEN rows): flash attention. One block per (tile of
//   BM rows, sequence, query head). Q is converted to bf16 into shared memory once; K/V tiles of BN
//   keys stream from the paged cache with 16-byte cp.async; the softmax is online in fp32 (base-2
//   exponentials, scale folded into the exponent). Key tiles past the tile's last row are never
//   visited (causal tile skipping), only tiles that straddle the diagonal are masked, and row tiles
//   go out longest first. Head dim 128 (sm_90a): three warpgroups of 64 rows on wgmma (S = Q·Kᵀ
//   from shared memory, O += P·V with P in registers), 4-stage K/V ring two tiles ahead, and inside
//   each warpgroup the softmax of tile j runs while P_{j−1}·V_{j−1} is in flight. Head dims 16, 32,
//   64: 4 warps of 32 rows on mma.sync m16n8k16 (operands by ldmatrix), K/V double-buffered.
// - decode (sequences of at most DECODE_MAX_LEN rows: decode steps, MTP verification): split-K.
//   One block per (row, KV head and 16 of its query heads, split); the group's query heads are the
//   16 rows of the mma, so each K/V byte is read once per group. A launch has a fixed number of
//   splits (a function of the row count alone, graph-friendly); each split derives its key range
//   from the device-side context length and empty splits exit. The block's 4 warps take 16 keys
//   each of every BN-key tile (3-stage cp.async pipeline) and merge their partial softmax states in
//   shared memory; with one split the block writes the output, else (max, sum, normalized acc) go
//   to the workspace and a combine kernel merges the non-empty splits.
// - head dims other than 16, 32, 64 and 128: the simple kernel (one block per (row, query head),
//   4 warps walking the keys serially).
//
// Grids depend only on b.rows, b.nseq and b.max_len, never on device contents.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {

/** Sequences with at most this many rows take the decode path, one block per row. */
constexpr int DECODE_MAX_LEN = 8;
/** Keys per K/V tile in shared memory (both paths). */
constexpr int BN = 64;
/** Decode: warps per block (16 keys of each tile each) and cp.async pipeline depth. */
constexpr int DECODE_WARPS = 4;
constexpr int DECODE_STAGES = 3;
/** Decode: splits so that rows × splits reaches about this many blocks per KV head, at most MAX_SPLITS. */
constexpr int DECODE_TARGET = 512;
constexpr int MAX_SPLITS = 64;
constexpr float LOG2E = 1.4426950408889634f;

/** Splits of a decode launch: a function of the row count alone (the workspace is sized by it). */
int decode_splits(int rows) { return std::clamp(ceil_div(DECODE_TARGET, std::max(rows, 1)), 1, MAX_SPLITS); }

// ---- the simple kernel (fallback for other head dims) ----
constexpr int MAX_HD_PER_LANE = 8;  // head_dim <= 256
constexpr int WARPS = 4;

__device__ __forceinline__ int64_t cache_row(const BatchView& b, int seq, int pos) {
  const int blk = b.block_tables[b.seq_bt0[seq] + pos / b.block_size];
  return static_cast<int64_t>(blk) * b.block_size + pos % b.block_size;
}

__global__ void kv_write_kernel(BatchView b, const float* k, const float* v, int width, bf16* kc, bf16* vc) {
  const int r = blockIdx.x;
  const int seq = b.row_seq[r];
  const int pos = b.seq_pos0[seq] + (r - b.seq_row0[seq]);
  const int64_t dst = cache_row(b, seq, pos) * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    kc[dst + i] = __float2bfloat16(k[static_cast<int64_t>(r) * width + i]);
    vc[dst + i] = __float2bfloat16(v[static_cast<int64_t>(r) * width + i]);
  }
}

__global__ void attention_kernel(BatchView b, const float* q, int nq, int nkv, int hd, const bf16* kc, const bf16* vc, bf16* out) {
  const int r = blockIdx.x, h = blockIdx.y;
  const int seq = b.row_seq[r];
  const int last = b.seq_pos0[seq] + (r - b.seq_row0[seq]);  // attends to positions 0..last
  const int kvh = h / (nq / nkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per = (hd + 31) / 32;
  const float scale = rsqrtf(static_cast<float>(hd));
  float qv[MAX_HD_PER_LANE], acc[MAX_HD_PER_LANE];
  for (int i = 0; i < per; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < hd ? q[(static_cast<int64_t>(r) * nq + h) * hd + d] * scale : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int pos = warp; pos <= last; pos += WARPS) {
    const int64_t base = (cache_row(b, seq, pos) * nkv + kvh) * hd;
    float dot = 0.f;
    for (int i = 0; i < per; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) dot += qv[i] * __bfloat162float(kc[base + d]);
    }
    dot = warp_sum(dot);
    const float m_new = fmaxf(m, dot);
    const float corr = __expf(m - m_new), p = __expf(dot - m_new);
    l = l * corr + p;
    for (int i = 0; i < per; ++i) {
      const int d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < hd ? p * __bfloat162float(vc[base + d]) : 0.f);
    }
    m = m_new;
  }
  __shared__ float sm[WARPS], sl[WARPS];
  __shared__ float sacc[WARPS][MAX_HD_PER_LANE * 32];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
  for (int i = 0; i < per; ++i) sacc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  if (warp == 0) {
    float M = -INFINITY;
    for (int w = 0; w < WARPS; ++w) M = fmaxf(M, sm[w]);
    float L = 0.f;
    for (int w = 0; w < WARPS; ++w) L += sl[w] * (sm[w] == -INFINITY ? 0.f : __expf(sm[w] - M));
    for (int i = 0; i < per; ++i) {
      const int d = lane + 32 * i;
      if (d >= hd) continue;
      float o = 0.f;
      for (int w = 0; w < WARPS; ++w) o += sacc[w][d] * (sm[w] == -INFINITY ? 0.f : __expf(sm[w] - M));
      out[(static_cast<int64_t>(r) * nq + h) * hd + d] = __float2bfloat16(o / L);
    }
  }
}

// ---- tensor-core building blocks ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/** Four 8×8 bf16 matrices from shared memory; lane t gives the row address of matrix t/8, row t%8. */
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
/** The same, each matrix transposed. */
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

/** d (16×8 fp32) += a (16×16 bf16, row) · b (16×8 bf16, col). */
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/** Two floats as bf16x2: lo in the low half (the lower column). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/**
 * Issues cp.async copies of keys [key0, key0 + BN) of one KV head into K and V tiles (BN rows of
 * HD + 8 bf16: the padding keeps ldmatrix rows on distinct banks); keys at or past key_end are
 * zero-filled and never read from the cache.
 */
template <int HD, int NT>
__device__ __forceinline__ void load_kv_tile(uint32_t sk, uint32_t sv, const bf16* kc, const bf16* vc, const int* bt, int block_size, int nkv, int kvh, int key0, int key_end, int tid) {
  constexpr int CH = HD / 8, LDS = HD + 8;
  static_assert(BN * CH % NT == 0, "whole 16-byte chunks per thread");
#pragma unroll
  for (int j = 0; j < BN * CH / NT; ++j) {
    const int i = tid + j * NT, key = i / CH, ch = i % CH, pos = key0 + key;
    const bool valid = pos < key_end;
    int64_t off = 0;
    if (valid) {
      const int blk = bt[pos / block_size];
      off = ((static_cast<int64_t>(blk) * block_size + pos % block_size) * nkv + kvh) * HD + ch * 8;
    }
    const uint32_t so = (key * LDS + ch * 8) * 2;
    cp_async16(sk + so, kc + off, valid);
    cp_async16(sv + so, vc + off, valid);
  }
}

/**
 * Online softmax over one key tile for MT m-tiles of 16 rows: s holds raw scores (−inf where
 * masked) and becomes the unnormalized probabilities; m (raw running max), l (this lane's partial
 * running sum) and the accumulators o are rescaled. Lanes of a quad share rows.
 */
template <int MT, int NTILES, int DTILES>
__device__ __forceinline__ void online_softmax(float (&s)[MT][NTILES][4], float (&m)[MT][2], float (&l)[MT][2], float (&o)[MT][DTILES][4], float sl2) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = m[mt][hf];
#pragma unroll
      for (int nt = 0; nt < NTILES; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row with no unmasked key yet keeps max −inf: exponents then use 0 so that nothing is NaN.
      const float mb = (mx == -INFINITY ? 0.f : mx) * sl2;
      const float corr = exp2_approx(m[mt][hf] * sl2 - mb);
      m[mt][hf] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < NTILES; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2_approx(fmaf(s[mt][nt][2 * hf + e], sl2, -mb));
          s[mt][nt][2 * hf + e] = p;
          sum += p;
        }
      l[mt][hf] = l[mt][hf] * corr + sum;
#pragma unroll
      for (int dt = 0; dt < DTILES; ++dt) {
        o[mt][dt][2 * hf] *= corr;
        o[mt][dt][2 * hf + 1] *= corr;
      }
    }
}

// ---- prefill: flash attention over row tiles ----

template <int HD, int MT, int NW>
struct PrefillShape {
  static constexpr int BM = 16 * MT * NW, LDS = HD + 8, NT = NW * 32;
  static constexpr int Q_BYTES = BM * LDS * 2, STAGE_BYTES = BN * LDS * 2;
  static constexpr int SMEM = Q_BYTES + 4 * STAGE_BYTES;  // Q, K × 2 stages, V × 2 stages
};

template <int HD, int MT, int NW>
__global__ void __launch_bounds__(NW * 32) flash_prefill_kernel(BatchView b, const float* __restrict__ q, int nq, int nkv, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                                                                 bf16* __restrict__ out, float sl2) {
  using S = PrefillShape<HD, MT, NW>;
  constexpr int DT = HD / 8, NTL = BN / 8;
  const int seq = blockIdx.y;
  const int len = b.seq_len[seq];
  const int t0 = (gridDim.x - 1 - blockIdx.x) * S::BM;  // the longest row tiles start first
  if (len <= DECODE_MAX_LEN || t0 >= len) return;
  const int h = blockIdx.z, kvh = h / (nq / nkv);
  const int row0 = b.seq_row0[seq], pos0 = b.seq_pos0[seq];
  const int* bt = b.block_tables + b.seq_bt0[seq];
  const int nrows = min(S::BM, len - t0);
  const int p_first = pos0 + t0, key_end = p_first + nrows;  // this tile reads keys [0, key_end)
  const int n_tiles = (key_end + BN - 1) / BN;

  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  const uint32_t sq_u = smem_addr(smem), sk_u = sq_u + S::Q_BYTES, sv_u = sk_u + 2 * S::STAGE_BYTES;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, c = lane & 3;

  load_kv_tile<HD, S::NT>(sk_u, sv_u, kc, vc, bt, b.block_size, nkv, kvh, 0, key_end, tid);
  cp_async_commit();
  static_assert(S::BM * HD / 4 % S::NT == 0, "whole float4 chunks per thread");
#pragma unroll
  for (int j = 0; j < S::BM * HD / 4 / S::NT; ++j) {
    const int i = tid + j * S::NT, r = i / (HD / 4), c4 = i % (HD / 4);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < nrows) v = *reinterpret_cast<const float4*>(q + (static_cast<int64_t>(row0 + t0 + r) * nq + h) * HD + c4 * 4);
    *reinterpret_cast<uint2*>(sq + r * S::LDS + c4 * 4) = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
  }

  // Causal limit of this lane's rows (rows past the sequence reuse its last row's and are not stored).
  const int wrow = warp * 16 * MT;
  int lim[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) lim[mt][hf] = p_first + min(wrow + mt * 16 + (lane >> 2) + 8 * hf, nrows - 1);

  float o[MT][DT][4], m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }

  for (int kt = 0; kt < n_tiles; ++kt) {
    const uint32_t stage = (kt & 1) * S::STAGE_BYTES;
    if (kt + 1 < n_tiles) {
      const uint32_t next = ((kt + 1) & 1) * S::STAGE_BYTES;
      load_kv_tile<HD, S::NT>(sk_u + next, sv_u + next, kc, vc, bt, b.block_size, nkv, kvh, (kt + 1) * BN, key_end, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    float s[MT][NTL][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NTL; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) ldsm_x4(sq_u + ((wrow + mt * 16 + (lane & 15)) * S::LDS + kk * 16 + (lane >> 4) * 8) * 2, a[mt]);
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        uint32_t kb[4];
        ldsm_x4(sk_u + stage + ((np * 16 + (lane & 7) + (lane >> 4) * 8) * S::LDS + kk * 16 + ((lane >> 3) & 1) * 8) * 2, kb);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(s[mt][2 * np], a[mt], kb[0], kb[1]);
          mma_16816(s[mt][2 * np + 1], a[mt], kb[2], kb[3]);
        }
      }
    }
    if (kt * BN + BN - 1 > p_first) {  // the tile reaches past some row's last key
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NTL; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kt * BN + nt * 8 + 2 * c + (e & 1) > lim[mt][e >> 1]) s[mt][nt][e] = -INFINITY;
    }
    online_softmax<MT, NTL, DT>(s, m, l, o, sl2);

#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t vb[4];
        ldsm_x4_trans(sv_u + stage + ((kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S::LDS + dp * 16 + (lane >> 4) * 8) * 2, vb);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(o[mt][2 * dp], a[mt], vb[0], vb[1]);
          mma_16816(o[mt][2 * dp + 1], a[mt], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // the next iteration refills the stage just read
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float L = l[mt][hf];
      L += __shfl_xor_sync(0xffffffffu, L, 1);
      L += __shfl_xor_sync(0xffffffffu, L, 2);
      const float inv = 1.f / L;
      const int r = wrow + mt * 16 + (lane >> 2) + 8 * hf;
      if (r >= nrows) continue;
      bf16* dst = out + (static_cast<int64_t>(row0 + t0 + r) * nq + h) * HD + 2 * c;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack_bf16(o[mt][dt][2 * hf] * inv, o[mt][dt][2 * hf + 1] * inv);
    }
}

// ---- prefill on Hopper warpgroup MMAs (wgmma, sm_90a), head dim 128 ----
// Tiles sit in shared memory in the no-swizzle core-matrix layout (8 rows × 16 bytes contiguous,
// 16-byte column chunks 128 bytes apart, row groups HD·16 bytes apart); the descriptor's leading
// byte offset is the stride between core matrices along K and the stride byte offset the one along
// M/N, for the K-major Q and K and for the MN-major (transposed) V alike (checked on the H100: the
// other three readings give garbage).

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LM_ATTN_WGMMA 1
#endif

/** d (64×64 fp32, this warpgroup) = (scale_d ? d : 0) + A·B; A and B K-major in shared memory. */
__device__ __forceinline__ void wgmma_ss_m64n64(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}
/** d (64×128 fp32) += A·B; A (64×16 bf16) in registers (per warp the mma.sync A fragment of its 16 rows), B MN-major in shared memory. */
__device__ __forceinline__ void wgmma_rs_m64n128_tb(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/** Keeps the compiler from moving accumulator accesses across the asynchronous MMAs. */
template <int N>
__device__ __forceinline__ void fence_acc(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

/** Shared-memory matrix descriptor, no swizzle: start address, leading and stride byte offsets. */
__device__ __forceinline__ uint64_t gmma_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr >> 4) & 0x3FFF) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) | (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32);
}

/** Byte offset of the 16-byte chunk (row, chunk) of a core-matrix tile with HD columns. */
template <int HD>
__device__ __forceinline__ uint32_t cm_offset(int row, int chunk) {
  return ((row >> 3) * (HD / 8) + chunk) * 128 + (row & 7) * 16;
}

/** load_kv_tile into the core-matrix layout; a power-of-two block size (bs_shift >= 0) avoids divisions. */
template <int HD, int NT>
__device__ __forceinline__ void load_kv_tile_cm(uint32_t sk, uint32_t sv, const bf16* kc, const bf16* vc, const int* bt, int block_size, int bs_shift, int nkv, int kvh, int key0, int key_end,
                                                int tid) {
  constexpr int CH = HD / 8;
#pragma unroll
  for (int j = 0; j < (BN * CH + NT - 1) / NT; ++j) {
    const int i = tid + j * NT, key = (i / HD) * 8 + (i & 7), ch = (i >> 3) % CH, pos = key0 + key;
    if (BN * CH % NT != 0 && i >= BN * CH) break;
    const bool valid = pos < key_end;
    int64_t off = 0;
    if (valid) {
      const int blk = bt[bs_shift >= 0 ? pos >> bs_shift : pos / block_size];
      const int within = bs_shift >= 0 ? pos & (block_size - 1) : pos % block_size;
      off = ((static_cast<int64_t>(blk) * block_size + within) * nkv + kvh) * HD + ch * 8;
    }
    const uint32_t so = cm_offset<HD>(key, ch);
    cp_async16(sk + so, kc + off, valid);
    cp_async16(sv + so, vc + off, valid);
  }
}

template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
}

/** P (bf16 A fragments, BN/16 key steps) from the probabilities of one tile. */
__device__ __forceinline__ void pack_p(const float (&s)[1][BN / 8][4], uint32_t (&a)[BN / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    a[kk][0] = pack_bf16(s[0][2 * kk][0], s[0][2 * kk][1]);
    a[kk][1] = pack_bf16(s[0][2 * kk][2], s[0][2 * kk][3]);
    a[kk][2] = pack_bf16(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
    a[kk][3] = pack_bf16(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
  }
}

/**
 * Online softmax of one tile without touching the accumulators: returns the factor corr[hf] by
 * which O must be rescaled once the P·V of the previous tile has landed.
 */
template <int NTILES>
__device__ __forceinline__ void online_softmax_deferred(float (&s)[1][NTILES][4], float (&m)[1][2], float (&l)[1][2], float (&corr)[2], float sl2) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float mx = m[0][hf];
#pragma unroll
    for (int nt = 0; nt < NTILES; ++nt) mx = fmaxf(mx, fmaxf(s[0][nt][2 * hf], s[0][nt][2 * hf + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mb = (mx == -INFINITY ? 0.f : mx) * sl2;
    corr[hf] = exp2_approx(m[0][hf] * sl2 - mb);
    m[0][hf] = mx;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < NTILES; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = exp2_approx(fmaf(s[0][nt][2 * hf + e], sl2, -mb));
        s[0][nt][2 * hf + e] = p;
        sum += p;
      }
    l[0][hf] = l[0][hf] * corr[hf] + sum;
  }
}

constexpr int PIPE_STAGES = 4;

template <int HD, int NWG>
struct WgPipeShape {
  static constexpr int BM = 64 * NWG, NT = 128 * NWG, TILE_BYTES = BN * HD * 2;
  static constexpr int V_OFF = 0, K_OFF = PIPE_STAGES * TILE_BYTES, Q_OFF = 2 * PIPE_STAGES * TILE_BYTES, SMEM = Q_OFF + BM * HD * 2;
};

/**
 * The wgmma prefill with the two products of consecutive tiles overlapped inside each warpgroup:
 * iteration j issues S_j = Q·K_jᵀ and O += P_{j−1}·V_{j−1} together, runs the softmax of S_j while
 * the second is in flight, and rescales O once it has landed. K/V tiles run PIPE_STAGES deep, two
 * tiles ahead.
 */
template <int HD, int NWG>
__global__ void __launch_bounds__(NWG * 128, 1) flash_prefill_wgmma_pipe_kernel(BatchView b, const float* __restrict__ q, int nq, int nkv, const bf16* __restrict__ kc,
                                                                                const bf16* __restrict__ vc, bf16* __restrict__ out, float sl2) {
#ifdef LM_ATTN_WGMMA
  using S = WgPipeShape<HD, NWG>;
  constexpr int DT = HD / 8, NTL = BN / 8;
  const int seq = blockIdx.y;
  const int len = b.seq_len[seq];
  const int t0 = (gridDim.x - 1 - blockIdx.x) * S::BM;
  if (len <= DECODE_MAX_LEN || t0 >= len) return;
  const int h = blockIdx.z, kvh = h / (nq / nkv);
  const int row0 = b.seq_row0[seq], pos0 = b.seq_pos0[seq];
  const int* bt = b.block_tables + b.seq_bt0[seq];
  const int bs = b.block_size, bs_shift = (bs & (bs - 1)) == 0 ? __ffs(bs) - 1 : -1;
  const int nrows = min(S::BM, len - t0);
  const int p_first = pos0 + t0, key_end = p_first + nrows;
  const int n_tiles = (key_end + BN - 1) / BN;

  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t base = smem_addr(smem), sv_u = base + S::V_OFF, sk_u = base + S::K_OFF, sq_u = base + S::Q_OFF;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, c = lane & 3;
  const int wg = warp >> 2, wrow = wg * 64 + (warp & 3) * 16;
  auto load = [&](int t) {
    if (t < n_tiles) {
      const uint32_t st = (t % PIPE_STAGES) * S::TILE_BYTES;
      load_kv_tile_cm<HD, S::NT>(sk_u + st, sv_u + st, kc, vc, bt, bs, bs_shift, nkv, kvh, t * BN, key_end, tid);
    }
    cp_async_commit();
  };

  load(0);
  load(1);
  static_assert(S::BM * HD / 4 % S::NT == 0, "whole float4 chunks per thread");
#pragma unroll
  for (int j = 0; j < S::BM * HD / 4 / S::NT; ++j) {
    const int i = tid + j * S::NT, r = i / (HD / 4), c4 = i % (HD / 4);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < nrows) v = *reinterpret_cast<const float4*>(q + (static_cast<int64_t>(row0 + t0 + r) * nq + h) * HD + c4 * 4);
    *reinterpret_cast<uint2*>(smem + S::Q_OFF + cm_offset<HD>(r, c4 >> 1) + (c4 & 1) * 8) = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
  }
  const int lim0 = p_first + min(wrow + (lane >> 2), nrows - 1), lim1 = p_first + min(wrow + (lane >> 2) + 8, nrows - 1);
  auto mask = [&](float (&s)[1][NTL][4], int kt) {
    if (kt * BN + BN - 1 > p_first) {
#pragma unroll
      for (int nt = 0; nt < NTL; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (kt * BN + nt * 8 + 2 * c + (e & 1) > ((e >> 1) ? lim1 : lim0)) s[0][nt][e] = -INFINITY;
    }
  };
  const uint64_t q_desc = gmma_desc(sq_u + wg * 64 * HD * 2, 128, 16 * HD);
  auto issue_qk = [&](float (&s)[1][NTL][4], int kt) {
    const uint64_t k_desc = gmma_desc(sk_u + (kt % PIPE_STAGES) * S::TILE_BYTES, 128, 16 * HD);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) wgmma_ss_m64n64(s[0], q_desc + kk * 16, k_desc + kk * 16, kk > 0 ? 1 : 0);
    wgmma_commit();
  };
  float o[1][DT][4], m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}}, corr[2];
  auto issue_pv = [&](const uint32_t (&a)[BN / 16][4], int kt) {
    const uint64_t v_desc = gmma_desc(sv_u + (kt % PIPE_STAGES) * S::TILE_BYTES, 16 * HD, 128);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs_m64n128_tb(o[0], a[kk], v_desc + kk * 2 * HD);
    wgmma_commit();
  };
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) o[0][dt][0] = o[0][dt][1] = o[0][dt][2] = o[0][dt][3] = 0.f;

  float s[1][NTL][4];
  uint32_t p[BN / 16][4], pn[BN / 16][4];
  cp_async_wait<1>();
  fence_proxy_async();
  __syncthreads();
  load(2);
#pragma unroll
  for (int nt = 0; nt < NTL; ++nt) s[0][nt][0] = s[0][nt][1] = s[0][nt][2] = s[0][nt][3] = 0.f;
  fence_acc(s[0]);
  wgmma_fence();
  issue_qk(s, 0);
  wgmma_wait_all();
  fence_acc(s[0]);
  mask(s, 0);
  online_softmax_deferred<NTL>(s, m, l, corr, sl2);
  pack_p(s, p);

  for (int kt = 1; kt < n_tiles; ++kt) {
    cp_async_wait<1>();  // tile kt landed (only tile kt + 1 may still be in flight)
    fence_proxy_async();
    __syncthreads();     // every warpgroup is past iteration kt − 1: tile kt − 2's stage is free
    load(kt + 2);
    fence_acc(s[0]);
    fence_acc(o[0]);
    fence_regs(p);
    wgmma_fence();
    issue_qk(s, kt);
    issue_pv(p, kt - 1);
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");  // S_kt is in; P·V may run on
    fence_acc(s[0]);
    mask(s, kt);
    online_softmax_deferred<NTL>(s, m, l, corr, sl2);
    pack_p(s, pn);
    wgmma_wait_all();
    fence_acc(o[0]);
    fence_regs(p);
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      o[0][dt][0] *= corr[0];
      o[0][dt][1] *= corr[0];
      o[0][dt][2] *= corr[1];
      o[0][dt][3] *= corr[1];
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) p[kk][e] = pn[kk][e];
  }
  fence_acc(o[0]);
  fence_regs(p);
  wgmma_fence();
  issue_pv(p, n_tiles - 1);
  wgmma_wait_all();
  fence_acc(o[0]);
  fence_regs(p);

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float L = l[0][hf];
    L += __shfl_xor_sync(0xffffffffu, L, 1);
    L += __shfl_xor_sync(0xffffffffu, L, 2);
    const float inv = 1.f / L;
    const int r = wrow + (lane >> 2) + 8 * hf;
    if (r >= nrows) continue;
    bf16* dst = out + (static_cast<int64_t>(row0 + t0 + r) * nq + h) * HD + 2 * c;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) *reinterpret_cast<uint32_t*>(dst + dt * 8) = pack_bf16(o[0][dt][2 * hf] * inv, o[0][dt][2 * hf + 1] * inv);
  }
#else
  __trap();  // built without the sm_90a features: fail loudly rather than leave out unwritten
#endif
}

// ---- decode: split-K, the GQA group as the mma rows ----

/** Keys per split for a context of ctx keys: a whole number of tiles, so only the last tile is partial. */
__device__ __forceinline__ int split_span(int ctx, int nsplit) { return ((ctx + nsplit - 1) / nsplit + BN - 1) / BN * BN; }

template <int HD>
struct DecodeShape {
  static constexpr int LDS = HD + 8, NT = DECODE_WARPS * 32, STAGE_BYTES = BN * LDS * 2;
  static constexpr int PIPE = 2 * DECODE_STAGES * STAGE_BYTES;
  static constexpr int MERGE = DECODE_WARPS * 16 * (HD + 2) * 4;  // per warp: acc (16 × HD), max and sum (16 each)
  static constexpr int SMEM = PIPE > MERGE ? PIPE : MERGE;
};

template <int HD>
__global__ void __launch_bounds__(DECODE_WARPS * 32) flash_decode_kernel(BatchView b, const float* __restrict__ q, int nq, int nkv, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                                                                         bf16* __restrict__ out, float* __restrict__ ws, int nsplit, float sl2) {
  using S = DecodeShape<HD>;
  constexpr int DT = HD / 8;
  const int r = blockIdx.x, seq = b.row_seq[r];
  if (b.seq_len[seq] > DECODE_MAX_LEN) return;
  const int group = nq / nkv, chunks = (group + 15) / 16;
  const int kvh = blockIdx.y / chunks, hc = (blockIdx.y % chunks) * 16;
  const int h0 = kvh * group + hc, nh = min(16, group - hc);
  const int ctx = b.seq_pos0[seq] + (r - b.seq_row0[seq]) + 1;
  const int span = split_span(ctx, nsplit), k0 = blockIdx.z * span;
  if (k0 >= ctx) return;  // an empty split: the combine never reads it
  const int k1 = min(k0 + span, ctx), n_tiles = (k1 - k0 + BN - 1) / BN;
  const int* bt = b.block_tables + b.seq_bt0[seq];

  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sk_u = smem_addr(smem), sv_u = sk_u + DECODE_STAGES * S::STAGE_BYTES;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;

#pragma unroll
  for (int st = 0; st < DECODE_STAGES - 1; ++st) {
    if (st < n_tiles) load_kv_tile<HD, S::NT>(sk_u + st * S::STAGE_BYTES, sv_u + st * S::STAGE_BYTES, kc, vc, bt, b.block_size, nkv, kvh, k0 + st * BN, k1, tid);
    cp_async_commit();
  }

  // Q of heads h0 + g and h0 + g + 8 straight into A fragments (zero for heads past the group).
  uint32_t qa[HD / 16][4];
  {
    const float* q0 = q + (static_cast<int64_t>(r) * nq + h0 + g) * HD + 2 * c;
    const float* q1 = q0 + 8 * HD;
    const bool v0 = g < nh, v1 = g + 8 < nh;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      const float2 x0 = v0 ? *reinterpret_cast<const float2*>(q0 + kk * 16) : make_float2(0.f, 0.f);
      const float2 x1 = v1 ? *reinterpret_cast<const float2*>(q1 + kk * 16) : make_float2(0.f, 0.f);
      const float2 x2 = v0 ? *reinterpret_cast<const float2*>(q0 + kk * 16 + 8) : make_float2(0.f, 0.f);
      const float2 x3 = v1 ? *reinterpret_cast<const float2*>(q1 + kk * 16 + 8) : make_float2(0.f, 0.f);
      qa[kk][0] = pack_bf16(x0.x, x0.y);
      qa[kk][1] = pack_bf16(x1.x, x1.y);
      qa[kk][2] = pack_bf16(x2.x, x2.y);
      qa[kk][3] = pack_bf16(x3.x, x3.y);
    }
  }

  float o[1][DT][4], m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) o[0][dt][0] = o[0][dt][1] = o[0][dt][2] = o[0][dt][3] = 0.f;
  const int kw = warp * 16;  // this warp's 16 keys of every tile

  for (int t = 0; t < n_tiles; ++t) {
    cp_async_wait<DECODE_STAGES - 2>();
    __syncthreads();  // tile t landed for every thread; every warp is done with tile t - 1
    {
      const int nt = t + DECODE_STAGES - 1;
      const uint32_t st = (nt % DECODE_STAGES) * S::STAGE_BYTES;
      if (nt < n_tiles) load_kv_tile<HD, S::NT>(sk_u + st, sv_u + st, kc, vc, bt, b.block_size, nkv, kvh, k0 + nt * BN, k1, tid);
      cp_async_commit();
    }
    const uint32_t stage = (t % DECODE_STAGES) * S::STAGE_BYTES;
    float s[1][2][4] = {};
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t kb[4];
      ldsm_x4(sk_u + stage + ((kw + (lane & 7) + (lane >> 4) * 8) * S::LDS + kk * 16 + ((lane >> 3) & 1) * 8) * 2, kb);
      mma_16816(s[0][0], qa[kk], kb[0], kb[1]);
      mma_16816(s[0][1], qa[kk], kb[2], kb[3]);
    }
    const int key0 = k0 + t * BN + kw;
    if (key0 + 16 > k1) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + nt * 8 + 2 * c + (e & 1) >= k1) s[0][nt][e] = -INFINITY;
    }
    online_softmax<1, 2, DT>(s, m, l, o, sl2);
    uint32_t a[4] = {pack_bf16(s[0][0][0], s[0][0][1]), pack_bf16(s[0][0][2], s[0][0][3]), pack_bf16(s[0][1][0], s[0][1][1]), pack_bf16(s[0][1][2], s[0][1][3])};
#pragma unroll
    for (int dp = 0; dp < HD / 16; ++dp) {
      uint32_t vb[4];
      ldsm_x4_trans(sv_u + stage + ((kw + (lane & 7) + ((lane >> 3) & 1) * 8) * S::LDS + dp * 16 + (lane >> 4) * 8) * 2, vb);
      mma_16816(o[0][2 * dp], a, vb[0], vb[1]);
      mma_16816(o[0][2 * dp + 1], a, vb[2], vb[3]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the merge area

  float* so = reinterpret_cast<float*>(smem);             // (warps, 16, HD)
  float* sm = so + DECODE_WARPS * 16 * HD;                // (warps, 16)
  float* sl = sm + DECODE_WARPS * 16;                     // (warps, 16)
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float L = l[0][hf];
    L += __shfl_xor_sync(0xffffffffu, L, 1);
    L += __shfl_xor_sync(0xffffffffu, L, 2);
    const int row = g + 8 * hf;
    if (c == 0) {
      sm[warp * 16 + row] = m[0][hf];
      sl[warp * 16 + row] = L;
    }
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) *reinterpret_cast<float2*>(so + (warp * 16 + row) * HD + dt * 8 + 2 * c) = make_float2(o[0][dt][2 * hf], o[0][dt][2 * hf + 1]);
  }
  __syncthreads();
  for (int i = tid; i < 16 * HD; i += S::NT) {
    const int row = i / HD, d = i % HD;
    if (row >= nh) break;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < DECODE_WARPS; ++w) M = fmaxf(M, sm[w * 16 + row]);
    float L = 0.f, acc = 0.f;
#pragma unroll
    for (int w = 0; w < DECODE_WARPS; ++w) {
      const float wt = exp2_approx((sm[w * 16 + row] - M) * sl2);  // 0 for a warp that saw only masked keys
      L += sl[w * 16 + row] * wt;
      acc += so[(w * 16 + row) * HD + d] * wt;
    }
    const int h = h0 + row;
    if (nsplit == 1) {
      out[(static_cast<int64_t>(r) * nq + h) * HD + d] = __float2bfloat16(acc / L);
    } else {
      const int64_t part = (static_cast<int64_t>(r) * nsplit + blockIdx.z) * nq + h;
      ws[part * HD + d] = acc / L;
      if (d == 0) {
        float* ml = ws + static_cast<int64_t>(gridDim.x) * nsplit * nq * HD;  // (rows, nsplit, nq, 2) after the accumulators
        ml[part * 2] = M;
        ml[part * 2 + 1] = L;
      }
    }
  }
}

/** Merges the non-empty splits of each decode row: out = Σ_s w_s o_s / Σ_s w_s, w_s = l_s·2^((m_s − M)·sl2). */
__global__ void split_combine_kernel(BatchView b, int nq, int hd, const float* __restrict__ ws, int nsplit, bf16* __restrict__ out, float sl2) {
  const int r = blockIdx.x, h = blockIdx.y, seq = b.row_seq[r];
  if (b.seq_len[seq] > DECODE_MAX_LEN) return;
  const int ctx = b.seq_pos0[seq] + (r - b.seq_row0[seq]) + 1;
  const int span = split_span(ctx, nsplit), used = (ctx + span - 1) / span;
  const float* ml = ws + static_cast<int64_t>(gridDim.x) * nsplit * nq * hd;
  const int64_t first = static_cast<int64_t>(r) * nsplit * nq + h;  // part index of split 0; split s adds s·nq
  float M = -INFINITY;
  for (int s = 0; s < used; ++s) M = fmaxf(M, ml[(first + static_cast<int64_t>(s) * nq) * 2]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float L = 0.f, acc = 0.f;
    for (int s = 0; s < used; ++s) {
      const int64_t part = first + static_cast<int64_t>(s) * nq;
      const float wt = ml[part * 2 + 1] * exp2_approx((ml[part * 2] - M) * sl2);
      L += wt;
      acc += wt * ws[part * hd + d];
    }
    out[(static_cast<int64_t>(r) * nq + h) * hd + d] = __float2bfloat16(acc / L);
  }
}

/** Raises a kernel's dynamic shared-memory limit once per instantiation. */
template <class Kernel>
void allow_smem(Kernel k, int bytes, bool& done) {
  if (done) return;
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "paged_attention: cudaFuncSetAttribute");
  done = true;
}

template <int HD, int MT, int NW>
void launch_prefill(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s) {
  using S = PrefillShape<HD, MT, NW>;
  static bool smem_set = false;
  allow_smem(flash_prefill_kernel<HD, MT, NW>, S::SMEM, smem_set);
  const dim3 grid(ceil_div(b.max_len, S::BM), b.nseq, nq);
  flash_prefill_kernel<HD, MT, NW><<<grid, S::NT, S::SMEM, s>>>(b, q, nq, nkv, kc, vc, out, sl2);
  LM_LAUNCH_CHECK("paged_attention (prefill)");
}

template <int HD, int NWG>
void launch_prefill_wgmma_pipe(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s) {
  using S = WgPipeShape<HD, NWG>;
  static bool smem_set = false;
  allow_smem(flash_prefill_wgmma_pipe_kernel<HD, NWG>, S::SMEM, smem_set);
  const dim3 grid(ceil_div(b.max_len, S::BM), b.nseq, nq);
  flash_prefill_wgmma_pipe_kernel<HD, NWG><<<grid, S::NT, S::SMEM, s>>>(b, q, nq, nkv, kc, vc, out, sl2);
  LM_LAUNCH_CHECK("paged_attention (prefill, wgmma pipelined)");
}

template <int HD>
void launch_decode(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float* ws, float sl2, cudaStream_t s) {
  using S = DecodeShape<HD>;
  static bool smem_set = false;
  allow_smem(flash_decode_kernel<HD>, S::SMEM, smem_set);
  const int nsplit = decode_splits(b.rows), chunks = ceil_div(nq / nkv, 16);
  const dim3 grid(b.rows, nkv * chunks, nsplit);
  flash_decode_kernel<HD><<<grid, S::NT, S::SMEM, s>>>(b, q, nq, nkv, kc, vc, out, ws, nsplit, sl2);
  LM_LAUNCH_CHECK("paged_attention (decode)");
  if (nsplit > 1) {
    split_combine_kernel<<<dim3(b.rows, nq), std::max(32, HD), 0, s>>>(b, nq, HD, ws, nsplit, out, sl2);
    LM_LAUNCH_CHECK("paged_attention (split combine)");
  }
}

template <int HD>
void run_flash(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float* ws, int variant, cudaStream_t s) {
  const float sl2 = LOG2E / std::sqrt(static_cast<float>(HD));
  if (b.max_len > DECODE_MAX_LEN) {
    if constexpr (HD == 128) {
      if (variant == 2) launch_prefill<HD, 2, 4>(b, q, nq, nkv, kc, vc, out, sl2, s);
      else launch_prefill_wgmma_pipe<HD, 3>(b, q, nq, nkv, kc, vc, out, sl2, s);
    } else {
      launch_prefill<HD, 2, 4>(b, q, nq, nkv, kc, vc, out, sl2, s);
    }
  }
  // A single sequence longer than DECODE_MAX_LEN has no decode rows.
  if (b.max_len <= DECODE_MAX_LEN || b.nseq > 1) launch_decode<HD>(b, q, nq, nkv, kc, vc, out, ws, sl2, s);
}

void run_simple(const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* kc, const bf16* vc, bf16* out, cudaStream_t s) {
  if (hd > 32 * MAX_HD_PER_LANE) throw Error("paged_attention: head_dim > 256 is not supported");
  attention_kernel<<<dim3(b.rows, nq), 32 * WARPS, 0, s>>>(b, q, nq, nkv, hd, kc, vc, out);
  LM_LAUNCH_CHECK("paged_attention");
}

}  // namespace

void kv_write(const BatchView& b, const float* k, const float* v, int nkv, int hd, bf16* k_cache, bf16* v_cache, cudaStream_t s) {
  if (b.rows == 0) return;
  kv_write_kernel<<<b.rows, 256, 0, s>>>(b, k, v, nkv * hd, k_cache, v_cache);
  LM_LAUNCH_CHECK("kv_write");
}

int64_t paged_attention_workspace_floats(int rows, int nq, int hd) {
  const int nsplit = decode_splits(rows);
  if (nsplit == 1) return 16;
  return static_cast<int64_t>(rows) * nsplit * nq * (hd + 2);
}

/**
 * Benchmarks and tests only (declared where used, not in ops.h): variant 0 is paged_attention,
 * 1 the simple kernel for every row, 2 paged_attention with the mma.sync prefill at head dim 128
 * too (instead of the wgmma one).
 */
void paged_attention_variant(int variant, const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s) {
  if (b.rows == 0) return;
  if (nq <= 0 || nkv <= 0 || nq % nkv != 0) throw Error("paged_attention: query heads must be a positive multiple of KV heads");
  if (variant == 1) return run_simple(b, q, nq, nkv, hd, k_cache, v_cache, out, s);
  switch (hd) {
    case 16: return run_flash<16>(b, q, nq, nkv, k_cache, v_cache, out, workspace, variant, s);
    case 32: return run_flash<32>(b, q, nq, nkv, k_cache, v_cache, out, workspace, variant, s);
    case 64: return run_flash<64>(b, q, nq, nkv, k_cache, v_cache, out, workspace, variant, s);
    case 128: return run_flash<128>(b, q, nq, nkv, k_cache, v_cache, out, workspace, variant, s);
    default: return run_simple(b, q, nq, nkv, hd, k_cache, v_cache, out, s);
  }
}

void paged_attention(const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s) {
  paged_attention_variant(0, b, q, nq, nkv, hd, k_cache, v_cache, out, workspace, s);
}

}  // namespace lm::cuda
