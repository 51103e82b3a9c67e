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
//   go out longest first. Head dim 128 (sm_90a, attention_prefill_sm90.cu): warp-specialized in the
//   FlashAttention-3 manner — a producer warpgroup copies 128-key K/V tiles into a 2-stage mbarrier
//   ring, two consumer warpgroups of 64 rows issue S = Q·Kᵀ and the previous tile's O += P·V (P in
//   registers) on wgmma and run the softmax while P·V is in flight; a persistent grid takes
//   (sequence, head, row tile) items heaviest first. Head dims 16, 32, 64 (and 128 off sm_90a): 4 warps
//   of 32 rows on mma.sync m16n8k16 (operands by ldmatrix), K/V double-buffered.
// - decode (sequences of at most DECODE_MAX_LEN rows: decode steps, MTP verification): split-K.
//   One block per (row, KV head and 16 of its query heads, split); the group's query heads are the
//   16 rows of the mma, so each K/V byte is read once per group. A launch has a fixed number of
//   splits (graph-friendly: a function of the sequence count in a decode step, so MTP verify rows
//   split as the plain step's rows do and match them bitwise; else of the row count); each split
//   derives its key range from the device-side context length and empty splits exit. The block's
//   4 warps take 16 keys
//   each of every BN-key tile (3-stage cp.async pipeline) and merge their partial softmax states in
//   shared memory; with one split the block writes the output, else (max, sum, normalized acc) go
//   to the workspace and a combine kernel merges the non-empty splits.
// - head dims other than 16, 32, 64 and 128: the simple kernel (one block per (row, query head),
//   4 warps walking the keys serially).
//
// Grids depend only on b.rows, b.nseq and b.max_len, never on device contents. This file holds
// kv_write, the simple kernel and the dispatch; the tiled kernels are in attention_prefill.cu,
// attention_prefill_sm90.cu and attention_decode.cu, their shared building blocks in attention_mma.cuh
// and attention_sm90.cuh.
#include "cuda/attention_mma.cuh"

namespace lm::cuda {

namespace attn {
int decode_launch_splits(const BatchView& b);  // attention_decode.cu
}

namespace {

using namespace attn;

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

void run_flash(int hd, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float* ws, int variant, cudaStream_t s) {
  const float sl2 = LOG2E / std::sqrt(static_cast<float>(hd));
  if (b.max_len > DECODE_MAX_LEN) flash_prefill(hd, variant, b, q, nq, nkv, kc, vc, out, sl2, s);
  // A single sequence longer than DECODE_MAX_LEN has no decode rows.
  if (b.max_len <= DECODE_MAX_LEN || b.nseq > 1) flash_decode(hd, b, q, nq, nkv, kc, vc, out, ws, sl2, s);
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

int64_t paged_attention_workspace_floats(const BatchView& b, int nq, int hd) {
  const int nsplit = decode_launch_splits(b);
  if (nsplit == 1) return 16;
  return static_cast<int64_t>(b.rows) * nsplit * nq * (hd + 2);
}

int64_t paged_attention_workspace_floats(int rows, int nq, int hd) {
  // The split count is decode_splits of the row count, or of the sequence count where every
  // sequence has at most DECODE_MAX_LEN rows (then at least ceil(rows / DECODE_MAX_LEN) sequences);
  // decode_splits does not grow with its argument.
  const int nsplit = std::max(decode_splits(rows), decode_splits(ceil_div(std::max(rows, 1), DECODE_MAX_LEN)));
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
    case 16:
    case 32:
    case 64:
    case 128: return run_flash(hd, b, q, nq, nkv, k_cache, v_cache, out, workspace, variant, s);
    default: return run_simple(b, q, nq, nkv, hd, k_cache, v_cache, out, s);
  }
}

void paged_attention(const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s) {
  paged_attention_variant(0, b, q, nq, nkv, hd, k_cache, v_cache, out, workspace, s);
}

}  // namespace lm::cuda
