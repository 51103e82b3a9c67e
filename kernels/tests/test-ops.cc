// Op and engine-state tests for the CPU backend (run by test/unit/kernels.test.ts).
// Expected values come from first principles: the naive recurrence, hand-computed routing,
// and invariances (chunking, batching, incremental decode) that any correct engine satisfies.
#include <atomic>
#include <stdexcept>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "engine.h"
#include "engine/sampler.h"

namespace {

int failures = 0, checks = 0;

void check(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double e = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += double(a[i] - b[i]) * (a[i] - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(e / std::max(n, 1e-30));
}

std::vector<float> randn(std::mt19937& g, size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

void test_ssd_matches_recurrence() {
  std::mt19937 g(1);
  const int64_t nh = 4, P = 8, G = 2, N = 16;
  for (int64_t T : {1, 5, 16, 37, 64}) {
    for (int64_t chunk : {1, 5, 8, 16, 128}) {
      for (bool init : {false, true}) {
        auto x = randn(g, T * nh * P), B = randn(g, T * G * N), C = randn(g, T * G * N);
        std::vector<float> dt(T * nh), A(nh), D = randn(g, nh);
        std::uniform_real_distribution<float> u(0.001f, 0.2f);
        for (auto& v : dt) v = u(g);
        for (auto& v : A) v = -std::exp(std::uniform_real_distribution<float>(0.f, 2.5f)(g));
        std::vector<float> s0 = init ? randn(g, nh * P * N) : std::vector<float>(nh * P * N, 0.f);
        auto s_ref = s0, s_chk = s0;
        std::vector<float> y_ref(T * nh * P), y_chk(T * nh * P);
        lm::cpu::SsmArgs a{T, nh, P, G, N, x.data(), nh * P, B.data(), C.data(), G * N, dt.data(), A.data(), D.data(), s_ref.data(), y_ref.data()};
        lm::cpu::ssm_recurrent_scan(a);
        a.state = s_chk.data();
        a.y = y_chk.data();
        lm::cpu::ssd_chunked_scan(a, chunk);
        const std::string tag = "T=" + std::to_string(T) + " chunk=" + std::to_string(chunk) + (init ? " with initial state" : "");
        check(rel_err(y_chk, y_ref) < 1e-5, "ssd output equals the recurrence, " + tag);
        check(rel_err(s_chk, s_ref) < 1e-5, "ssd final state equals the recurrence, " + tag);
      }
    }
  }
}

void test_conv_split_equals_whole() {
  std::mt19937 g(2);
  const int64_t T = 11, C = 6, K = 4;
  auto x = randn(g, T * C), w = randn(g, C * K), b = randn(g, C);
  std::vector<float> st1((K - 1) * C, 0.f), st2((K - 1) * C, 0.f), o1(T * C), o2(T * C);
  lm::cpu::causal_conv1d_silu(x.data(), C, T, C, K, w.data(), b.data(), st1.data(), o1.data());
  lm::cpu::causal_conv1d_silu(x.data(), C, 4, C, K, w.data(), b.data(), st2.data(), o2.data());
  lm::cpu::causal_conv1d_silu(x.data() + 4 * C, C, 1, C, K, w.data(), b.data(), st2.data(), o2.data() + 4 * C);
  lm::cpu::causal_conv1d_silu(x.data() + 5 * C, C, T - 5, C, K, w.data(), b.data(), st2.data(), o2.data() + 5 * C);
  check(rel_err(o2, o1) < 1e-6, "conv split into 4+1+6 tokens equals one pass");
  check(rel_err(st2, st1) < 1e-7, "conv state after a split pass equals one pass");
  std::vector<float> last(x.end() - (K - 1) * C, x.end());
  check(rel_err(st1, last) == 0, "conv state holds the last K-1 inputs");
  // first principles for token 0 of channel 0: only the current-token tap sees data
  const float expect = lm::cpu::silu(b[0] + w[K - 1] * x[0]);
  check(std::fabs(o1[0] - expect) < 1e-6, "conv tap K-1 multiplies the current token");
}

// A range that throws, on the caller or a worker, fails parallel_for with that exception (not the
// process), and the pool keeps working afterwards.
void test_pool_exceptions() {
  lm::cpu::ThreadPool pool(4);
  for (int64_t bad : {int64_t{0}, int64_t{900}}) {  // the caller's first range, and one a worker likely takes
    std::atomic<int64_t> done{0};
    std::string what;
    try {
      pool.parallel_for(1000, [&](int64_t b, int64_t e) {
        if (bad >= b && bad < e) throw std::runtime_error("range " + std::to_string(b) + " failed");
        done += e - b;
      }, 10);
    } catch (const std::runtime_error& err) {
      what = err.what();
    }
    check(what.rfind("range ", 0) == 0, "parallel_for rethrows a range's exception (bad row " + std::to_string(bad) + ")");
    check(done.load() < 1000, "the other ranges stop being handed out after a throw");
  }
  std::atomic<int64_t> sum{0};
  pool.parallel_for(1000, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; }, 10);
  check(sum.load() == 999 * 1000 / 2, "the pool works after a range threw");
}

void test_gemm_rows_independent() {
  std::mt19937 g(5);
  lm::cpu::ThreadPool pool(2);
  // K off the 8-lane step, N off every tile width; M covers every row-block shape and the threaded path
  for (int64_t K : {int64_t{37}, int64_t{256}})
    for (int64_t N : {int64_t{13}, int64_t{1031}}) {
      const int64_t M = 11;
      const auto x = randn(g, M * K), W = randn(g, N * K), bias = randn(g, N);
      std::vector<float> all(M * N);
      lm::cpu::gemm_xwt(pool, x.data(), M, K, W.data(), N, all.data(), bias.data());
      double worst = 0;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double ref = bias[n];
          for (int64_t k = 0; k < K; ++k) ref += double(x[m * K + k]) * W[n * K + k];
          worst = std::max(worst, std::fabs(ref - all[m * N + n]) / (1.0 + std::fabs(ref)));
        }
      const std::string tag = " (K " + std::to_string(K) + ", N " + std::to_string(N) + ")";
      check(worst < 1e-5, "gemm matches a float64 reference" + tag);
      bool same = true;
      for (int64_t m0 = 0; m0 < M; ++m0)
        for (int64_t rows = 1; m0 + rows <= M && rows <= 5; ++rows) {
          std::vector<float> part(rows * N);
          lm::cpu::gemm_xwt(pool, x.data() + m0 * K, rows, K, W.data(), N, part.data(), bias.data());
          same = same && std::equal(part.begin(), part.end(), all.begin() + m0 * N);
        }
      check(same, "gemm rows are bitwise the same whichever rows share the call" + tag);
    }
}

void test_attention_rows_independent() {
  std::mt19937 g(9);
  const int64_t nq = 4, nkv = 2, hd = 12, bs = 4, ctx = 23, T = 5;
  const auto kc = randn(g, 8 * bs * nkv * hd), vc = randn(g, 8 * bs * nkv * hd), q = randn(g, T * nq * hd);
  const std::vector<int32_t> table = {3, 0, 7, 1, 5, 2};
  std::vector<float> all(T * nq * hd), one(nq * hd);
  lm::cpu::paged_attention(q.data(), T, ctx - T, nq, nkv, hd, kc.data(), vc.data(), table.data(), bs, all.data());
  bool same = true;
  for (int64_t t = 0; t < T; ++t) {
    lm::cpu::paged_attention(q.data() + t * nq * hd, 1, ctx - T + t, nq, nkv, hd, kc.data(), vc.data(), table.data(), bs, one.data());
    same = same && std::equal(one.begin(), one.end(), all.begin() + t * nq * hd);
  }
  check(same, "attention over T query rows equals each row alone, bitwise");
}

void test_moe_route_by_hand() {
  // 8 experts, 2 groups of 4, keep 1 group, pick 2. Sigmoid scores chosen through logits.
  auto logit = [](float p) { return std::log(p / (1 - p)); };
  std::vector<float> s = {0.9f, 0.1f, 0.2f, 0.3f, 0.6f, 0.7f, 0.5f, 0.4f};
  std::vector<float> logits(8), bias(8, 0.f);
  for (int i = 0; i < 8; ++i) logits[i] = logit(s[i]);
  int32_t ex[2];
  float w[2];
  // group top-2 sums: g0 = 0.9 + 0.3 = 1.2, g1 = 0.7 + 0.6 = 1.3 -> keep g1; experts 5, 4.
  lm::cpu::moe_route(logits.data(), bias.data(), 8, 2, 1, 2, true, 2.0f, ex, w);
  check(ex[0] == 5 && ex[1] == 4, "group top-k keeps the group with the best top-2 sum");
  check(std::fabs(w[0] - 2.0f * 0.7f / 1.3f) < 1e-6 && std::fabs(w[1] - 2.0f * 0.6f / 1.3f) < 1e-6, "weights are normalised un-biased scores times the scaling");
  // A bias on expert 2 makes group 0 win (0.9 + 0.2 + 0.5 = 1.6) and expert 2 chosen, weighted by its un-biased 0.2.
  bias[2] = 0.5f;
  lm::cpu::moe_route(logits.data(), bias.data(), 8, 2, 1, 2, false, 1.0f, ex, w);
  check(ex[0] == 0 && ex[1] == 2, "the correction bias changes the choice");
  check(std::fabs(w[0] - 0.9f) < 1e-6 && std::fabs(w[1] - 0.2f) < 1e-6, "the correction bias never enters the weights");
}

void test_sampler() {
  std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.f, 0.5f};
  lm::Sampling greedy;
  check(lm::sample_token(logits.data(), 5, greedy, 0) == 1, "greedy picks the argmax");
  lm::Sampling s;
  s.temperature = 1.f;
  s.seed = 42;
  bool same = true, varies = false;
  for (int p = 0; p < 50; ++p) {
    const int a = lm::sample_token(logits.data(), 5, s, p), b = lm::sample_token(logits.data(), 5, s, p);
    same = same && a == b;
    varies = varies || a != lm::sample_token(logits.data(), 5, s, 0);
  }
  check(same, "the same seed and position give the same token");
  check(varies, "different positions give different draws");
  s.top_k = 2;
  bool in_top2 = true;
  for (int p = 0; p < 100; ++p) {
    const int t = lm::sample_token(logits.data(), 5, s, p);
    in_top2 = in_top2 && (t == 1 || t == 2);
  }
  check(in_top2, "top-k 2 samples only the two best tokens");
  s.top_k = 0;
  s.top_p = 0.01f;
  check(lm::sample_token(logits.data(), 5, s, 7) == 1, "a tiny top-p keeps only the best token");
}

lm::EngineOptions tiny_options() {
  lm::EngineOptions o;
  auto& s = o.spec;
  s.vocab_size = 97;
  s.hidden_size = 48;
  s.pattern = "M*EM-E";
  s.mamba_num_heads = 6;
  s.mamba_head_dim = 8;
  s.ssm_state_size = 12;
  s.n_groups = 3;
  s.conv_kernel = 4;
  s.chunk_size = 8;
  s.num_attention_heads = 4;
  s.num_key_value_heads = 2;
  s.head_dim = 12;
  s.intermediate_size = 40;
  s.moe_intermediate_size = 24;
  s.moe_shared_expert_intermediate_size = 32;
  s.n_routed_experts = 8;
  s.num_experts_per_tok = 3;
  s.n_group = 2;
  s.topk_group = 2;
  s.moe_latent_size = 20;
  s.routed_scaling_factor = 1.5f;
  o.dummy = true;
  o.dummy_seed = 7;
  o.max_slots = 4;
  o.kv_block_size = 4;
  o.num_kv_blocks = 64;
  o.threads = 2;
  return o;
}

lm::StepSeq seq(int slot, std::vector<int32_t> toks, int pos, std::vector<int32_t> blocks, lm::LogitsMode m = lm::LogitsMode::Last) {
  lm::StepSeq s;
  s.slot = slot;
  s.tokens = std::move(toks);
  s.position = pos;
  s.block_table = std::move(blocks);
  s.sample = true;
  s.logits = m;
  return s;
}

std::vector<int32_t> blocks(int first, int n) {
  std::vector<int32_t> b(n);
  for (int i = 0; i < n; ++i) b[i] = first + i;
  return b;
}

void test_engine_invariances() {
  auto engine = lm::create_engine(tiny_options());
  const int V = 97;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back((i * 31 + 5) % V);

  auto whole = engine->step({seq(0, prompt, 0, blocks(0, 10), lm::LogitsMode::All)});
  const auto state_whole = engine->slot_state(0);

  // The same prompt split into chunks of 16, 5 and 16 tokens, in slot 1.
  engine->step({seq(1, {prompt.begin(), prompt.begin() + 16}, 0, blocks(10, 10), lm::LogitsMode::None)});
  engine->step({seq(1, {prompt.begin() + 16, prompt.begin() + 21}, 16, blocks(10, 10), lm::LogitsMode::None)});
  auto split = engine->step({seq(1, {prompt.begin() + 21, prompt.end()}, 21, blocks(10, 10), lm::LogitsMode::Last)});
  std::vector<float> whole_last(whole.logits.end() - V, whole.logits.end());
  check(rel_err(split.logits, whole_last) < 1e-5, "a prefill split into chunks equals one prefill (logits)");
  check(rel_err(engine->slot_state(1), state_whole) < 1e-5, "a prefill split into chunks equals one prefill (conv + SSM state)");

  // Prefill of 36 then one decode token equals the 37-token prefill.
  engine->step({seq(2, {prompt.begin(), prompt.end() - 1}, 0, blocks(20, 10), lm::LogitsMode::None)});
  auto dec = engine->step({seq(2, {prompt.back()}, 36, blocks(20, 10))});
  check(rel_err(dec.logits, whole_last) < 1e-5, "prefill then decode equals one longer prefill (logits)");
  check(rel_err(engine->slot_state(2), state_whole) < 1e-5, "prefill then decode equals one longer prefill (state)");
  check(dec.tokens[0] == whole.tokens[0], "prefill then decode samples the same greedy token");

  // Batched with another sequence, a sequence computes exactly what it computes alone.
  std::vector<int32_t> other = {3, 1, 4, 1, 5, 9, 2, 6};
  auto both = engine->step({seq(3, other, 0, blocks(30, 3)), seq(0, prompt, 0, blocks(0, 10))});
  std::vector<float> second(both.logits.begin() + V, both.logits.end());
  check(rel_err(second, whole_last) < 1e-6, "batching does not change a sequence's logits");
  check(rel_err(engine->slot_state(0), state_whole) < 1e-6, "position 0 resets a reused slot's state");

  // Bad input is an error, not a crash.
  bool threw = false;
  try {
    engine->step({seq(0, {V + 3}, 0, blocks(0, 1))});
  } catch (const lm::Error&) {
    threw = true;
  }
  check(threw, "an out-of-range token id is an lm::Error");
  threw = false;
  try {
    engine->step({seq(0, prompt, 0, blocks(0, 2))});
  } catch (const lm::Error&) {
    threw = true;
  }
  check(threw, "a block table too short for the positions is an lm::Error");
}


// MTP speculation (DESIGN §3): verifying drafts emits exactly the tokens of plain decoding (greedy,
// and sampling with the same seed), and after rejections every Mamba state equals the state of
// feeding only the accepted tokens.
void test_mtp_speculation() {
  lm::EngineOptions plain_opts = tiny_options();
  plain_opts.spec.mtp_pattern = "*E";
  plain_opts.spec.num_nextn_predict_layers = 1;
  lm::EngineOptions mtp_opts = plain_opts;
  mtp_opts.mtp = true;
  auto plain = lm::create_engine(plain_opts);
  auto mtp = lm::create_engine(mtp_opts);
  const int V = 97, N = 24;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 11; ++i) prompt.push_back((i * 13 + 2) % V);
  const int Lp = static_cast<int>(prompt.size());
  for (float temperature : {0.f, 1.f}) {
    lm::Sampling sampling;
    sampling.temperature = temperature;
    sampling.seed = 42;
    // reference: prefill, then one token per step, with the state after each step
    std::vector<int32_t> ref;
    std::vector<std::vector<float>> ref_state;
    auto p_ref = seq(0, prompt, 0, blocks(0, 16), lm::LogitsMode::None);
    p_ref.sampling = sampling;
    ref.push_back(plain->step({p_ref}).tokens[0]);
    ref_state.push_back(plain->slot_state(0));
    for (int j = 1; j < N + 8; ++j) {
      auto q = seq(0, {ref.back()}, Lp + j - 1, blocks(0, 16), lm::LogitsMode::None);
      q.sampling = sampling;
      ref.push_back(plain->step({q}).tokens[0]);
      ref_state.push_back(plain->slot_state(0));
    }
    const std::string tag = temperature > 0 ? " (sampling)" : " (greedy)";
    // oracle drafts with deliberate wrong ones (slot 1) and the engine's own drafts (slot 2, with pauses)
    for (int slot : {1, 2}) {
      auto p0 = seq(slot, prompt, 0, blocks(16 * slot, 16), lm::LogitsMode::None);
      p0.sampling = sampling;
      p0.draft_tokens = 3;
      auto out = mtp->step({p0});
      std::vector<int32_t> got = {out.tokens[0]};
      std::vector<int32_t> drafts = out.drafts;
      check(drafts.size() == 3, "a step proposes the drafts asked for");
      int position = Lp, steps = 0, accepted_total = 0;
      bool same_state = true;
      while (static_cast<int>(got.size()) < N) {
        const int k = slot == 1 ? steps % 4 : static_cast<int>(drafts.size());
        std::vector<int32_t> toks = {got.back()};
        for (int d = 0; d < k; ++d) {
          int32_t t = slot == 1 ? ref[got.size() + d] : drafts[d];
          if (slot == 1 && steps % 3 == 0 && d == k - 1) t = (t + 1) % V;  // a rejection
          toks.push_back(t);
        }
        auto q = seq(slot, toks, position, blocks(16 * slot, 16), lm::LogitsMode::None);
        q.sampling = sampling;
        q.num_drafts = k;
        q.draft_tokens = slot == 2 && steps % 4 == 1 ? 0 : 3;  // slot 2 pauses speculation now and then,
        q.mtp_skip = q.draft_tokens == 0;                      // skipping the MTP head meanwhile
        out = mtp->step({q});
        const int a = out.num_accepted[0];
        accepted_total += a;
        for (int d = 0; d < a; ++d) got.push_back(toks[1 + d]);
        got.push_back(out.tokens[0]);
        position += 1 + a;
        drafts = out.drafts;
        same_state = same_state && mtp->slot_state(slot) == ref_state[position - Lp];
        ++steps;
      }
      got.resize(N);
      check(got == std::vector<int32_t>(ref.begin(), ref.begin() + N), "speculative decoding emits the tokens of plain decoding" + tag + " slot " + std::to_string(slot));
      check(same_state, "after rejections the Mamba state equals feeding only the accepted tokens" + tag + " slot " + std::to_string(slot));
      if (slot == 1) check(accepted_total > 0 && steps < N, "oracle drafts are accepted" + tag);
    }
  }
  bool threw = false;
  try {
    auto q = seq(0, {1, 2}, 0, blocks(0, 2));
    q.num_drafts = 1;
    plain->step({q});
  } catch (const lm::Error&) {
    threw = true;
  }
  check(threw, "drafts on an engine loaded without MTP are an lm::Error");
}

// A sequence that skipped the MTP head (prefill and decodes) and then resumes drafting must see the
// head's attention KV as if it had never skipped: the rows it skipped are caught up first.
void test_mtp_resume_after_skip() {
  lm::EngineOptions o = tiny_options();
  o.spec.mtp_pattern = "*E";
  o.spec.num_nextn_predict_layers = 1;
  o.mtp = true;
  auto engine = lm::create_engine(o);
  const int V = 97, decodes = 9;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 13; ++i) prompt.push_back((i * 17 + 5) % V);
  const int Lp = static_cast<int>(prompt.size());
  // steps 0 (prefill) .. skip_until-1 skip the head; the last decode drafts 3. MTP logits: at every
  // step that runs the head (fp32 passes), or none (drafting passes read the head's int8 copies)
  auto run = [&](int slot, int skip_until, bool logits) {
    auto p = seq(slot, prompt, 0, blocks(16 * slot, 16), lm::LogitsMode::None);
    p.mtp_skip = skip_until > 0;
    p.draft_tokens = p.mtp_skip ? 0 : 1;
    p.mtp_logits = logits && !p.mtp_skip;
    lm::StepOutput out = engine->step({p});
    int32_t tok = out.tokens[0];
    for (int j = 1; j <= decodes; ++j) {
      auto q = seq(slot, {tok}, Lp + j - 1, blocks(16 * slot, 16), lm::LogitsMode::None);
      q.mtp_skip = j < skip_until;
      q.draft_tokens = q.mtp_skip ? 0 : j == decodes ? 3 : 1;
      q.mtp_logits = logits && !q.mtp_skip;
      out = engine->step({q});
      tok = out.tokens[0];
    }
    return out;
  };
  const lm::StepOutput never = run(0, 0, true), resumed = run(1, decodes, true), never_no_logits = run(2, 0, false), resumed_no_logits = run(3, decodes, false);
  const size_t tail = static_cast<size_t>(3 * V);  // the last accepted row and two further drafts
  check(never.mtp_logits.size() >= tail && resumed.mtp_logits.size() > never.mtp_logits.size(), "a resumed sequence's MTP rows include the caught-up positions");
  const bool same_tail = never.mtp_logits.size() >= tail && resumed.mtp_logits.size() >= tail &&
                         std::equal(never.mtp_logits.end() - tail, never.mtp_logits.end(), resumed.mtp_logits.end() - tail);
  check(same_tail, "MTP rows after resuming from a skip equal never-skipped ones, bitwise");
  check(never.drafts == resumed.drafts && resumed.drafts.size() == 3, "drafts after resuming from a skip equal never-skipped ones");
  check(resumed_no_logits.drafts == never_no_logits.drafts && never_no_logits.drafts.size() == 3, "drafting passes (int8 head, KV-only rows left out of the MoE) after resuming draft as never-skipped ones");
  const size_t rows = resumed.mtp_logits.size() / V;
  check(rows == static_cast<size_t>(Lp + decodes - 1 + 3), "one MTP row per position of the context, then the drafts");

  // two sequences of different lengths skipping side by side, resuming in one step: each one's
  // drafts equal its never-skipped run alone
  auto batched = [&](bool skip) {
    std::vector<lm::StepSeq> b;
    std::vector<int32_t> last(2);
    for (int j = 0; j < 2; ++j) {
      std::vector<int32_t> p(prompt.begin(), prompt.begin() + 7 + 5 * j);
      b.push_back(seq(j, p, 0, blocks(16 * j, 16), lm::LogitsMode::None));
      b.back().mtp_skip = skip;
      b.back().draft_tokens = skip ? 0 : 2;
    }
    lm::StepOutput out = engine->step(b);
    for (int step = 1; step <= 4; ++step) {
      for (int j = 0; j < 2; ++j) {
        b[j].position += static_cast<int>(b[j].tokens.size());
        b[j].tokens = {out.tokens[j]};
        b[j].mtp_skip = skip && step < 4;
        b[j].draft_tokens = b[j].mtp_skip ? 0 : 2;
      }
      out = engine->step(b);
    }
    return out.drafts;
  };
  check(batched(true) == batched(false), "side-by-side sequences resuming in one step draft as if they never skipped");
}

}  // namespace

int main() {
  test_ssd_matches_recurrence();
  test_conv_split_equals_whole();
  test_pool_exceptions();
  test_gemm_rows_independent();
  test_attention_rows_independent();
  test_moe_route_by_hand();
  test_sampler();
  test_engine_invariances();
  test_mtp_speculation();
  test_mtp_resume_after_skip();
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
