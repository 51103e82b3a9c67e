// Public C++ surface of the LatentMesh engine, used by kernels/napi (the addon) and kernels/tests.
//
// A model is a stack of blocks (Mamba-2, MoE, attention, MLP) described by ModelSpec. Sequences
// live in slots: each slot owns a conv state and an fp32 SSM state per Mamba layer; attention
// layers share a paged KV pool addressed through per-sequence block tables. One step() runs a
// mixed batch (prefill chunks and decode tokens of many sequences) and samples one token per
// sequence that asks for it. Errors are thrown as lm::Error; nothing calls exit().
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lm {

const char* engine_version();
std::vector<std::string> available_backends();

/** Every engine failure: the message names the call or tensor at fault. */
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class BlockKind : char { Mamba = 'M', MoE = 'E', Attention = '*', MLP = '-' };

/** The model's shape, already validated in TypeScript (contracts/model-config.ts). */
struct ModelSpec {
  int vocab_size = 0;
  int hidden_size = 0;
  std::string pattern;      // one BlockKind char per layer
  std::string mtp_pattern;  // MTP blocks, one BlockKind char each (e.g. "*E"); loaded when EngineOptions::mtp
  int num_nextn_predict_layers = 0;  // MTP layers (repeats of mtp_pattern) in the checkpoint; 0: none
  float norm_eps = 1e-5f;
  bool tie_word_embeddings = false;
  // Mamba-2
  int mamba_num_heads = 0, mamba_head_dim = 0, ssm_state_size = 0, n_groups = 1, conv_kernel = 4, chunk_size = 128;
  float time_step_min = 0.f, time_step_max = 1e30f;  // dt clamp (time_step_limit); (0, inf) = none
  bool use_conv_bias = true, mamba_proj_bias = false;
  // attention
  int num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0;
  bool attention_bias = false;
  // MLP / MoE
  int intermediate_size = 0, moe_intermediate_size = 0, moe_shared_expert_intermediate_size = 0;
  int n_routed_experts = 0, num_experts_per_tok = 0, n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.f;
  int moe_latent_size = 0;  // 0: no LatentMoE projections
  bool mlp_bias = false;

  int mamba_inner() const { return mamba_num_heads * mamba_head_dim; }
  int conv_dim() const { return mamba_inner() + 2 * n_groups * ssm_state_size; }
  int moe_input_size() const { return moe_latent_size > 0 ? moe_latent_size : hidden_size; }
  /** Floats of one slot's conv state (the previous K-1 inputs) in one Mamba layer. */
  int64_t conv_state_floats() const { return static_cast<int64_t>(conv_kernel - 1) * conv_dim(); }
  /** Floats of one slot's SSM state in one Mamba layer. */
  int64_t ssm_state_floats() const { return static_cast<int64_t>(mamba_num_heads) * mamba_head_dim * ssm_state_size; }
  int count(BlockKind k) const;
};

enum class DType { F32, BF16, F16 };

/** Where one tensor's bytes lie in a checkpoint file (validated by worker/checkpoint.ts). */
struct TensorRef {
  std::string name;
  std::string file;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

/**
 * This process's place in an expert-parallel group. Every rank holds the replicated weights and
 * the routed experts the shard plan gives it; each MoE layer sends every token's (latent-width)
 * vector to a rank holding each of its chosen experts and combines the results in a fixed order,
 * so logits do not depend on the placement or on arrival order. All ranks step in lockstep: a rank
 * with no sequences still calls step() (an empty batch). The CPU backend talks over TCP sockets.
 */
struct GroupOptions {
  int rank = 0;
  int world_size = 1;  // 1: no group, every expert local
  /** expert → ranks holding a copy, primary first (the resolved shard plan); empty when world_size is 1. */
  std::vector<std::vector<int>> expert_ranks;
  /** host:port of rank 0's rendezvous endpoint; rank 0 listens on that port on every interface. */
  std::string leader_address;
  /** A collective not finished within this time fails the step on every rank (naming the silent peer). */
  int collective_timeout_ms = 30000;
  /** How long rendezvous waits for every rank to arrive (ranks may start minutes apart). */
  int rendezvous_timeout_ms = 600000;
};

struct EngineOptions {
  ModelSpec spec;
  GroupOptions group;
  std::vector<TensorRef> tensors;
  bool dummy = false;
  uint64_t dummy_seed = 0;
  std::string backend = "cpu";
  int max_slots = 8;
  int kv_block_size = 16;
  int num_kv_blocks = 256;
  int threads = 0;  // 0: hardware concurrency
  /**
   * Load the MTP layers (`mtp.*`) and run them every step, so that sequences may verify drafts
   * (StepSeq::num_drafts) and ask for new ones (StepSeq::draft_tokens). Needs
   * spec.num_nextn_predict_layers == 1 and world size 1.
   */
  bool mtp = false;
  /**
   * CUDA decode steps: "replay" (captured graphs per batch-size bucket, the default), "padded" (the
   * same padded step run eagerly: the bitwise reference for replay), "off" (eager, unpadded).
   */
  std::string cuda_graphs = "replay";
  /**
   * Time every component of each step (Engine::take_profile); steps then run eagerly (no graphs),
   * enqueued while the stream is held so the kernels run back to back, with an event where each
   * component starts: the sum is the step's device time, a little above a graph replay's.
   */
  bool profile = false;
  /**
   * Dummy weights only: expert popularity skew. 0 spreads tokens over experts uniformly (random
   * router); s > 0 adds s · ln(1 / (1 + rank(e))) to each MoE layer's correction bias (experts in a
   * per-layer random order), a Zipf-like popularity with exponent about s.
   */
  float dummy_route_skew = 0.f;

  /** Elements of one attention layer's K (or V) pool: (blocks, block_size, kv heads, head_dim). */
  int64_t kv_layer_size() const { return static_cast<int64_t>(num_kv_blocks) * kv_block_size * spec.num_key_value_heads * spec.head_dim; }
};

struct Sampling {
  float temperature = 0.f;  // 0: greedy
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  uint64_t seed = 0;
};

enum class LogitsMode { None, Last, All };

/** One sequence's share of a step. */
struct StepSeq {
  int slot = 0;
  std::vector<int32_t> tokens;       // fed this step
  int position = 0;                  // tokens already in the slot; 0 resets its state
  std::vector<int32_t> block_table;  // KV blocks covering [0, position + tokens.size())
  bool sample = true;
  LogitsMode logits = LogitsMode::None;
  Sampling sampling;
  /**
   * MTP speculation (engines loaded with `mtp` only). The last `num_drafts` of `tokens` are drafts
   * to verify: the engine keeps the longest prefix of them that equals the target tokens it
   * samples at those positions (each target token drawn exactly as a non-speculative step would),
   * plus one target token; Mamba state and KV end as if only the kept tokens had been fed.
   * Needs sample. 0 ≤ num_drafts < tokens.size().
   */
  int num_drafts = 0;
  /**
   * Drafts to propose after this step, for the next step to verify (greedy MTP; 0: none). Needs
   * sample; with attention in the MTP block the block table must cover draft_tokens - 1 positions
   * beyond position + tokens.size().
   */
  int draft_tokens = 0;
  /** MTP engines only: return the MTP head's logits of this step's rows (StepOutput::mtp_logits), for parity checks. */
  bool mtp_logits = false;
  /**
   * MTP engines only: skip the MTP head for this sequence in this step (when speculation is off for
   * now, so a step costs what it costs without MTP). The CPU engine keeps the skipped rows and
   * catches the head's KV up in one batched pass when the head runs again (drafts as if never
   * skipped); the CUDA engine leaves the head's KV at these positions stale, which can only lower later
   * acceptance, never change outputs. Either way the last position's hidden state is kept, so the next
   * drafting step's first draft reads the right (hidden, token) pair.
   */
  bool mtp_skip = false;
};

struct StepOutput {
  /** One per sequence, -1 where sample is false: the token after the accepted drafts (a bonus or correction token). */
  std::vector<int32_t> tokens;
  /** Rows of vocab_size, for sequences that asked, in order. `All`: every fed position; `Last`: the last accepted one. */
  std::vector<float> logits;
  /** Per sequence: drafts accepted this step (0..num_drafts). It now holds position + tokens.size() - num_drafts + accepted tokens. */
  std::vector<int32_t> num_accepted;
  /** Each sequence's draft_tokens new drafts, concatenated in batch order. */
  std::vector<int32_t> drafts;
  /**
   * For sequences with mtp_logits, in batch order, rows of vocab_size: the MTP head's logits of each
   * row it ran this step — one per accepted position j whose next token is known, at MTP KV
   * positions in order (row j predicts token j+2), the last paired with the sampled token — then one
   * per further draft. On the CPU backend the rows it catches up for positions it skipped earlier
   * (mtp_skip) come first, in position order.
   */
  std::vector<float> mtp_logits;
  /** Tokens fed by the whole group in this step (every rank sees the same number); -1: not in a group. */
  int64_t group_tokens = -1;
};

struct EngineInfo {
  std::string backend;
  int max_slots = 0, kv_block_size = 0, num_kv_blocks = 0;
  uint64_t num_parameters = 0;
  uint64_t state_bytes_per_slot = 0;
};

/** Time per component of the profiled steps (names such as "mamba.in_proj", "moe.experts", "lm_head"). */
struct StepProfile {
  int steps = 0;
  std::vector<std::pair<std::string, double>> ms;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual StepOutput step(const std::vector<StepSeq>& batch) = 0;
  /**
   * Optional first half of step(batch) on the caller's thread, before step(batch) runs on another:
   * where the backend can, it starts the step's device work now (the CUDA backend: a decode step
   * replayed from its graph), so that the hand-over to the other thread overlaps the device's work.
   * step() must be called next with the same batch. Returns whether anything was started; errors are
   * left for step() to report.
   */
  virtual bool begin_step(const std::vector<StepSeq>& batch) {
    (void)batch;
    return false;
  }
  virtual EngineInfo info() const = 0;
  /** A copy of one slot's Mamba state (conv then SSM, layer by layer), for tests and MTP checks. */
  virtual std::vector<float> slot_state(int slot) const = 0;
  /**
   * Tokens of this rank's sequences routed to each expert since load, (MoE layers, routed experts)
   * row-major; the sum over a group's ranks is the group's per-expert load. Empty: not counted.
   */
  virtual std::vector<uint64_t> expert_token_counts() const { return {}; }
  /**
   * With EngineOptions::profile: device milliseconds per component summed over the steps since the
   * last call, in a fixed order, and that number of steps; resets the sums. Empty otherwise.
   */
  virtual StepProfile take_profile() { return {}; }
};

/** The machine's ceilings, measured now, for benchmark ratios. */
struct Roofline {
  double copy_gbps = 0;      // device-to-device (CPU: memory-to-memory) copy, bytes read + written per second / 1e9
  double matmul_tflops = 0;  // the backend's GEMM path (CUDA: bf16 cuBLASLt, fp32 accumulate; CPU: fp32)
};
Roofline measure_roofline(const std::string& backend, int threads);

/** Loads weights (or builds dummy ones) and allocates state; throws lm::Error. */
std::unique_ptr<Engine> create_engine(const EngineOptions& options);

}  // namespace lm
