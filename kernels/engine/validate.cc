#include "engine/validate.h"

#include <string>

namespace lm {

void validate_batch(const ModelSpec& spec, const EngineOptions& opts, bool has_attention, const std::vector<StepSeq>& batch) {
  std::vector<char> seen(static_cast<size_t>(opts.max_slots), 0);
  for (size_t i = 0; i < batch.size(); ++i) {
    const StepSeq& s = batch[i];
    const std::string where = "sequence " + std::to_string(i) + ": ";
    if (s.slot < 0 || s.slot >= opts.max_slots) throw Error(where + "slot " + std::to_string(s.slot) + " out of range [0, " + std::to_string(opts.max_slots) + ")");
    if (seen[s.slot]) throw Error(where + "slot " + std::to_string(s.slot) + " appears twice in one step");
    seen[s.slot] = 1;
    if (s.tokens.empty()) throw Error(where + "no tokens");
    if (s.position < 0) throw Error(where + "negative position");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= spec.vocab_size) throw Error(where + "token id " + std::to_string(t) + " out of range [0, " + std::to_string(spec.vocab_size) + ")");
    if (has_attention) {
      const int64_t end = static_cast<int64_t>(s.position) + static_cast<int64_t>(s.tokens.size());
      const int64_t need = (end + opts.kv_block_size - 1) / opts.kv_block_size;
      if (static_cast<int64_t>(s.block_table.size()) < need)
        throw Error(where + "block table has " + std::to_string(s.block_table.size()) + " blocks, positions up to " + std::to_string(end) + " need " + std::to_string(need));
      for (int64_t b = 0; b < need; ++b)
        if (s.block_table[b] < 0 || s.block_table[b] >= opts.num_kv_blocks) throw Error(where + "KV block id " + std::to_string(s.block_table[b]) + " out of range");
    }
  }
}

}  // namespace lm
