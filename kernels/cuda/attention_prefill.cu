// Flash-attention prefill over a paged bf16 KV cache (see attention.cu for the whole picture): one
// block per (tile of BM rows, sequence, query head) for sequences of more than DECODE_MAX_LEN rows.
// Head dim 128 runs on the warp-specialized wgmma kernel of attention_prefill_sm90.cu (sm_90a;
// mma.sync elsewhere), head dims 16–64 on mma.sync m16n8k16. This file keeps the mma.sync kernel
// and the earlier wgmma kernel without warp roles (variant 3, for benchmarks).
#include "cuda/attention_mma.cuh"

namespace lm::cuda::attn {

namespace {

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

/**
 * The warp-specialized kernel's config that paged_attention takes (see flash_prefill_sm90): the
 * persistent grid, 0.90 ms for the 8K prefill on the H100 against 0.93–0.97 ms for config 0.
 */
constexpr int DEFAULT_SM90_CONFIG = 4;

/** Whether the current device runs the sm_90a kernels (compute capability 9.0), asked once per process. */
bool sm90a_device() {
  static const bool yes = [] {
    int device = 0, major = 0, minor = 0;
    check(cudaGetDevice(&device), "paged_attention: cudaGetDevice");
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "paged_attention: cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "paged_attention: cudaDeviceGetAttribute");
    return major == 9 && minor == 0;
  }();
  return yes;
}

}  // namespace

void flash_prefill(int hd, int variant, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s) {
  switch (hd) {
    case 16: return launch_prefill<16, 2, 4>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 32: return launch_prefill<32, 2, 4>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 64: return launch_prefill<64, 2, 4>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 128:
      if (variant == 2 || !sm90a_device()) return launch_prefill<128, 2, 4>(b, q, nq, nkv, kc, vc, out, sl2, s);
      if (variant == 3) return launch_prefill_wgmma_pipe<128, 3>(b, q, nq, nkv, kc, vc, out, sl2, s);
      return flash_prefill_sm90(variant >= 4 ? variant - 4 : DEFAULT_SM90_CONFIG, b, q, nq, nkv, kc, vc, out, sl2, s);
    default: throw Error("flash_prefill: head_dim " + std::to_string(hd) + " has no tiled kernel");
  }
}

}  // namespace lm::cuda::attn
