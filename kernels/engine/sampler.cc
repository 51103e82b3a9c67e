#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace lm {

double keyed_uniform(uint64_t seed, int64_t position) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(position) * 0xd1b54a32d192ed03ull + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int32_t sample_token(const float* logits, int vocab, const Sampling& s, int64_t position) {
  if (s.temperature <= 0.f || s.top_k == 1) {
    int32_t best = 0;
    for (int i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  const int k = s.top_k > 0 ? std::min(s.top_k, vocab) : vocab;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (k < vocab) std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  else std::sort(idx.begin(), idx.end(), by_logit);
  idx.resize(static_cast<size_t>(k));
  std::vector<double> p(idx.size());
  const double mx = logits[idx[0]];
  double sum = 0.0;
  for (size_t i = 0; i < idx.size(); ++i) sum += (p[i] = std::exp((logits[idx[i]] - mx) / s.temperature));
  size_t keep = idx.size();
  if (s.top_p < 1.f) {
    double cum = 0.0;
    for (size_t i = 0; i < idx.size(); ++i) {
      cum += p[i] / sum;
      if (cum >= s.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  double u = keyed_uniform(s.seed, position) * total;
  for (size_t i = 0; i < keep; ++i) {
    if (u < p[i]) return idx[i];
    u -= p[i];
  }
  return idx[keep - 1];
}

}  // namespace lm
