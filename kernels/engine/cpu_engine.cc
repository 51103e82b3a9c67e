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
#include <cstring>
#include <numeric>

#include "cpu/ops.h"
#include "engine/expert-parallel.h"
#include "engine/sampler.h"
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

class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(const EngineOptions& o)
      : spec_(o.spec), opts_(o), pool_(o.threads), store_(o.tensors, o.dummy, o.dummy_seed), ep_(o.spec, o.group) {
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
    i.num_kv_blocks = n_attn_ > 0 ? opts_.num_kv_blocks : 0;
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
  WeightStore store_;
  ExpertParallel ep_;
  std::vector<Layer> layers_;
  const float *embed_ = nullptr, *norm_f_ = nullptr, *lm_head_ = nullptr;
  int n_mamba_ = 0, n_attn_ = 0, n_moe_ = 0;
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

  void load() {
    const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
    embed_ = store_.get("backbone.embeddings.weight", {V, H}, Init::Embedding);
    for (size_t i = 0; i < spec_.pattern.size(); ++i) {
      const std::string p = "backbone.layers." + std::to_string(i) + ".";
      const std::string m = p + "mixer.";
      Layer L{};
      L.kind = static_cast<BlockKind>(spec_.pattern[i]);
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
          A.index = n_attn_++;
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
            const bool held = ep_.holds(static_cast<int>(e));
            E.up.push_back(held ? store_.get(ep + "up_proj.weight", {inter, Din}) : nullptr);
            E.down.push_back(held ? store_.get(ep + "down_proj.weight", {Din, inter}) : nullptr);
          }
          E.index = n_moe_++;
          E.shared = load_mlp(m + "shared_experts.", H, spec_.moe_shared_expert_intermediate_size);
          break;
        }
      }
      layers_.push_back(std::move(L));
    }
    norm_f_ = store_.get("backbone.norm_f.weight", {H}, Init::Norm);
    if (store_.has("lm_head.weight") || !spec_.tie_word_embeddings) lm_head_ = store_.get("lm_head.weight", {V, H});
    else lm_head_ = embed_;
  }

  void allocate_state() {
    conv_state_.assign(static_cast<size_t>(n_mamba_) * opts_.max_slots * conv_state_size(), 0.f);
    ssm_state_.assign(static_cast<size_t>(n_mamba_) * opts_.max_slots * ssm_state_size(), 0.f);
    k_cache_.assign(static_cast<size_t>(n_attn_) * kv_layer_size(), 0.f);
    v_cache_.assign(static_cast<size_t>(n_attn_) * kv_layer_size(), 0.f);
  }

  void mamba(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h);
  void attention(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h);
  void mlp(const MlpLayer& W, int64_t in, int64_t inter, const float* u, int64_t R, float* out);
  void moe(const Layer& L, const float* u, int64_t R, float* h);
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
  for (size_t i = 0; i < batch.size(); ++i) {
    const int64_t T = static_cast<int64_t>(batch[i].tokens.size()), r0 = row0[i];
    std::vector<float> xbc(static_cast<size_t>(T * CD)), dt(static_cast<size_t>(T * nh));
    cpu::causal_conv1d_silu(zxbcdt.data() + r0 * proj + I, proj, T, CD, K, conv_w.data(), M.conv_b, conv_state(M.index, batch[i].slot), xbc.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < nh; ++hh) {
        float d = cpu::softplus(zxbcdt[(r0 + t) * proj + I + CD + hh] + M.dt_bias[hh]);
        dt[t * nh + hh] = std::min(std::max(d, spec_.time_step_min), spec_.time_step_max);
      }
    cpu::SsmArgs a{T, nh, P, G, N, xbc.data(), CD, xbc.data() + I, xbc.data() + I + G * N, CD, dt.data(), M.A.data(), M.D, ssm_state(M.index, batch[i].slot), y.data() + r0 * I};
    if (T == 1) cpu::ssm_recurrent_scan(a);
    else cpu::ssd_chunked_scan(a, spec_.chunk_size);
  }
  cpu::gated_group_rmsnorm(y.data(), zxbcdt.data(), proj, M.norm, R, I, I / G, spec_.norm_eps, normed.data());
  std::vector<float> out(static_cast<size_t>(R * H));
  cpu::gemm_xwt(pool_, normed.data(), R, I, M.out_proj, H, out.data(), M.out_proj_b);
  for (int64_t i = 0; i < R * H; ++i) h[i] += out[i];
}

void CpuEngine::attention(const Layer& L, const std::vector<StepSeq>& batch, const std::vector<int64_t>& row0, const float* u, int64_t R, float* h) {
  const AttentionLayer& A = L.attn;
  const int64_t H = spec_.hidden_size, nq = spec_.num_attention_heads, nkv = spec_.num_key_value_heads, hd = spec_.head_dim;
  const int64_t bs = opts_.kv_block_size;
  std::vector<float> q(static_cast<size_t>(R * nq * hd)), k(static_cast<size_t>(R * nkv * hd)), v(static_cast<size_t>(R * nkv * hd));
  cpu::gemm_xwt(pool_, u, R, H, A.q, nq * hd, q.data(), A.qb);
  cpu::gemm_xwt(pool_, u, R, H, A.k, nkv * hd, k.data(), A.kb);
  cpu::gemm_xwt(pool_, u, R, H, A.v, nkv * hd, v.data(), A.vb);
  float* kc = k_cache_.data() + A.index * kv_layer_size();
  float* vc = v_cache_.data() + A.index * kv_layer_size();
  std::vector<float> o(static_cast<size_t>(R * nq * hd));
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& s = batch[i];
    const int64_t T = static_cast<int64_t>(s.tokens.size()), r0 = row0[i];
    for (int64_t t = 0; t < T; ++t) {
      const int64_t pos = s.position + t;
      const int64_t dst = (static_cast<int64_t>(s.block_table[pos / bs]) * bs + pos % bs) * nkv * hd;
      std::copy(k.begin() + (r0 + t) * nkv * hd, k.begin() + (r0 + t + 1) * nkv * hd, kc + dst);
      std::copy(v.begin() + (r0 + t) * nkv * hd, v.begin() + (r0 + t + 1) * nkv * hd, vc + dst);
    }
    cpu::paged_attention(q.data() + r0 * nq * hd, T, s.position, nq, nkv, hd, kc, vc, s.block_table.data(), bs, o.data() + r0 * nq * hd);
  }
  std::vector<float> out(static_cast<size_t>(R * H));
  cpu::gemm_xwt(pool_, o.data(), R, nq * hd, A.o, H, out.data(), A.ob);
  for (int64_t i = 0; i < R * H; ++i) h[i] += out[i];
}

void CpuEngine::mlp(const MlpLayer& W, int64_t in, int64_t inter, const float* u, int64_t R, float* out) {
  std::vector<float> a(static_cast<size_t>(R * inter));
  cpu::gemm_xwt(pool_, u, R, in, W.up, inter, a.data(), W.up_b);
  for (float& x : a) x = cpu::relu2(x);
  cpu::gemm_xwt(pool_, a.data(), R, inter, W.down, in, out, W.down_b);
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
    cpu::gemm_xwt(pool_, u, R, H, E.fc1, Din, latent.data(), E.fc1_b);
    v = latent.data();
  }
  // Routed experts: local or across the group; each expert runs once over all its rows.
  std::vector<float> routed(static_cast<size_t>(R * Din)), act;
  auto run_expert = [&](int e, const float* x, int64_t m, float* y) {
    act.resize(static_cast<size_t>(m * inter));
    cpu::gemm_xwt(pool_, x, m, Din, E.up[e], inter, act.data());
    for (float& a : act) a = cpu::relu2(a);
    cpu::gemm_xwt(pool_, act.data(), m, inter, E.down[e], Din, y);
  };
  ep_.dispatch_combine(E.index, v, R, chosen.data(), weight.data(), run_expert, routed.data());
  std::vector<float> out(static_cast<size_t>(R * H));
  if (spec_.moe_latent_size > 0) cpu::gemm_xwt(pool_, routed.data(), R, Din, E.fc2, H, out.data(), E.fc2_b);
  else out.swap(routed);
  std::vector<float> shared(static_cast<size_t>(R * H));
  mlp(E.shared, H, spec_.moe_shared_expert_intermediate_size, u, R, shared.data());
  for (int64_t i = 0; i < R * H; ++i) h[i] += out[i] + shared[i];
}

StepOutput CpuEngine::forward(const std::vector<StepSeq>& batch) {
  validate_batch(spec_, opts_, n_attn_ > 0, batch);
  const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
  std::vector<int64_t> row0(batch.size());
  int64_t R = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    row0[i] = R;
    R += static_cast<int64_t>(batch[i].tokens.size());
    if (batch[i].position == 0) {
      for (int l = 0; l < n_mamba_; ++l) {
        std::fill_n(conv_state(l, batch[i].slot), conv_state_size(), 0.f);
        std::fill_n(ssm_state(l, batch[i].slot), ssm_state_size(), 0.f);
      }
    }
  }
  StepOutput out;
  out.tokens.assign(batch.size(), -1);
  out.group_tokens = ep_.begin_step(R);
  if (out.group_tokens == 0) return out;  // the whole group is idle (a rank with R == 0 still runs the MoE collectives)
  std::vector<float> h(static_cast<size_t>(R * H)), u(static_cast<size_t>(R * H));
  for (size_t i = 0; i < batch.size(); ++i)
    for (size_t t = 0; t < batch[i].tokens.size(); ++t)
      std::copy(embed_ + batch[i].tokens[t] * H, embed_ + (batch[i].tokens[t] + 1) * H, h.begin() + (row0[i] + static_cast<int64_t>(t)) * H);
  for (const Layer& L : layers_) {
    cpu::rmsnorm(h.data(), L.norm, R, H, spec_.norm_eps, u.data());
    switch (L.kind) {
      case BlockKind::Mamba: mamba(L, batch, row0, u.data(), R, h.data()); break;
      case BlockKind::Attention: attention(L, batch, row0, u.data(), R, h.data()); break;
      case BlockKind::MoE: moe(L, u.data(), R, h.data()); break;
      case BlockKind::MLP: {
        std::vector<float> o(static_cast<size_t>(R * H));
        mlp(L.mlp, H, spec_.intermediate_size, u.data(), R, o.data());
        for (int64_t i = 0; i < R * H; ++i) h[i] += o[i];
        break;
      }
    }
  }
  // Rows whose logits are needed: the last of each sampling sequence, or all rows when asked.
  std::vector<int64_t> rows;
  std::vector<int64_t> sample_row(batch.size(), -1);
  for (size_t i = 0; i < batch.size(); ++i) {
    const int64_t T = static_cast<int64_t>(batch[i].tokens.size());
    if (batch[i].logits == LogitsMode::All)
      for (int64_t t = 0; t < T; ++t) rows.push_back(row0[i] + t);
    else if (batch[i].sample || batch[i].logits == LogitsMode::Last) rows.push_back(row0[i] + T - 1);
    if (batch[i].sample) sample_row[i] = static_cast<int64_t>(rows.size()) - 1;
  }
  const int64_t NL = static_cast<int64_t>(rows.size());
  std::vector<float> hn(static_cast<size_t>(NL * H)), logits(static_cast<size_t>(NL * V));
  for (int64_t j = 0; j < NL; ++j) cpu::rmsnorm(h.data() + rows[j] * H, norm_f_, 1, H, spec_.norm_eps, hn.data() + j * H);
  cpu::gemm_xwt(pool_, hn.data(), NL, H, lm_head_, V, logits.data());
  int64_t j = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const int64_t T = static_cast<int64_t>(batch[i].tokens.size());
    const int64_t n = batch[i].logits == LogitsMode::All ? T : (batch[i].sample || batch[i].logits == LogitsMode::Last ? 1 : 0);
    if (batch[i].sample) out.tokens[i] = sample_token(logits.data() + sample_row[i] * V, static_cast<int>(V), batch[i].sampling, batch[i].position + T);
    if (batch[i].logits != LogitsMode::None) out.logits.insert(out.logits.end(), logits.begin() + j * V, logits.begin() + (j + n) * V);
    j += n;
  }
  return out;
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
