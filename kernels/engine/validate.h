// Checks one step's batch against the engine's limits; shared by every backend.
#pragma once
#include <vector>

#include "engine.h"

namespace lm {

/** Most drafts one sequence may ask for in one step. */
constexpr int MAX_DRAFT_TOKENS = 16;

/** Throws lm::Error when the spec or options are inconsistent (sizes, divisibility, block kinds). */
void validate_spec(const ModelSpec& spec, const EngineOptions& opts);

/** Throws lm::Error naming the sequence and the problem (slot, token id, block table). */
void validate_batch(const ModelSpec& spec, const EngineOptions& opts, bool has_attention, const std::vector<StepSeq>& batch);

}  // namespace lm
