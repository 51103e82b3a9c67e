// Token sampling: greedy, temperature, top-k, top-p. The random draw for the token at sequence
// position `position` comes from a generator keyed by (seed, position), so the same seed gives the
// same tokens whatever the batch composition or the step boundaries.
#pragma once
#include <cstdint>

#include "engine.h"

namespace lm {

int32_t sample_token(const float* logits, int vocab, const Sampling& s, int64_t position);

/** A uniform draw in [0, 1) from (seed, position); exposed for tests. */
double keyed_uniform(uint64_t seed, int64_t position);

}  // namespace lm
