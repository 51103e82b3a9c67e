// MoE router for one token (DeepSeek-V3 style, as Nemotron-H): s = sigmoid(logits) in fp32;
// the correction bias is added for the choice only; groups of E/n_group contiguous experts are
// scored by the sum of their two best biased scores and the best topk_group groups are kept; the
// k best biased scores among them choose the experts; weights are the unbiased s of the chosen
// experts, divided by (Σ + 1e-20) when norm_topk, times the routed scaling factor.
// Ties are broken towards the lower index.
#include <algorithm>
#include <numeric>
#include <vector>

#include "cpu/ops.h"

namespace lm::cpu {

void moe_route(const float* logits, const float* correction_bias, int64_t E, int64_t n_group, int64_t topk_group, int64_t k, bool norm_topk, float scaling, int32_t* experts, float* weights) {
  std::vector<float> s(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    s[e] = 1.f / (1.f + std::exp(-logits[e]));
    choice[e] = s[e] + (correction_bias ? correction_bias[e] : 0.f);
  }
  if (n_group > 1) {
    const int64_t per = E / n_group;
    std::vector<float> gscore(static_cast<size_t>(n_group));
    for (int64_t g = 0; g < n_group; ++g) {
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int64_t e = g * per; e < (g + 1) * per; ++e) {
        if (choice[e] > b1) {
          b2 = b1;
          b1 = choice[e];
        } else if (choice[e] > b2) {
          b2 = choice[e];
        }
      }
      gscore[g] = b1 + b2;
    }
    std::vector<int64_t> order(static_cast<size_t>(n_group));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gscore[a] > gscore[b]; });
    std::vector<char> keep(static_cast<size_t>(n_group), 0);
    for (int64_t i = 0; i < topk_group; ++i) keep[order[i]] = 1;
    for (int64_t e = 0; e < E; ++e)
      if (!keep[e / per]) choice[e] = -INFINITY;
  }
  std::vector<int64_t> idx(static_cast<size_t>(E));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) { return choice[a] > choice[b] || (choice[a] == choice[b] && a < b); });
  float sum = 0.f;
  for (int64_t i = 0; i < k; ++i) {
    experts[i] = static_cast<int32_t>(idx[i]);
    weights[i] = s[idx[i]];
    sum += weights[i];
  }
  for (int64_t i = 0; i < k; ++i) {
    if (norm_topk) weights[i] /= (sum + 1e-20f);
    weights[i] *= scaling;
  }
}

}  // namespace lm::cpu
