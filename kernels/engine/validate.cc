#include "engine/validate.h"

#include <algorithm>
#include <string>

namespace lm {

void validate_spec(const ModelSpec& spec, const EngineOptions& opts) {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("invalid model spec: " + what);
  };
  need(spec.vocab_size > 0 && spec.hidden_size > 0 && !spec.pattern.empty(), "vocab_size, hidden_size and pattern are required");
  for (char c : spec.pattern) need(c == 'M' || c == 'E' || c == '*' || c == '-', std::string("unknown block kind '") + c + "'");
  if (spec.count(BlockKind::Mamba)) {
    need(spec.mamba_num_heads > 0 && spec.mamba_head_dim > 0 && spec.ssm_state_size > 0 && spec.n_groups > 0, "mamba sizes must be positive");
    need(spec.mamba_num_heads % spec.n_groups == 0, "mamba_num_heads must be divisible by n_groups");
    need(spec.conv_kernel >= 1 && spec.chunk_size >= 1, "conv_kernel and chunk_size must be >= 1");
  }
  if (spec.count(BlockKind::Attention)) {
    need(spec.num_attention_heads > 0 && spec.num_key_value_heads > 0 && spec.head_dim > 0, "attention sizes must be positive");
    need(spec.num_attention_heads % spec.num_key_value_heads == 0, "num_attention_heads must be divisible by num_key_value_heads");
  }
  if (spec.count(BlockKind::MoE)) {
    need(spec.n_routed_experts > 0 && spec.num_experts_per_tok > 0 && spec.num_experts_per_tok <= spec.n_routed_experts, "need 0 < num_experts_per_tok <= n_routed_experts");
    need(spec.n_group >= 1 && spec.n_routed_experts % spec.n_group == 0 && spec.topk_group >= 1 && spec.topk_group <= spec.n_group, "n_group must divide n_routed_experts and 1 <= topk_group <= n_group");
  }
  if (opts.mtp) {
    need(spec.num_nextn_predict_layers == 1, "MTP needs num_nextn_predict_layers == 1 (the released layout), got " + std::to_string(spec.num_nextn_predict_layers));
    need(!spec.mtp_pattern.empty(), "MTP needs an MTP pattern (mtp_hybrid_override_pattern)");
    for (char c : spec.mtp_pattern) need(c == 'E' || c == '*' || c == '-', std::string("MTP block kind '") + c + "' is not supported (attention, MoE and MLP blocks are)");
    auto has = [&](char c) { return spec.mtp_pattern.find(c) != std::string::npos; };
    if (has('*')) need(spec.num_attention_heads > 0 && spec.num_key_value_heads > 0 && spec.head_dim > 0 && spec.num_attention_heads % spec.num_key_value_heads == 0, "MTP attention sizes must be positive and GQA-divisible");
    if (has('E')) need(spec.n_routed_experts > 0 && spec.num_experts_per_tok > 0 && spec.num_experts_per_tok <= spec.n_routed_experts && spec.n_routed_experts % spec.n_group == 0, "MTP MoE sizes are invalid");
    need(opts.group.world_size == 1, "MTP speculation with expert parallelism (world size " + std::to_string(opts.group.world_size) + ") is not implemented yet; load without MTP");
  }
  need(opts.max_slots >= 1 && opts.kv_block_size >= 1 && opts.num_kv_blocks >= 1, "max_slots, kv_block_size and num_kv_blocks must be >= 1");
}

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
    if (s.num_drafts < 0 || s.draft_tokens < 0) throw Error(where + "negative num_drafts or draft_tokens");
    if ((s.num_drafts > 0 || s.draft_tokens > 0 || s.mtp_logits) && !opts.mtp) throw Error(where + "drafts need an engine loaded with MTP (this one was loaded without)");
    if ((s.num_drafts > 0 || s.draft_tokens > 0) && !s.sample) throw Error(where + "drafts need sample");
    if (s.mtp_skip && (s.draft_tokens > 0 || s.mtp_logits)) throw Error(where + "mtp_skip excludes draft_tokens and mtp_logits");
    if (s.num_drafts >= static_cast<int>(s.tokens.size())) throw Error(where + "num_drafts " + std::to_string(s.num_drafts) + " must be below the " + std::to_string(s.tokens.size()) + " tokens fed");
    if (s.draft_tokens > MAX_DRAFT_TOKENS) throw Error(where + "draft_tokens " + std::to_string(s.draft_tokens) + " is above " + std::to_string(MAX_DRAFT_TOKENS));
    for (int32_t t : s.tokens)
      if (t < 0 || t >= spec.vocab_size) throw Error(where + "token id " + std::to_string(t) + " out of range [0, " + std::to_string(spec.vocab_size) + ")");
    if (has_attention) {
      // drafting writes the MTP block's KV for up to draft_tokens - 1 positions past the fed ones
      const int64_t end = static_cast<int64_t>(s.position) + static_cast<int64_t>(s.tokens.size()) + std::max(0, s.draft_tokens - 1);
      const int64_t need = (end + opts.kv_block_size - 1) / opts.kv_block_size;
      if (static_cast<int64_t>(s.block_table.size()) < need)
        throw Error(where + "block table has " + std::to_string(s.block_table.size()) + " blocks, positions up to " + std::to_string(end) + " need " + std::to_string(need));
      for (int64_t b = 0; b < need; ++b)
        if (s.block_table[b] < 0 || s.block_table[b] >= opts.num_kv_blocks) throw Error(where + "KV block id " + std::to_string(s.block_table[b]) + " out of range");
    }
  }
}

}  // namespace lm
