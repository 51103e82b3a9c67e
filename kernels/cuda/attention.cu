// Attention without positional encoding over a paged bf16 KV cache (GQA: query head j reads KV head
// j / (nq/nkv)). kv_write stores this step's keys/values; paged_attention runs one block per
// (row, query head): each warp walks a strided subset of the keys with an online softmax (running
// max and sum, fp32), lanes splitting the head dimension; warps then merge their partial results.
// Split-K over long contexts and the tiled prefill kernel come with the performance issue.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {
constexpr int MAX_HD_PER_LANE = 8;  // head_dim <= 256
constexpr int WARPS = 4;
}

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

void kv_write(const BatchView& b, const float* k, const float* v, int nkv, int hd, bf16* k_cache, bf16* v_cache, cudaStream_t s) {
  if (b.rows == 0) return;
  kv_write_kernel<<<b.rows, 256, 0, s>>>(b, k, v, nkv * hd, k_cache, v_cache);
  LM_LAUNCH_CHECK("kv_write");
}

int64_t paged_attention_workspace_floats(int rows, int nq, int hd) { return 16; }

void paged_attention(const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s) {
  if (b.rows == 0) return;
  if (hd > 32 * MAX_HD_PER_LANE) throw Error("paged_attention: head_dim > 256 is not supported");
  dim3 grid(b.rows, nq);
  attention_kernel<<<grid, 32 * WARPS, 0, s>>>(b, q, nq, nkv, hd, k_cache, v_cache, out);
  LM_LAUNCH_CHECK("paged_attention");
}

}  // namespace lm::cuda
