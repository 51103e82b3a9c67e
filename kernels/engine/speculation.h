// Exact verification of MTP drafts (DESIGN §3). Drafts are greedy (the draft distribution is a
// point mass), so "accept draft d with probability p(d), on rejection sample from p with d
// removed" is realised by a coupling: draw the target token x exactly as a non-speculative step
// would at that position (sample_token, keyed by (seed, position)); accept d iff x == d. Then
// P(accept) = p(d), and given a rejection x is distributed as p restricted to tokens ≠ d and
// renormalised — the rejection-sampling rule — while every emitted token equals the token the
// same seed gives without speculation. Greedy decoding is the special case p = one-hot(argmax).
#pragma once
#include <cstdint>

#include "engine.h"

namespace lm {

struct Verdict {
  int accepted = 0;   // drafts kept (0..k)
  int32_t token = 0;  // the target token after them: a correction, or the bonus when all k were kept
};

/**
 * rows (k+1, vocab): the target logits at the k+1 verified positions; row j predicts the token at
 * sequence position first_position + j; drafts (k) are the proposed tokens at those positions.
 */
Verdict verify_drafts(const float* rows, int vocab, const Sampling& s, int64_t first_position, const int32_t* drafts, int k);

}  // namespace lm
