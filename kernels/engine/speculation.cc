#include "engine/speculation.h"

#include "engine/sampler.h"

namespace lm {

Verdict verify_drafts(const float* rows, int vocab, const Sampling& s, int64_t first_position, const int32_t* drafts, int k) {
  for (int j = 0;; ++j) {
    const int32_t target = sample_token(rows + static_cast<int64_t>(j) * vocab, vocab, s, first_position + j);
    if (j == k || target != drafts[j]) return {j, target};
  }
}

}  // namespace lm
