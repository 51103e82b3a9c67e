// Causal GQA attention without positional encoding over a paged KV cache:
//   o_t = softmax_s≤pos(t) (q_t · k_s / √hd) · v_s ;  query head j reads KV head j / (nq/nkv).
// Softmax is computed stably (max-subtracted) in fp32. Each query row is computed alone, the same
// way whatever T is (a verify step's rows equal decode steps' bit for bit).
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace lm::cpu {

namespace {

/** a · b over n floats: 8-lane partial sums in a fixed order (a lone scalar chain is latency-bound). */
inline float dot(const float* a, const float* b, int64_t n) {
  v8 acc{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = fma8(load8(a + i), load8(b + i), acc);
  float s = lanes_sum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void paged_attention(const float* q, int64_t T, int64_t pos0, int64_t nq, int64_t nkv, int64_t hd, const float* k_cache, const float* v_cache, const int32_t* block_table, int64_t block_size, float* out) {
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int64_t group = nq / nkv;
  const int64_t ctx = pos0 + T;
  std::vector<float> scores(static_cast<size_t>(ctx));
  auto kv_row = [&](const float* cache, int64_t pos, int64_t kvh) {
    const int64_t blk = block_table[pos / block_size];
    return cache + ((blk * block_size + pos % block_size) * nkv + kvh) * hd;
  };
  for (int64_t t = 0; t < T; ++t) {
    const int64_t last = pos0 + t;
    for (int64_t h = 0; h < nq; ++h) {
      const int64_t kvh = h / group;
      const float* qh = q + (t * nq + h) * hd;
      float mx = -INFINITY;
      for (int64_t s = 0; s <= last; ++s) {
        scores[s] = dot(qh, kv_row(k_cache, s, kvh), hd) * scale;
        mx = std::max(mx, scores[s]);
      }
      double sum = 0.0;
      for (int64_t s = 0; s <= last; ++s) {
        scores[s] = std::exp(scores[s] - mx);
        sum += scores[s];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = out + (t * nq + h) * hd;
      std::fill(o, o + hd, 0.f);
      for (int64_t s = 0; s <= last; ++s) {
        const float p = scores[s] * inv;
        const float* v = kv_row(v_cache, s, kvh);
        for (int64_t d = 0; d < hd; ++d) o[d] += p * v[d];
      }
    }
  }
}

}  // namespace lm::cpu
