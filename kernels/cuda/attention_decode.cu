// Split-K decode attention over a paged bf16 KV cache (see attention.cu for the whole picture): one
// block per (row, KV head and 16 of its query heads, split) for sequences of at most DECODE_MAX_LEN
// rows (decode steps, MTP verification), the GQA group as the mma rows; a combine kernel merges splits.
#include "cuda/attention_mma.cuh"

namespace lm::cuda::attn {

static_assert(DECODE_MAX_LEN == DECODE_STEP_MAX_LEN, "the decode path takes the decode steps of ops.h");

/**
 * Splits of a decode launch: from the sequence count in a decode step (every sequence ≤
 * DECODE_MAX_LEN rows), so an MTP verify step's rows split their keys as the plain decode step of
 * the same batch does and each row's result is the plain row's bit for bit (a row's splits depend
 * only on its context and the split count); from the row count in a step with longer sequences.
 */
int decode_launch_splits(const BatchView& b);

namespace {

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

template <int HD>
void launch_decode(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float* ws, float sl2, cudaStream_t s) {
  using S = DecodeShape<HD>;
  static bool smem_set = false;
  allow_smem(flash_decode_kernel<HD>, S::SMEM, smem_set);
  const int nsplit = decode_launch_splits(b), chunks = ceil_div(nq / nkv, 16);
  const dim3 grid(b.rows, nkv * chunks, nsplit);
  flash_decode_kernel<HD><<<grid, S::NT, S::SMEM, s>>>(b, q, nq, nkv, kc, vc, out, ws, nsplit, sl2);
  LM_LAUNCH_CHECK("paged_attention (decode)");
  if (nsplit > 1) {
    split_combine_kernel<<<dim3(b.rows, nq), std::max(32, HD), 0, s>>>(b, nq, HD, ws, nsplit, out, sl2);
    LM_LAUNCH_CHECK("paged_attention (split combine)");
  }
}

}  // namespace

int decode_launch_splits(const BatchView& b) { return decode_splits(b.max_len <= DECODE_MAX_LEN ? b.nseq : b.rows); }

void flash_decode(int hd, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float* ws, float sl2, cudaStream_t s) {
  switch (hd) {
    case 16: return launch_decode<16>(b, q, nq, nkv, kc, vc, out, ws, sl2, s);
    case 32: return launch_decode<32>(b, q, nq, nkv, kc, vc, out, ws, sl2, s);
    case 64: return launch_decode<64>(b, q, nq, nkv, kc, vc, out, ws, sl2, s);
    case 128: return launch_decode<128>(b, q, nq, nkv, kc, vc, out, ws, sl2, s);
    default: throw Error("flash_decode: head_dim " + std::to_string(hd) + " has no tiled kernel");
  }
}

}  // namespace lm::cuda::attn
