// The CPU backend's model runner: strings the cpu/ ops into the NemotronH forward pass over a
// mixed batch (kernels/dev/REFERENCE.md has the math). All activations fp32.
//
// Per step: rows of all sequences are concatenated (R rows). Each block normalises h, runs its
// mixer and adds the result to h. Projections run over all R rows at once; the conv, the SSM scan
// and attention run per sequence against that sequence's slot state and KV blocks.
//
// In an expert-parallel group (options.group) this rank holds only its shard of the routed experts;
// each step starts with a lockstep header (so a rank with no sequences steps too) and each MoE layer
// dispatches its tokens to the experts' owners and combines the results (engine/expert-parallel.h).
#include <algorithm>
#include <chrono>
#include <unordered_map>
#include <cstring>
#include <numeric>

#include "cpu/ops.h"
#include "engine/expert-parallel.h"
#include "engine/sampler.h"
#include "engine/speculation.h"
#include "engine/validate.h"
#include "engine/weights.h"

namespace lm {

int ModelSpec::count(BlockKind k) const { return static_cast<int>(std::count(pattern.begin(), pattern.end(), static_cast<char>(k))); }

namespace {

using cpu::ThreadPool;

struct MambaLayer {
  const float *in_proj, *in_proj_b, *conv_w, *conv_b, *dt_bias, *D, *norm, *out_proj, *out_proj_b;
  std::vector<float> A;  // -exp(A_log)
  int index;             // ordinal among Mamba layers (state slot index)
};
struct AttentionLayer {
  const float *q, *k, *v, *o, *qb, *kb, *vb, *ob;
  int index;  // ordinal among attention layers (KV pool index)
};
struct MlpLayer {
  const float *up, *up_b, *down, *down_b;
};
struct MoeLayer {
  const float *gate, *correction_bias, *fc1, *fc1_b, *fc2, *fc2_b;
  std::vector<const float*> up, down;  // per routed expert; nullptr where another rank holds it
  MlpLayer shared;
  int index;  // ordinal among MoE layers
};
struct Layer {
  BlockKind kind;
  const float* norm;
  MambaLayer mamba;
  AttentionLayer attn;
  MlpLayer mlp;
  MoeLayer moe;
};
/** The MTP head: u = eh_proj([enorm(embed(next token)) ; hnorm(hidden)]), its blocks, final_layernorm; lm_head shared. */
struct MtpHead {
  const float *enorm = nullptr, *hnorm = nullptr, *eh_proj = nullptr, *final_norm = nullptr;
  std::vector<Layer> blocks;
};

/**
 * EngineOptions::profile on the CPU backend: wall milliseconds per component, summed over steps in
 * the order components first appear. Components do not nest; an off profiler costs a branch.
 */
class CpuProfile {
 public:
  explicit CpuProfile(bool on) : on_(on) {}
  using Clock = std::chrono::steady_clock;
  /** The time now when profiling (else a default time point, never read). */
  Clock::time_point start() const { return on_ ? Clock::now() : Clock::time_point{}; }
  /** Adds the time since `t0` to `name` and returns the time now (the next component's start). */
  Clock::time_point add(const char* name, Clock::time_point t0) {
    if (!on_) return t0;
    const Clock::time_point t1 = Clock::now();
    size_t i = 0;
    while (i < names_.size() && names_[i] != name) ++i;
    if (i == names_.size()) {
      names_.emplace_back(name);
      ms_.push_back(0);
    }
    ms_[i] += std::chrono::duration<double, std::milli>(t1 - t0).count();
    return t1;
  }
  void end_step() {
    if (on_) ++steps_;
  }
  StepProfile take() {
    StepProfile p;
    if (!on_) return p;
    p.steps = steps_;
    for (size_t i = 0; i < names_.size(); ++i) p.ms.emplace_back(names_[i], ms_[i]);
    std::fill(ms_.begin(), ms_.end(), 0.0);
    steps_ = 0;
    return p;
  }

 private:
  bool on_;
  int steps_ = 0;
  std::vector<std::string> names_;
  std::vector<double> ms_;
};

class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(const EngineOptions& o)
      : spec_(o.spec), opts_(o), pool_(o.threads), prof_(o.profile), store_(o.tensors, o.dummy, o.dummy_seed), ep_(o.spec, o.group) {
    validate_spec(spec_, opts_);
    load();
    allocate_state();
    ep_.connect();  // after the (slow) weight load, so ranks wait for each other only once
  }

  EngineInfo info() const override {
    EngineInfo i;
    i.backend = "cpu";
    i.max_slots = opts_.max_slots;
    i.kv_block_size = opts_.kv_block_size;
    i.num_kv_blocks = n_attn_ + n_mtp_attn_ > 0 ? opts_.num_kv_blocks : 0;
    i.num_parameters = store_.num_parameters();
    i.state_bytes_per_slot = static_cast<uint64_t>(n_mamba_) * (conv_state_size() + ssm_state_size()) * sizeof(float);
    return i;
  }

  StepOutput step(const std::vector<StepSeq>& batch) override {
    try {
      return forward(batch);
    } catch (const std::exception& e) {
      // a rank that fails alone would leave the others waiting in the next collective
      if (ep_.world_size() > 1) ep_.abort(std::string("rank ") + std::to_string(ep_.rank()) + " failed: " + e.what());
      throw;
    }
  }

  std::vector<uint64_t> expert_token_counts() const override { return ep_.token_counts(); }

  StepProfile take_profile() override { return prof_.take(); }

  std::vector<float> slot_state(int slot) const override {
    if (slot < 0 || slot >= opts_.max_slots) throw Error("slot_state: slot out of range");
    std::vector<float> out;
    for (int l = 0; l < n_mamba_; ++l) {
      const float* c = conv_state_.data() + (static_cast<int64_t>(l) * opts_.max_slots + slot) * conv_state_size();
      const float* s = ssm_state_.data() + (static_cast<int64_t>(l) * opts_.max_slots + slot) * ssm_state_size();
      out.insert(out.end(), c, c + conv_state_size());
      out.insert(out.end(), s, s + ssm_state_size());
    }
    return out;
  }

 private:
  const ModelSpec spec_;
  const EngineOptions opts_;
  ThreadPool pool_;
  CpuProfile prof_;
  bool in_mtp_ = false;  // the MTP head is running (profile names)
  WeightStore store_;
  ExpertParallel ep_;
  std::vector<Layer> layers_;
  const float *embed_ = nullptr, *norm_f_ = nullptr, *lm_head_ = nullptr;
  int n_mamba_ = 0, n_attn_ = 0, n_moe_ = 0, n_mtp_attn_ = 0;
  MtpHead mtp_;
  // Per slot, the main model's last accepted position whose hidden state (after norm_f) the MTP
  // head has seen: its position (-1: none), the hidden and the next token its MTP row was computed
  // with (-1: not yet, the next step's first token completes it).
  std::vector<int64_t> mtp_pos_;
  std::vector<float> mtp_hidden_;  // (slots, hidden): before norm_f
  std::vector<int32_t> mtp_token_;
  /**
   * Per slot, rows the MTP head has not run yet because the sequence skipped it (mtp_skip): the
   * (hidden before norm_f, next token) pairs of consecutive positions [pos0, pos0 + rows), the last
   * token -1 while unknown. The first step that runs the head for the slot feeds them first (their
   * attention KV only, one batched pass), so resuming speculation sees the same KV as never having
   * skipped. At most the newest MTP_PENDING_ROWS (and MTP_PENDING_BYTES) per slot are kept; older ones
   * are given up (their KV stays stale, which can only lower acceptance). The bound matters: a caught-up
   * row still costs eh_proj and the attention block's K/V projections (about a tenth of a plain step's
   * per-row work on the demo model), and an adaptive policy that settles on k = 0 still re-times a depth
   * now and then, so catching up every skipped position would make "speculation off" cost up to ~10 %
   * more than plain decoding over a long run, in spikes at each re-timing step.
   */
  struct PendingRows {
    int64_t pos0 = 0;
    std::vector<float> hidden;  // (rows, hidden)
    std::vector<int32_t> next;  // (rows)
    /** Empties the rows; a buffer that grew past 1 Mi floats (a long skipped stretch) is given back. */
    void clear() {
      hidden.clear();
      next.clear();
      if (hidden.capacity() > (size_t{1} << 20)) std::vector<float>().swap(hidden);
    }
  };
  std::vector<PendingRows> mtp_pending_;
  /**
   * int8 copies (row-wise scales) of the MTP head's projections and of lm_head, keyed by the fp32
   * weight: drafting passes (no sequence asking for the head's logits) read these, a quarter of the
   * bytes, because a draft only has to be likely, not exact (verification is exact whatever is
   * drafted). Steps returning mtp_logits run the head in fp32; its KV at positions written by
   * drafting passes is then the int8 one.
   */
  std::unordered_map<const float*, cpu::QuantWeight> draft_q8_;
  bool drafting_q8_ = false;  // the running MTP pass reads draft_q8_

  /** fn(i) for every sequence of a batch, sequences side by side on the pool (each touches only its own slot, blocks and rows). */
  template <typename Fn>
  void for_each_seq(size_t n, const Fn& fn) {
    if (n == 1) return fn(0);
    pool_.parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(static_cast<size_t>(i));
    });
  }

  /** y (M, N) = x (M, K) · Wᵀ (+ bias): fp32, or W's int8 copy while a drafting pass runs. */
  void proj(const float* x, int64_t M, int64_t K, const float* W, int64_t N, float* y, const float* bias = nullptr) {
    if (drafting_q8_)
      if (const auto it = draft_q8_.find(W); it != draft_q8_.end()) return cpu::gemm_xwt_q8(pool_, x, M, K, it->second, y, bias);
    cpu::gemm_xwt(pool_, x, M, K, W, N, y, bias);
  }
  static constexpr int64_t MTP_PENDING_BYTES = int64_t{16} << 20;
  static constexpr int64_t MTP_PENDING_ROWS = 64;
  // Per sequence of the running step with drafts: the Mamba state after each verified position,
  // (mamba layers, num_drafts + 1, conv + SSM), to roll back rejected drafts.
  std::vector<std::vector<float>> verify_states_;
  std::vector<float> conv_state_;  // (mamba layers, slots, K-1, conv_dim)
  std::vector<float> ssm_state_;   // (mamba layers, slots, heads, head_dim, state)
  std::vector<float> k_cache_, v_cache_;  // (attention layers, blocks, block_size, kv heads, head_dim)

  int64_t conv_state_size() const { return spec_.conv_state_floats(); }
  int64_t ssm_state_size() const { return spec_.ssm_state_floats(); }
  int64_t kv_layer_size() const { return opts_.kv_layer_size(); }
  float* conv_state(int layer, int slot) { return conv_state_.data() + (static_cast<int64_t>(layer) * opts_.max_slots + slot) * conv_state_size(); }
  float* ssm_state(int layer, int slot) { return ssm_state_.data() + (static_cast<int64_t>(layer) * opts_.max_slots + slot) * ssm_state_size(); }

  MlpLayer load_mlp(const std::string& p, int64_t in, int64_t inter) {
    return {store_.get(p + "up_proj.weight", {inter, in}), spec_.mlp_bias ? store_.get(p + "up_proj.bias", {inter}, Init::Bias) : nullptr,
            store_.get(p + "down_proj.weight", {in, inter}), spec_.mlp_bias ? store_.get(p + "down_proj.bias", {in}, Init::Bias) : nullptr};
  }

  /** One block's weights under prefix `p` ("backbone.layers.{i}." or "mtp.layers.{j}."). */
  Layer load_block(BlockKind kind, const std::string& p, bool in_mtp) {
    const int64_t H = spec_.hidden_size;
    const std::string m = p + "mixer.";
    Layer L{};
    L.kind = kind;
    L.norm = store_.get(p + "norm.weight", {H}, Init::Norm);
    switch (L.kind) {
      case BlockKind::Mamba: {
        const int64_t I = spec_.mamba_inner(), CD = spec_.conv_dim(), nh = spec_.mamba_num_heads, K = spec_.conv_kernel;
        const int64_t proj = I + CD + nh;
        auto& M = L.mamba;
        M.in_proj = store_.get(m + "in_proj.weight", {proj, H});
        M.in_proj_b = spec_.mamba_proj_bias ? store_.get(m + "in_proj.bias", {proj}, Init::Bias) : nullptr;
        M.conv_w = store_.get(m + "conv1d.weight", {CD, 1, K});
        M.conv_b = spec_.use_conv_bias ? store_.get(m + "conv1d.bias", {CD}, Init::Bias) : nullptr;
        M.dt_bias = store_.get(m + "dt_bias", {nh}, Init::DtBias);
        const float* a_log = store_.get(m + "A_log", {nh}, Init::ALog);
        M.A.resize(static_cast<size_t>(nh));
        for (int64_t h = 0; h < nh; ++h) M.A[h] = -std::exp(a_log[h]);
        M.D = store_.get(m + "D", {nh}, Init::Ones);
        M.norm = store_.get(m + "norm.weight", {I}, Init::Norm);
        M.out_proj = store_.get(m + "out_proj.weight", {H, I});
        M.out_proj_b = spec_.mamba_proj_bias ? store_.get(m + "out_proj.bias", {H}, Init::Bias) : nullptr;
        M.index = n_mamba_++;
        break;
      }
      case BlockKind::Attention: {
        const int64_t qd = static_cast<int64_t>(spec_.num_attention_heads) * spec_.head_dim;
        const int64_t kvd = static_cast<int64_t>(spec_.num_key_value_heads) * spec_.head_dim;
        auto& A = L.attn;
        const bool b = spec_.attention_bias;
        A.q = store_.get(m + "q_proj.weight", {qd, H});
        A.k = store_.get(m + "k_proj.weight", {kvd, H});
        A.v = store_.get(m + "v_proj.weight", {kvd, H});
        A.o = store_.get(m + "o_proj.weight", {H, qd});
        A.qb = b ? store_.get(m + "q_proj.bias", {qd}, Init::Bias) : nullptr;
        A.kb = b ? store_.get(m + "k_proj.bias", {kvd}, Init::Bias) : nullptr;
        A.vb = b ? store_.get(m + "v_proj.bias", {kvd}, Init::Bias) : nullptr;
        A.ob = b ? store_.get(m + "o_proj.bias", {H}, Init::Bias) : nullptr;
        // MTP attention layers get KV pools after the main model's (allocate_state)
        A.index = in_mtp ? -1 - n_mtp_attn_++ : n_attn_++;
        break;
      }
      case BlockKind::MLP:
        L.mlp = load_mlp(m, H, spec_.intermediate_size);
        break;
      case BlockKind::MoE: {
        auto& E = L.moe;
        const int64_t nE = spec_.n_routed_experts, Din = spec_.moe_input_size(), inter = spec_.moe_intermediate_size;
        E.gate = store_.get(m + "gate.weight", {nE, H});
        E.correction_bias = store_.get(m + "gate.e_score_correction_bias", {nE}, Init::Bias);
        if (spec_.moe_latent_size > 0) {
          const int64_t Lt = spec_.moe_latent_size;
          E.fc1 = store_.get(m + "fc1_latent_proj.weight", {Lt, H});
          E.fc1_b = spec_.mlp_bias ? store_.get(m + "fc1_latent_proj.bias", {Lt}, Init::Bias) : nullptr;
          E.fc2 = store_.get(m + "fc2_latent_proj.weight", {H, Lt});
          E.fc2_b = spec_.mlp_bias ? store_.get(m + "fc2_latent_proj.bias", {H}, Init::Bias) : nullptr;
        }
        for (int64_t e = 0; e < nE; ++e) {
          const std::string ep = m + "experts." + std::to_string(e) + ".";
          const bool held = in_mtp || ep_.holds(static_cast<int>(e));
          E.up.push_back(held ? store_.get(ep + "up_proj.weight", {inter, Din}) : nullptr);
          E.down.push_back(held ? store_.get(ep + "down_proj.weight", {Din, inter}) : nullptr);
        }
        E.index = in_mtp ? -1 : n_moe_++;  // -1: routed locally, outside the group's dispatch and counters
        E.shared = load_mlp(m + "shared_experts.", H, spec_.moe_shared_expert_intermediate_size);
        break;
      }
    }
    return L;
  }

  void load() {
    const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
    embed_ = store_.get("backbone.embeddings.weight", {V, H}, Init::Embedding);
    for (size_t i = 0; i < spec_.pattern.size(); ++i)
      layers_.push_back(load_block(static_cast<BlockKind>(spec_.pattern[i]), "backbone.layers." + std::to_string(i) + ".", false));
    norm_f_ = store_.get("backbone.norm_f.weight", {H}, Init::Norm);
    if (store_.has("lm_head.weight") || !spec_.tie_word_embeddings) lm_head_ = store_.get("lm_head.weight", {V, H});
    else lm_head_ = embed_;
    if (opts_.mtp) load_mtp();
  }

  /** The released layout (kernels/dev/REFERENCE.md §10): mtp.layers.{j} for each char of the MTP pattern. */
  void load_mtp() {
    const int64_t H = spec_.hidden_size;
    const std::string first = "mtp.layers.0.", last = "mtp.layers." + std::to_string(spec_.mtp_pattern.size() - 1) + ".";
    mtp_.enorm = store_.get(first + "enorm.weight", {H}, Init::Norm);
    mtp_.hnorm = store_.get(first + "hnorm.weight", {H}, Init::Norm);
    mtp_.eh_proj = store_.get(first + "eh_proj.weight", {H, 2 * H});
    for (size_t j = 0; j < spec_.mtp_pattern.size(); ++j)
      mtp_.blocks.push_back(load_block(static_cast<BlockKind>(spec_.mtp_pattern[j]), "mtp.layers." + std::to_string(j) + ".", true));
    mtp_.final_norm = store_.get(last + "final_layernorm.weight", {H}, Init::Norm);
    for (Layer& L : mtp_.blocks)
      if (L.kind == BlockKind::Attention) L.attn.index = n_attn_ + (-1 - L.attn.index);
    // int8 copies for drafting (the router gate stays fp32: expert choice is sensitive to it)
    auto q8 = [&](const float* W, int64_t N, int64_t K) {
      if (W) draft_q8_.emplace(W, cpu::quantize_rows(W, N, K));
    };
    const int64_t V = spec_.vocab_size;
    q8(mtp_.eh_proj, H, 2 * H);
    q8(lm_head_, V, H);
    for (const Layer& L : mtp_.blocks) {
      const int64_t qd = static_cast<int64_t>(spec_.num_attention_heads) * spec_.head_dim, kvd = static_cast<int64_t>(spec_.num_key_value_heads) * spec_.head_dim;
      switch (L.kind) {
        case BlockKind::Attention:
          q8(L.attn.q, qd, H), q8(L.attn.k, kvd, H), q8(L.attn.v, kvd, H), q8(L.attn.o, H, qd);
          break;
        case BlockKind::MLP:
          q8(L.mlp.up, spec_.intermediate_size, H), q8(L.mlp.down, H, spec_.intermediate_size);
          break;
        case BlockKind::MoE: {
          const int64_t Din = spec_.moe_input_size(), inter = spec_.moe_intermediate_size, sh = spec_.moe_shared_expert_intermediate_size;
          if (spec_.moe_latent_size > 0) q8(L.moe.fc1, Din, H), q8(L.moe.fc2, H, Din);
          for (size_t e = 0; e < L.moe.up.size(); ++e) q8(L.moe.up[e], inter, Din), q8(L.moe.down[e], Din, inter);
          q8(L.moe.shared.up, sh, H), q8(L.moe.shared.down, H, sh);
          break;
        }
        case BlockKind::Mamba:
          break;
      }
    }
  }

  void allocate_state() {
    conv_state_.assign(static_cast<size_t>(n_mamba_) * opts_.max_slots * conv_state_size(), 0.f);
    ssm_state_.assign(static_cast<size_t>(n_mamba_) * opts_.max_slots * ssm_state_size(), 0.f);
    k_cache_.assign(static_cast<size_t>(n_attn_ + n_mtp_attn_) * kv_layer_size(), 0.f);
    v_cache_.assign(static_cast<size_t>(n_attn_ + n_mtp_attn_) * kv_layer_size(), 0.f);
    mtp_pos_.assign(static_cast<size_t>(opts_.max_slots), -1);
    mtp_token_.assign(static_cast<size_t>(opts_.max_slots), -1);
    if (opts_.mtp) mtp_hidden_.assign(static_cast<size_t>(opts_.max_slots) * spec_.hidden_size, 0.f);
    if (opts_.mtp) mtp_pending_.resize(static_cast<size_t>(opts_.max_slots));
  }

  void mamba(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h);
  /**
   * With `keep` (per sequence, how many of its last rows go on): K/V of every row are written but
   * only the kept rows attend, and `h` holds just those rows (sum of keep, H), in batch order.
   */
  void attention(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h, const std::vector<int64_t>* keep = nullptr);
  void mlp(const MlpLayer& W, int64_t in, int64_t inter, const float* u, int64_t R, float* out);
  void moe(const Layer& L, const float* u, int64_t R, float* h);
  void block(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, float* u, int64_t R, float* h);
  /**
   * The MTP head over rows (next token, hidden); `batch` gives each sequence's rows, KV positions and
   * blocks. Every row's attention KV is written; out (sum of keep, H) holds the head's output for the
   * last keep[i] rows of each sequence (keep nullptr: every row).
   */
  void mtp_forward(const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* hidden, int64_t R, float* out, const std::vector<int64_t>* keep = nullptr);
  /** `h` (rows, H): the main model's hidden states before norm_f (the head's rows are normalised when it reads them). */
  void mtp_step(const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* h, const std::vector<int64_t>& last, StepOutput& out);
  std::vector<int32_t> greedy(const float* x, int64_t rows, std::vector<float>* logits_out = nullptr);
  StepOutput forward(const std::vector<StepSeq>& batch);
};

void CpuEngine::mamba(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h) {
  const MambaLayer& M = L.mamba;
  const int64_t H = spec_.hidden_size, I = spec_.mamba_inner(), CD = spec_.conv_dim(), nh = spec_.mamba_num_heads;
  const int64_t P = spec_.mamba_head_dim, G = spec_.n_groups, N = spec_.ssm_state_size, K = spec_.conv_kernel;
  const int64_t proj = I + CD + nh;
  std::vector<float> zxbcdt(static_cast<size_t>(R * proj));  // (R, z | xBC | dt)
  cpu::gemm_xwt(pool_, u, R, H, M.in_proj, proj, zxbcdt.data(), M.in_proj_b);
  std::vector<float> y(static_cast<size_t>(R * I)), normed(static_cast<size_t>(R * I));
  std::vector<float> conv_w(static_cast<size_t>(CD * K));
  std::copy(M.conv_w, M.conv_w + CD * K, conv_w.begin());
  // the conv and the scan of each sequence (its own slot state and rows): sequences side by side on the pool
  auto run_seq = [&](size_t i) {
    const int64_t T = static_cast<int64_t>(batch[i].tokens.size()), r0 = row0[i];
    std::vector<float> xbc(static_cast<size_t>(T * CD)), dt(static_cast<size_t>(T * nh));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < nh; ++hh) {
        float d = cpu::softplus(zxbcdt[(r0 + t) * proj + I + CD + hh] + M.dt_bias[hh]);
        dt[t * nh + hh] = std::min(std::max(d, spec_.time_step_min), spec_.time_step_max);
      }
    float* conv = conv_state(M.index, batch[i].slot);
    float* ssm = ssm_state(M.index, batch[i].slot);
    if (const int k = batch[i].num_drafts; k > 0) {
      // Verifying drafts: token by token (the decode recurrence, so every kept position computes
      // exactly what a non-speculative decode step would), keeping the state after each of the
      // last k+1 positions; forward() restores the one after the last accepted token.
      float* keep = verify_states_[i].data() + static_cast<int64_t>(M.index) * (k + 1) * (conv_state_size() + ssm_state_size());
      for (int64_t t = 0; t < T; ++t) {
        float* x = xbc.data() + t * CD;
        cpu::causal_conv1d_silu(zxbcdt.data() + (r0 + t) * proj + I, proj, 1, CD, K, conv_w.data(), M.conv_b, conv, x);
        cpu::SsmArgs a{1, nh, P, G, N, x, CD, x + I, x + I + G * N, CD, dt.data() + t * nh, M.A.data(), M.D, ssm, y.data() + (r0 + t) * I};
        cpu::ssm_recurrent_scan(a);
        if (const int64_t j = t - (T - 1 - k); j >= 0) {
          float* dst = keep + j * (conv_state_size() + ssm_state_size());
          std::copy_n(conv, conv_state_size(), dst);
          std::copy_n(ssm, ssm_state_size(), dst + conv_state_size());
        }
      }
      return;
    }
    cpu::causal_conv1d_silu(zxbcdt.data() + r0 * proj + I, proj, T, CD, K, conv_w.data(), M.conv_b, conv, xbc.data());
    cpu::SsmArgs a{T, nh, P, G, N, xbc.data(), CD, xbc.data() + I, xbc.data() + I + G * N, CD, dt.data(), M.A.data(), M.D, ssm, y.data() + r0 * I};
    if (T == 1) cpu::ssm_recurrent_scan(a);
    else cpu::ssd_chunked_scan(a, spec_.chunk_size);
  };
  for_each_seq(batch.size(), run_seq);
  pool_.parallel_for(
      R, [&](int64_t r0, int64_t r1) { cpu::gated_group_rmsnorm(y.data() + r0 * I, zxbcdt.data() + r0 * proj, proj, M.norm, r1 - r0, I, I / G, spec_.norm_eps, normed.data() + r0 * I); }, 4);
  std::vector<float> out(static_cast<size_t>(R * H));
  cpu::gemm_xwt(pool_, normed.data(), R, I, M.out_proj, H, out.data(), M.out_proj_b);
  for (int64_t i = 0; i < R * H; ++i) h[i] += out[i];
}

void CpuEngine::attention(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h, const std::vector<int64_t>* keep) {
  const AttentionLayer& A = L.attn;
  const int64_t H = spec_.hidden_size, nq = spec_.num_attention_heads, nkv = spec_.num_key_value_heads, hd = spec_.head_dim;
  const int64_t bs = opts_.kv_block_size;
  // the rows that attend: all, or the last keep[i] of each sequence (their inputs gathered)
  std::vector<int64_t> qrow0(batch.size()), nq_rows(batch.size());
  int64_t QR = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    qrow0[i] = QR;
    nq_rows[i] = keep ? (*keep)[i] : static_cast<int64_t>(batch[i].tokens.size());
    QR += nq_rows[i];
  }
  std::vector<float> gathered;
  const float* uq = u;
  if (keep && QR < R) {
    gathered.resize(static_cast<size_t>(QR * H));
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t first = row0[i] + static_cast<int64_t>(batch[i].tokens.size()) - nq_rows[i];
      std::copy_n(u + first * H, nq_rows[i] * H, gathered.begin() + qrow0[i] * H);
    }
    uq = gathered.data();
  }
  std::vector<float> q(static_cast<size_t>(QR * nq * hd)), k(static_cast<size_t>(R * nkv * hd)), v(static_cast<size_t>(R * nkv * hd));
  proj(uq, QR, H, A.q, nq * hd, q.data(), A.qb);
  proj(u, R, H, A.k, nkv * hd, k.data(), A.kb);
  proj(u, R, H, A.v, nkv * hd, v.data(), A.vb);
  float* kc = k_cache_.data() + A.index * kv_layer_size();
  float* vc = v_cache_.data() + A.index * kv_layer_size();
  std::vector<float> o(static_cast<size_t>(QR * nq * hd));
  for_each_seq(batch.size(), [&](size_t i) {
    const auto& s = batch[i];
    const int64_t T = static_cast<int64_t>(s.tokens.size()), r0 = row0[i];
    for (int64_t t = 0; t < T; ++t) {
      const int64_t pos = s.position + t;
      const int64_t dst = (static_cast<int64_t>(s.block_table[pos / bs]) * bs + pos % bs) * nkv * hd;
      std::copy(k.begin() + (r0 + t) * nkv * hd, k.begin() + (r0 + t + 1) * nkv * hd, kc + dst);
      std::copy(v.begin() + (r0 + t) * nkv * hd, v.begin() + (r0 + t + 1) * nkv * hd, vc + dst);
    }
    if (nq_rows[i] > 0)
      cpu::paged_attention(q.data() + qrow0[i] * nq * hd, nq_rows[i], s.position + T - nq_rows[i], nq, nkv, hd, kc, vc, s.block_table.data(), bs, o.data() + qrow0[i] * nq * hd);
  });
  std::vector<float> out(static_cast<size_t>(QR * H));
  proj(o.data(), QR, nq * hd, A.o, H, out.data(), A.ob);
  for (int64_t i = 0; i < QR * H; ++i) h[i] += out[i];
}

void CpuEngine::mlp(const MlpLayer& W, int64_t in, int64_t inter, const float* u, int64_t R, float* out) {
  std::vector<float> a(static_cast<size_t>(R * inter));
  proj(u, R, in, W.up, inter, a.data(), W.up_b);
  for (float& x : a) x = cpu::relu2(x);
  proj(a.data(), R, inter, W.down, in, out, W.down_b);
}

void CpuEngine::moe(const Layer& L, const float* u, int64_t R, float* h) {
  const MoeLayer& E = L.moe;
  const int64_t H = spec_.hidden_size, nE = spec_.n_routed_experts, k = spec_.num_experts_per_tok, Din = spec_.moe_input_size();
  const int64_t inter = spec_.moe_intermediate_size;
  std::vector<float> logits(static_cast<size_t>(R * nE));
  cpu::gemm_xwt(pool_, u, R, H, E.gate, nE, logits.data());
  std::vector<int32_t> chosen(static_cast<size_t>(R * k));
  std::vector<float> weight(static_cast<size_t>(R * k));
  for (int64_t r = 0; r < R; ++r)
    cpu::moe_route(logits.data() + r * nE, E.correction_bias, nE, spec_.n_group, spec_.topk_group, k, spec_.norm_topk_prob, spec_.routed_scaling_factor, chosen.data() + r * k, weight.data() + r * k);
  std::vector<float> latent;
  const float* v = u;
  if (spec_.moe_latent_size > 0) {
    latent.resize(static_cast<size_t>(R * Din));
    proj(u, R, H, E.fc1, Din, latent.data(), E.fc1_b);
    v = latent.data();
  }
  // Routed experts: local or across the group; each expert runs once over all its rows.
  std::vector<float> routed(static_cast<size_t>(R * Din)), act;
  auto run_expert = [&](int e, const float* x, int64_t m, float* y) {
    act.resize(static_cast<size_t>(m * inter));
    proj(x, m, Din, E.up[e], inter, act.data());
    for (float& a : act) a = cpu::relu2(a);
    proj(act.data(), m, inter, E.down[e], Din, y);
  };
  if (E.index >= 0) {
    ep_.dispatch_combine(E.index, v, R, chosen.data(), weight.data(), run_expert, routed.data());
  } else {
    // the MTP block's MoE: every expert local; each expert once over its rows, summed per row in
    // ascending expert order (the order dispatch_combine uses)
    std::vector<float> pair_out(static_cast<size_t>(R * k * Din)), x, y;
    std::vector<int64_t> pairs;
    for (int e = 0; e < nE; ++e) {
      pairs.clear();
      for (int64_t p = 0; p < R * k; ++p)
        if (chosen[p] == e) pairs.push_back(p);
      if (pairs.empty()) continue;
      const int64_t m = static_cast<int64_t>(pairs.size());
      x.resize(static_cast<size_t>(m * Din));
      y.resize(static_cast<size_t>(m * Din));
      for (int64_t j = 0; j < m; ++j) std::copy_n(v + (pairs[j] / k) * Din, Din, x.begin() + j * Din);
      run_expert(e, x.data(), m, y.data());
      for (int64_t j = 0; j < m; ++j) std::copy_n(y.begin() + j * Din, Din, pair_out.begin() + pairs[j] * Din);
    }
    std::vector<int64_t> order(static_cast<size_t>(k));
    for (int64_t r = 0; r < R; ++r) {
      std::iota(order.begin(), order.end(), r * k);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return chosen[a] < chosen[b]; });
      float* dst = routed.data() + r * Din;
      std::fill_n(dst, Din, 0.f);
      for (int64_t p : order)
        for (int64_t d = 0; d < Din; ++d) dst[d] += weight[p] * pair_out[p * Din + d];
    }
  }
  std::vector<float> out(static_cast<size_t>(R * H));
  if (spec_.moe_latent_size > 0) proj(routed.data(), R, Din, E.fc2, H, out.data(), E.fc2_b);
  else out.swap(routed);
  std::vector<float> shared(static_cast<size_t>(R * H));
  mlp(E.shared, H, spec_.moe_shared_expert_intermediate_size, u, R, shared.data());
  for (int64_t i = 0; i < R * H; ++i) h[i] += out[i] + shared[i];
}

void CpuEngine::block(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, float* u, int64_t R, float* h) {
  const int64_t H = spec_.hidden_size;
  const auto t0 = prof_.start();
  cpu::rmsnorm(h, L.norm, R, H, spec_.norm_eps, u);
  switch (L.kind) {
    case BlockKind::Mamba:
      mamba(L, batch, row0, u, R, h);
      prof_.add("mamba", t0);
      break;
    case BlockKind::Attention:
      attention(L, batch, row0, u, R, h);
      prof_.add(in_mtp_ ? "mtp.attention" : "attention", t0);
      break;
    case BlockKind::MoE:
      moe(L, u, R, h);
      prof_.add(in_mtp_ ? "mtp.moe" : "moe", t0);
      break;
    case BlockKind::MLP: {
      std::vector<float> o(static_cast<size_t>(R * H));
      mlp(L.mlp, H, spec_.intermediate_size, u, R, o.data());
      for (int64_t i = 0; i < R * H; ++i) h[i] += o[i];
      prof_.add(in_mtp_ ? "mtp.mlp" : "mlp", t0);
      break;
    }
  }
}

StepOutput CpuEngine::forward(const std::vector<StepSeq>& batch) {
  validate_batch(spec_, opts_, n_attn_ + n_mtp_attn_ > 0, batch);
  auto t = prof_.start();
  const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
  const int64_t state_size = conv_state_size() + ssm_state_size();
  std::vector<int64_t> row0(batch.size());
  int64_t R = 0;
  if (verify_states_.size() < batch.size()) verify_states_.resize(batch.size());  // buffers kept across steps: no zero-fill per step
  for (size_t i = 0; i < batch.size(); ++i) {
    row0[i] = R;
    R += static_cast<int64_t>(batch[i].tokens.size());
    if (batch[i].position == 0) {
      for (int l = 0; l < n_mamba_; ++l) {
        std::fill_n(conv_state(l, batch[i].slot), conv_state_size(), 0.f);
        std::fill_n(ssm_state(l, batch[i].slot), ssm_state_size(), 0.f);
      }
      if (opts_.mtp) {
        mtp_pos_[batch[i].slot] = -1;
        mtp_pending_[batch[i].slot].clear();
      }
    }
    if (const size_t need = static_cast<size_t>(n_mamba_ * (batch[i].num_drafts + 1) * state_size); batch[i].num_drafts > 0 && verify_states_[i].size() < need) verify_states_[i].resize(need);
  }
  StepOutput out;
  out.tokens.assign(batch.size(), -1);
  out.num_accepted.assign(batch.size(), 0);
  out.group_tokens = ep_.begin_step(R);
  if (out.group_tokens == 0) return out;  // the whole group is idle (a rank with R == 0 still runs the MoE collectives)
  std::vector<float> h(static_cast<size_t>(R * H)), u(static_cast<size_t>(R * H));
  for (size_t i = 0; i < batch.size(); ++i)
    for (size_t j = 0; j < batch[i].tokens.size(); ++j)
      std::copy(embed_ + batch[i].tokens[j] * H, embed_ + (batch[i].tokens[j] + 1) * H, h.begin() + (row0[i] + static_cast<int64_t>(j)) * H);
  t = prof_.add("embed", t);
  for (const Layer& L : layers_) block(L, batch, row0, u.data(), R, h.data());
  t = prof_.start();

  // Rows whose logits are needed, per sequence a block [lo, T): every row when asked for all, the
  // k+1 verified positions with k drafts, else the last row of a sampling sequence.
  std::vector<int64_t> lo(batch.size(), -1), first_row(batch.size(), 0), rows;
  for (size_t i = 0; i < batch.size(); ++i) {
    const StepSeq& s = batch[i];
    const int64_t T = static_cast<int64_t>(s.tokens.size());
    if (s.logits == LogitsMode::All) lo[i] = 0;
    else if (s.num_drafts > 0) lo[i] = T - 1 - s.num_drafts;
    else if (s.sample || s.logits == LogitsMode::Last) lo[i] = T - 1;
    first_row[i] = static_cast<int64_t>(rows.size());
    if (lo[i] >= 0)
      for (int64_t t = lo[i]; t < T; ++t) rows.push_back(row0[i] + t);
  }
  // Hidden states after norm_f of the selected rows (the MTP head normalises the rows it reads itself).
  const int64_t NL = static_cast<int64_t>(rows.size());
  std::vector<float> hn(static_cast<size_t>(NL * H)), logits(static_cast<size_t>(NL * V));
  for (int64_t j = 0; j < NL; ++j) cpu::rmsnorm(h.data() + rows[j] * H, norm_f_, 1, H, spec_.norm_eps, hn.data() + j * H);
  cpu::gemm_xwt(pool_, hn.data(), NL, H, lm_head_, V, logits.data());
  t = prof_.add("lm_head", t);

  std::vector<int64_t> last(batch.size());  // the last accepted row of each sequence
  // sampling and verification, sequences side by side (each reads its rows, writes its slot)
  for_each_seq(batch.size(), [&](size_t i) {
    const StepSeq& s = batch[i];
    const int64_t T = static_cast<int64_t>(s.tokens.size());
    const int k = s.num_drafts;
    last[i] = T - 1;
    if (s.sample) {
      const float* L0 = logits.data() + (first_row[i] + (T - 1 - k - lo[i])) * V;  // the row before the first draft
      const Verdict v = verify_drafts(L0, static_cast<int>(V), s.sampling, s.position + T - k, s.tokens.data() + (T - k), k);
      out.tokens[i] = v.token;
      out.num_accepted[i] = v.accepted;
      last[i] = T - 1 - k + v.accepted;
      if (v.accepted < k)  // roll the Mamba state back to the last accepted token; later KV is never read
        for (int l = 0; l < n_mamba_; ++l) {
          const float* src = verify_states_[i].data() + (static_cast<int64_t>(l) * (k + 1) + v.accepted) * state_size;
          std::copy_n(src, conv_state_size(), conv_state(l, s.slot));
          std::copy_n(src + conv_state_size(), ssm_state_size(), ssm_state(l, s.slot));
        }
    }
  });
  for (size_t i = 0; i < batch.size(); ++i) {
    const StepSeq& s = batch[i];
    const int64_t T = static_cast<int64_t>(s.tokens.size());
    if (s.logits == LogitsMode::All) out.logits.insert(out.logits.end(), logits.begin() + first_row[i] * V, logits.begin() + (first_row[i] + T) * V);
    else if (s.logits == LogitsMode::Last) {
      const int64_t j = first_row[i] + (last[i] - lo[i]);
      out.logits.insert(out.logits.end(), logits.begin() + j * V, logits.begin() + (j + 1) * V);
    }
  }
  prof_.add("sample", t);
  if (opts_.mtp) mtp_step(batch, row0, h.data(), last, out);
  prof_.end_step();
  return out;
}

std::vector<int32_t> CpuEngine::greedy(const float* x, int64_t n, std::vector<float>* logits_out) {
  const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
  const auto t = prof_.start();
  std::vector<float> logits(static_cast<size_t>(n * V));
  proj(x, n, H, lm_head_, V, logits.data());
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) out[r] = sample_token(logits.data() + r * V, static_cast<int>(V), Sampling{}, 0);
  if (logits_out) *logits_out = std::move(logits);
  prof_.add("mtp.lm_head", t);
  return out;
}

void CpuEngine::mtp_forward(const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* hidden, int64_t R, float* out, const std::vector<int64_t>* keep) {
  const int64_t H = spec_.hidden_size;
  auto t = prof_.start();
  std::vector<float> cat(static_cast<size_t>(R * 2 * H)), x(static_cast<size_t>(R * H)), u(static_cast<size_t>(R * H));
  for (size_t i = 0; i < batch.size(); ++i)
    for (size_t j = 0; j < batch[i].tokens.size(); ++j) {
      const int64_t r = row0[i] + static_cast<int64_t>(j);
      cpu::rmsnorm(embed_ + static_cast<int64_t>(batch[i].tokens[j]) * H, mtp_.enorm, 1, H, spec_.norm_eps, cat.data() + r * 2 * H);  // embedding half first
      cpu::rmsnorm(hidden + r * H, mtp_.hnorm, 1, H, spec_.norm_eps, cat.data() + r * 2 * H + H);
    }
  proj(cat.data(), R, 2 * H, mtp_.eh_proj, H, x.data());
  t = prof_.add("mtp.eh_proj", t);
  // Rows that only feed the attention KV (keep) leave after the last attention block: their
  // queries, attention, MoE and output are never computed.
  bool compact = false;
  if (keep)
    for (size_t i = 0; i < batch.size(); ++i) compact = compact || (*keep)[i] < static_cast<int64_t>(batch[i].tokens.size());
  int last_attn = -1;
  for (size_t b = 0; b < mtp_.blocks.size(); ++b)
    if (mtp_.blocks[b].kind == BlockKind::Attention) last_attn = static_cast<int>(b);
  std::vector<StepSeq> kept;
  std::vector<int64_t> kept_row0;
  int64_t KR = 0;
  if (compact) {
    kept.resize(batch.size());
    kept_row0.resize(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t T = static_cast<int64_t>(batch[i].tokens.size()), n = (*keep)[i];
      kept[i].slot = batch[i].slot;
      kept[i].position = static_cast<int>(batch[i].position + T - n);
      kept[i].tokens.assign(batch[i].tokens.end() - n, batch[i].tokens.end());
      kept[i].block_table = batch[i].block_table;
      kept_row0[i] = KR;
      KR += n;
    }
  }
  // x (rows, H) → only the kept rows, in batch order
  auto gather_kept = [&](const float* src) {
    std::vector<float> g(static_cast<size_t>(KR * H));
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t first = row0[i] + static_cast<int64_t>(batch[i].tokens.size()) - (*keep)[i];
      std::copy_n(src + first * H, (*keep)[i] * H, g.begin() + kept_row0[i] * H);
    }
    return g;
  };
  in_mtp_ = true;
  if (compact && last_attn < 0) {
    x = gather_kept(x.data());
    R = KR;
  }
  for (size_t b = 0; b < mtp_.blocks.size(); ++b) {
    const Layer& L = mtp_.blocks[b];
    const bool compacted = compact && static_cast<int>(b) > last_attn;
    if (compact && static_cast<int>(b) == last_attn) {
      t = prof_.start();
      cpu::rmsnorm(x.data(), L.norm, R, H, spec_.norm_eps, u.data());
      std::vector<float> xk = gather_kept(x.data());
      attention(L, batch, row0, u.data(), R, xk.data(), keep);
      x.swap(xk);
      R = KR;
      prof_.add("mtp.attention", t);
      continue;
    }
    block(L, compacted ? kept : batch, compacted ? kept_row0 : row0, u.data(), R, x.data());
  }
  in_mtp_ = false;
  cpu::rmsnorm(x.data(), mtp_.final_norm, R, H, spec_.norm_eps, out);
}

// The MTP head reads (hidden h_j after norm_f, token j+1) for every accepted position j of every
// sequence, so its attention KV covers the whole context; the row of the last accepted position
// pairs with the token sampled now and yields the first draft, and each further draft feeds the
// head its own output with the previous draft (KV at the following positions, overwritten by the
// true rows in the next step). A position whose next token is not known yet (the end of a prefill
// chunk) is kept per slot and completed by the next step's first token.
void CpuEngine::mtp_step(const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* h, const std::vector<int64_t>& last, StepOutput& out) {
  // `h` holds rows before norm_f: pending rows and mtp_hidden_ keep them so, and `hidden` is
  // normalised in one pass before the head reads it (rmsnorm is per row: the same values whenever)
  const int64_t H = spec_.hidden_size;
  const int64_t max_pending = std::min<int64_t>(MTP_PENDING_ROWS, std::max<int64_t>(1, MTP_PENDING_BYTES / static_cast<int64_t>(H * sizeof(float))));
  std::vector<StepSeq> mb;
  std::vector<int64_t> mrow0, seq_of, keep;
  std::vector<float> hidden;
  int64_t MR = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const StepSeq& s = batch[i];
    const int64_t P = s.position;
    PendingRows& pend = mtp_pending_[s.slot];
    const float* h_last = h + (row0[i] + last[i]) * H;
    const bool known = s.sample;  // the last row's next token: the one sampled now
    // Rows the head has not seen before this step: the skipped ones (when they join up with this
    // step), else the last accepted row again when its next token was not known or has changed.
    if (!pend.next.empty() && pend.pos0 + static_cast<int64_t>(pend.next.size()) != P) pend.clear();
    if (!pend.next.empty()) {
      if (pend.next.back() < 0) pend.next.back() = s.tokens[0];
    } else if (P > 0 && mtp_pos_[s.slot] == P - 1 && mtp_token_[s.slot] != s.tokens[0]) {
      pend.pos0 = P - 1;
      pend.next.push_back(s.tokens[0]);
      pend.hidden.insert(pend.hidden.end(), mtp_hidden_.begin() + s.slot * H, mtp_hidden_.begin() + (s.slot + 1) * H);
    }
    mtp_pos_[s.slot] = P + last[i];
    std::copy_n(h_last, H, mtp_hidden_.begin() + s.slot * H);
    mtp_token_[s.slot] = s.mtp_skip || !known ? -1 : out.tokens[i];
    if (s.mtp_skip) {
      // keep this step's rows for the step that runs the head next (at most the newest max_pending;
      // trimmed with slack so that each step's cost stays independent of how much is kept)
      if (pend.next.empty()) pend.pos0 = P;
      for (int64_t t = 0; t < last[i]; ++t) pend.next.push_back(s.tokens[t + 1]);
      pend.next.push_back(known ? out.tokens[i] : -1);
      pend.hidden.insert(pend.hidden.end(), h + row0[i] * H, h_last + H);
      if (const int64_t n = static_cast<int64_t>(pend.next.size()); n > max_pending + max_pending / 4) {
        const int64_t drop = n - max_pending;
        pend.next.erase(pend.next.begin(), pend.next.begin() + drop);
        pend.hidden.erase(pend.hidden.begin(), pend.hidden.begin() + drop * H);
        pend.pos0 += drop;
      }
      continue;
    }
    // this sequence's rows for the head at positions [q.position, ...): the pending ones, then this
    // step's accepted rows; the last waits in pending when its next token is not known yet
    StepSeq q;
    q.slot = s.slot;
    q.position = static_cast<int>(pend.next.empty() ? P : pend.pos0);
    q.block_table = s.block_table;
    q.tokens.swap(pend.next);
    hidden.insert(hidden.end(), pend.hidden.begin(), pend.hidden.end());
    pend.clear();
    for (int64_t t = 0; t < last[i]; ++t) q.tokens.push_back(s.tokens[t + 1]);
    hidden.insert(hidden.end(), h + row0[i] * H, h_last);
    if (known) {
      q.tokens.push_back(out.tokens[i]);
      hidden.insert(hidden.end(), h_last, h_last + H);
    } else {
      pend.pos0 = P + last[i];
      pend.next.assign(1, -1);
      pend.hidden.assign(h_last, h_last + H);
    }
    if (q.tokens.empty()) continue;
    mrow0.push_back(MR);
    MR += static_cast<int64_t>(q.tokens.size());
    seq_of.push_back(static_cast<int64_t>(i));
    // the rows whose output is read: all for mtp_logits, the last for drafting, else none (KV only)
    keep.push_back(s.mtp_logits ? static_cast<int64_t>(q.tokens.size()) : s.draft_tokens > 0 ? 1 : 0);
    mb.push_back(std::move(q));
  }
  if (MR == 0) return;
  cpu::rmsnorm(hidden.data(), norm_f_, MR, H, spec_.norm_eps, hidden.data());
  int64_t KR = 0;
  std::vector<int64_t> krow0;
  for (int64_t n : keep) {
    krow0.push_back(KR);
    KR += n;
  }
  std::vector<float> y(static_cast<size_t>(std::max<int64_t>(KR, 1) * H));
  // the head's int8 copies unless a sequence wants its logits (then every pass of this step is fp32)
  struct Q8Scope {
    bool& on;
    ~Q8Scope() { on = false; }
  } q8_scope{drafting_q8_};
  drafting_q8_ = std::none_of(seq_of.begin(), seq_of.end(), [&](int64_t i) { return batch[static_cast<size_t>(i)].mtp_logits; });
  mtp_forward(mb, mrow0, hidden.data(), MR, y.data(), &keep);
  const int64_t V = spec_.vocab_size;
  std::vector<std::vector<float>> mtp_rows(batch.size());  // per sequence asking for the head's logits
  for (size_t m = 0; m < mb.size(); ++m) {
    const size_t i = static_cast<size_t>(seq_of[m]);
    if (!batch[i].mtp_logits) continue;
    mtp_rows[i].resize(static_cast<size_t>(keep[m] * V));
    cpu::gemm_xwt(pool_, y.data() + krow0[m] * H, keep[m], H, lm_head_, V, mtp_rows[i].data());
  }

  // Drafting: round r proposes draft r of every sequence that asked for at least r.
  std::vector<std::vector<int32_t>> drafts(batch.size());
  std::vector<float> cur;           // (sequences drafting, H): the head's last output
  std::vector<int64_t> drafting;    // their batch indices
  for (size_t m = 0; m < mb.size(); ++m) {
    const size_t i = static_cast<size_t>(seq_of[m]);
    if (batch[i].draft_tokens == 0) continue;
    const int64_t r = krow0[m] + keep[m] - 1;
    cur.insert(cur.end(), y.begin() + r * H, y.begin() + (r + 1) * H);
    drafting.push_back(static_cast<int64_t>(i));
  }
  for (int round = 1; !drafting.empty(); ++round) {
    std::vector<float> round_logits;
    const std::vector<int32_t> d = greedy(cur.data(), static_cast<int64_t>(drafting.size()), &round_logits);
    if (round > 1)  // round 1 read the first pass's last row, already in mtp_rows
      for (size_t j = 0; j < drafting.size(); ++j)
        if (auto& rows = mtp_rows[static_cast<size_t>(drafting[j])]; batch[static_cast<size_t>(drafting[j])].mtp_logits)
          rows.insert(rows.end(), round_logits.begin() + static_cast<int64_t>(j) * V, round_logits.begin() + static_cast<int64_t>(j + 1) * V);
    std::vector<StepSeq> nb;
    std::vector<int64_t> nrow0, still;
    std::vector<float> next;
    for (size_t j = 0; j < drafting.size(); ++j) {
      const StepSeq& s = batch[static_cast<size_t>(drafting[j])];
      drafts[static_cast<size_t>(drafting[j])].push_back(d[j]);
      if (s.draft_tokens <= round) continue;
      StepSeq q;
      q.slot = s.slot;
      q.tokens = {d[j]};
      q.position = static_cast<int>(s.position + last[static_cast<size_t>(drafting[j])] + round);
      q.block_table = s.block_table;
      nrow0.push_back(static_cast<int64_t>(nb.size()));
      nb.push_back(std::move(q));
      next.insert(next.end(), cur.begin() + static_cast<int64_t>(j) * H, cur.begin() + static_cast<int64_t>(j + 1) * H);
      still.push_back(drafting[j]);
    }
    drafting.swap(still);
    if (drafting.empty()) break;
    cur.assign(next.size(), 0.f);
    mtp_forward(nb, nrow0, next.data(), static_cast<int64_t>(nb.size()), cur.data());
  }
  for (const auto& d : drafts) out.drafts.insert(out.drafts.end(), d.begin(), d.end());
  for (const auto& r : mtp_rows) out.mtp_logits.insert(out.mtp_logits.end(), r.begin(), r.end());
}

}  // namespace

#ifdef LM_HAVE_CUDA
std::unique_ptr<Engine> create_cuda_engine(const EngineOptions& options);
#endif

std::unique_ptr<Engine> create_engine(const EngineOptions& options) {
  if (options.backend == "cpu") return std::make_unique<CpuEngine>(options);
  if (options.backend == "cuda") {
    if (options.group.world_size > 1)
      throw Error("expert parallelism (world size " + std::to_string(options.group.world_size) + ") is not implemented on the cuda backend yet (NCCL dispatch/combine is open); use backend 'cpu' or world size 1");
#ifdef LM_HAVE_CUDA
    return create_cuda_engine(options);
#else
    throw Error("this build has no CUDA backend (built without nvcc); use backend 'cpu'");
#endif
  }
  throw Error("unknown backend '" + options.backend + "'");
}

}  // namespace lm
