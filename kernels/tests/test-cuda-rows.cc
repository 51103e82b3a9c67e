// Row independence of the decode-step kernels, the ground of exact greedy speculation on CUDA
// (issue 7): a row of the skinny GEMM, of split-K decode attention and of the small-batch MoE is
// bitwise the same whether computed alone or with other rows in the launch, and a decode step's
// kernel choices follow its sequence count (cuda/ops.h DECODE_STEP_MAX_LEN). Then the engine: MTP
// verify steps (k = 1..7 drafts at one sequence, 1..3 at two) give bitwise the logits, greedy tokens
// and Mamba states of plain decode steps (decode graphs) feeding the same tokens. Expected values
// are the same kernels run one row (or one plain step) at a time: equality is the claim under test.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/ops.h"
#include "engine.h"
#include "tests/cuda_test_util.h"

namespace {

using lm::cuda::bf16;
using namespace lm::cuda_test;
int failures = 0;

void verdict(const std::string& what, bool ok, const std::string& detail = "") {
  if (!ok) ++failures;
  std::printf("%-58s %s%s\n", what.c_str(), ok ? "ok" : "FAIL", detail.empty() ? "" : ("  (" + detail + ")").c_str());
}

template <class T>
bool bitwise(const T* a, const T* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(T)) == 0;
}

std::vector<float> round_all(std::vector<float> v) {
  for (auto& x : v) x = round_bf16(x);
  return v;
}

bf16* dev_dummy(int64_t n, uint64_t seed, float scale) {
  bf16* p = nullptr;
  lm::cuda::check(cudaMalloc(&p, std::max<int64_t>(1, n) * sizeof(bf16)), "cudaMalloc");
  lm::cuda::fill_dummy_bf16(p, n, seed, -scale, scale, nullptr);
  return p;
}

void sync(const char* what) { lm::cuda::check(cudaDeviceSynchronize(), what); }

// ---- skinny GEMM: every row of an M-row launch equals that row alone ----

void test_skinny_rows(std::mt19937& g) {
  struct Shape {
    int K, N;
  };
  for (const Shape sh : {Shape{2688, 200}, Shape{136, 75}, Shape{4096, 1032}}) {
    const int K = sh.K, N = sh.N, MMAX = lm::cuda::SKINNY_MAX_M;
    const bf16* x = dev(to_bf16(round_all(randn(g, int64_t(MMAX) * K))));
    const bf16* w = dev_dummy(int64_t(N) * K, 7 + K, 1.f / std::sqrt(float(K)));
    const auto y0 = randn(g, int64_t(MMAX) * N);
    // alone: row m by a one-row launch, fp32 (beta 0 and beta 1) and relu² bf16
    std::vector<float> alone(int64_t(MMAX) * N), alone_b1(int64_t(MMAX) * N);
    std::vector<bf16> alone16(int64_t(MMAX) * N);
    float* y = dev(std::vector<float>(int64_t(MMAX) * N, NAN));
    bf16* y16 = dev(std::vector<bf16>(int64_t(MMAX) * N, __float2bfloat16(NAN)));
    for (int m = 0; m < MMAX; ++m) {
      lm::cuda::skinny_gemm(x + int64_t(m) * K, 1, K, w, N, y + int64_t(m) * N, 0.f, nullptr);
      const lm::cuda::SkinnyOut o{w, N, nullptr, y16 + int64_t(m) * N};
      lm::cuda::skinny_gemm_multi(x + int64_t(m) * K, 1, K, &o, 1, 0.f, nullptr);
    }
    sync("skinny alone");
    alone = download(y, alone.size());
    alone16 = download(y16, alone16.size());
    lm::cuda::check(cudaMemcpy(y, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    for (int m = 0; m < MMAX; ++m) lm::cuda::skinny_gemm(x + int64_t(m) * K, 1, K, w, N, y + int64_t(m) * N, 1.f, nullptr);
    sync("skinny alone beta 1");
    alone_b1 = download(y, alone_b1.size());
    // together: M rows in one launch (direct), and through Gemm with the choice of one sequence
    lm::cuda::Gemm gemm;
    gemm.choice_rows = 1;
    float* tmp = dev(std::vector<float>(int64_t(MMAX) * N, NAN));
    int bad = 0, bad_gemm = 0, bad16 = 0, bad_b1 = 0;
    for (int M = 2; M <= MMAX; ++M) {
      lm::cuda::check(cudaMemset(y, 0xff, int64_t(MMAX) * N * 4), "cudaMemset");
      lm::cuda::skinny_gemm(x, M, K, w, N, y, 0.f, nullptr);
      sync("skinny together");
      bad += !bitwise(download(y, int64_t(M) * N).data(), alone.data(), int64_t(M) * N);
      lm::cuda::check(cudaMemset(y, 0xff, int64_t(MMAX) * N * 4), "cudaMemset");
      gemm.run(x, M, K, w, N, y, 0.f, nullptr);
      sync("Gemm::run");
      bad_gemm += !bitwise(download(y, int64_t(M) * N).data(), alone.data(), int64_t(M) * N);
      lm::cuda::check(cudaMemcpy(y, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      gemm.run(x, M, K, w, N, y, 1.f, nullptr);
      sync("Gemm::run beta 1");
      bad_b1 += !bitwise(download(y, int64_t(M) * N).data(), alone_b1.data(), int64_t(M) * N);
      const lm::cuda::SkinnyOut o{w, N, nullptr, y16};
      gemm.run_multi(x, M, K, &o, 1, tmp, nullptr);
      sync("Gemm::run_multi relu²");
      bad16 += !bitwise(download(y16, int64_t(M) * N).data(), alone16.data(), int64_t(M) * N);
    }
    const std::string shape = " K" + std::to_string(K) + " N" + std::to_string(N);
    verdict("skinny_gemm rows of M = 2..16 == each row alone" + shape, bad == 0, std::to_string(bad) + " row counts differ");
    verdict("Gemm (choice_rows 1) run, beta 0 / 1, == rows alone" + shape, bad_gemm == 0 && bad_b1 == 0, std::to_string(bad_gemm) + " / " + std::to_string(bad_b1) + " differ");
    verdict("Gemm (choice_rows 1) run_multi relu² == rows alone" + shape, bad16 == 0, std::to_string(bad16) + " differ");
    const bool skinny_for_one = gemm.skinny(8, K, x, w);
    gemm.choice_rows = 3;
    const bool lt_for_three = !gemm.skinny(1, K, x, w);
    verdict("Gemm chooses the kernel by choice_rows" + shape, skinny_for_one && lt_for_three);
    for (void* p : {static_cast<void*>(y), static_cast<void*>(y16), static_cast<void*>(tmp), const_cast<void*>(static_cast<const void*>(x)), const_cast<void*>(static_cast<const void*>(w))}) cudaFree(p);
  }
}

// ---- decode attention: a verify step's rows == plain decode steps' rows ----

/** A batch description on the device; tables: each sequence's blocks, scattered (shared by every batch of a case). */
struct Batch {
  std::vector<int> slot, row0;
  lm::cuda::BatchView view;
  Batch(const std::vector<int>& lens, const std::vector<int>& pos, const std::vector<int>& seq_bt0, const int* tables, int block_size) {
    int r = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      slot.push_back(static_cast<int>(i));
      row0.push_back(r);
      r += lens[i];
    }
    view = batch_view(slot, lens, pos, seq_bt0, tables, block_size);
  }
};

struct AttnCase {
  const char* name;
  int nq, nkv, hd;
  std::vector<int> lens;  // verify rows per sequence (k + 1)
  std::vector<int> last;  // position of each sequence's last verify row
};

void test_attention_rows(std::mt19937& g, const AttnCase& c) {
  const int S = static_cast<int>(c.lens.size()), BS = 16, W = c.nkv * c.hd, QW = c.nq * c.hd;
  std::vector<int> tables, bt0;
  for (int i = 0; i < S; ++i) {
    bt0.push_back(static_cast<int>(tables.size()));
    for (int b = 0; b < c.last[i] / BS + 1; ++b) tables.push_back(static_cast<int>(tables.size()));
  }
  std::shuffle(tables.begin(), tables.end(), g);
  const int* dtables = dev(tables);
  const int64_t cache = int64_t(tables.size()) * BS * W;
  bf16* kc = dev_dummy(cache, 31, 1.f);
  bf16* vc = dev_dummy(cache, 32, 1.f);
  // verify step: sequence i's rows at positions last - len + 1 .. last
  std::vector<int> first(S);
  for (int i = 0; i < S; ++i) first[i] = c.last[i] - c.lens[i] + 1;
  Batch vb(c.lens, first, bt0, dtables, BS);
  const int R = vb.view.rows;
  const auto q = round_all(randn(g, int64_t(R) * QW, 2.f));
  bf16* out = dev(std::vector<bf16>(int64_t(R) * QW, __float2bfloat16(NAN)));
  float* ws = dev(std::vector<float>(lm::cuda::paged_attention_workspace_floats(vb.view, c.nq, c.hd), NAN));
  lm::cuda::paged_attention(vb.view, dev(q), c.nq, c.nkv, c.hd, kc, vc, out, ws, nullptr);
  sync("paged_attention (verify)");
  const auto got = download(out, int64_t(R) * QW);
  // plain steps j = 0 .. max len - 1: every sequence one row, at its j-th verify position (its last
  // one once past its rows), with the q of that row
  int bad = 0, compared = 0, maxlen = vb.view.max_len;
  for (int j = 0; j < maxlen; ++j) {
    std::vector<int> ones(S, 1), pos(S);
    std::vector<float> qj(int64_t(S) * QW);
    for (int i = 0; i < S; ++i) {
      const int t = std::min(j, c.lens[i] - 1);
      pos[i] = first[i] + t;
      std::copy_n(q.begin() + int64_t(vb.row0[i] + t) * QW, QW, qj.begin() + int64_t(i) * QW);
    }
    Batch pb(ones, pos, bt0, dtables, BS);
    bf16* pout = dev(std::vector<bf16>(int64_t(S) * QW, __float2bfloat16(NAN)));
    float* pws = dev(std::vector<float>(lm::cuda::paged_attention_workspace_floats(pb.view, c.nq, c.hd), NAN));
    lm::cuda::paged_attention(pb.view, dev(qj), c.nq, c.nkv, c.hd, kc, vc, pout, pws, nullptr);
    sync("paged_attention (plain)");
    const auto want = download(pout, int64_t(S) * QW);
    for (int i = 0; i < S; ++i) {
      if (j >= c.lens[i]) continue;
      ++compared;
      bad += !bitwise(got.data() + int64_t(vb.row0[i] + j) * QW, want.data() + int64_t(i) * QW, QW);
    }
    cudaFree(pout);
    cudaFree(pws);
  }
  verdict(std::string("attention decode rows == plain steps: ") + c.name, bad == 0, std::to_string(bad) + " of " + std::to_string(compared) + " rows differ");
  for (void* p : {static_cast<void*>(kc), static_cast<void*>(vc), static_cast<void*>(out), static_cast<void*>(ws)}) cudaFree(p);
}

// ---- small-batch MoE: each row of an R-row layer == that row alone ----

struct MoeCase {
  const char* name;
  int H, E, k, inter, S;
  bool popular;  // every row picks experts 3, 5, 11 (groups larger than one pass of 4 rows)
};

/** One moe_decode layer over R rows of x (H) from h0; returns out and the chosen experts. */
std::pair<std::vector<float>, std::vector<int32_t>> moe_layer(const MoeCase& c, const bf16* x, const bf16* gate, const float* bias, const bf16* const* ups, const bf16* const* downs, const bf16* sup,
                                                               const bf16* sdown, const std::vector<float>& h0, int R, unsigned* counters) {
  lm::cuda::MoeDecodeParams p{};
  p.R = R, p.x = x, p.H = c.H, p.gate = gate, p.correction_bias = bias, p.E = c.E, p.n_group = 1, p.topk_group = 1, p.k = c.k, p.norm_topk = true, p.scaling = 2.5f;
  p.v = x, p.Din = c.H, p.up = ups, p.down = downs, p.inter = c.inter, p.shared_up = sup, p.shared_down = sdown, p.S = c.S;
  p.out = dev(h0), p.accumulate = true;
  p.logits = dev(std::vector<float>(int64_t(R) * c.E, NAN));
  p.ids = dev(std::vector<int32_t>(int64_t(R) * c.k, -1));
  p.weights = dev(std::vector<float>(int64_t(R) * c.k, NAN));
  p.act = dev(std::vector<bf16>(int64_t(R) * c.k * c.inter, __float2bfloat16(NAN)));
  p.shared_act = dev(std::vector<bf16>(int64_t(R) * c.S, __float2bfloat16(NAN)));
  p.expert_out = dev(std::vector<float>(int64_t(R) * c.k * c.H, NAN));
  p.shared_out = dev(std::vector<float>(int64_t(R) * c.H, NAN));
  p.counters = counters;
  if (!lm::cuda::moe_decode_supported(p)) throw lm::Error("moe_decode_supported refused a test shape");
  lm::cuda::moe_decode_route(p, nullptr);
  lm::cuda::moe_decode_up(p, nullptr);
  lm::cuda::moe_decode_down(p, nullptr);
  sync("moe_decode");
  auto r = std::make_pair(download(p.out, h0.size()), download(p.ids, int64_t(R) * c.k));
  for (void* q : {static_cast<void*>(p.out), static_cast<void*>(p.logits), static_cast<void*>(p.ids), static_cast<void*>(p.weights), static_cast<void*>(p.act), static_cast<void*>(p.shared_act),
                  static_cast<void*>(p.expert_out), static_cast<void*>(p.shared_out)})
    cudaFree(q);
  return r;
}

void test_moe_rows(std::mt19937& g, const MoeCase& c) {
  const int RMAX = lm::cuda::MOE_DECODE_MAX_ROWS;
  const auto x = round_all(randn(g, int64_t(RMAX) * c.H));
  const bf16* dx = dev(to_bf16(x));
  const bf16* gate = dev(to_bf16(round_all(randn(g, int64_t(c.E) * c.H, 1.f / std::sqrt(float(c.H))))));
  auto bias = randn(g, c.E, 0.05f);
  if (c.popular)
    for (int e : {3, 5, 11}) bias[e] += 5.f;
  const float* dbias = dev(bias);
  const int64_t wsize = int64_t(c.inter) * c.H;
  bf16* up_all = dev_dummy(c.E * wsize, 41, 1.f / std::sqrt(float(c.H)));
  bf16* down_all = dev_dummy(c.E * wsize, 42, 1.f / std::sqrt(float(c.inter)));
  std::vector<const bf16*> ups(c.E), downs(c.E);
  for (int e = 0; e < c.E; ++e) ups[e] = up_all + e * wsize, downs[e] = down_all + e * wsize;
  const bf16* const* dups = dev(ups);
  const bf16* const* ddowns = dev(downs);
  bf16* sup = dev_dummy(int64_t(c.S) * c.H, 43, 1.f / std::sqrt(float(c.H)));
  bf16* sdown = dev_dummy(int64_t(c.H) * c.S, 44, 1.f / std::sqrt(float(c.S)));
  unsigned* counters = dev(std::vector<unsigned>(lm::cuda::moe_decode_counters(c.H), 0u));
  const auto h0 = randn(g, int64_t(RMAX) * c.H);
  std::vector<float> alone(int64_t(RMAX) * c.H);
  std::vector<int32_t> alone_ids(int64_t(RMAX) * c.k);
  for (int r = 0; r < RMAX; ++r) {
    const std::vector<float> h0r(h0.begin() + int64_t(r) * c.H, h0.begin() + int64_t(r + 1) * c.H);
    auto [o, ids] = moe_layer(c, dx + int64_t(r) * c.H, gate, dbias, dups, ddowns, sup, sdown, h0r, 1, counters);
    std::copy(o.begin(), o.end(), alone.begin() + int64_t(r) * c.H);
    std::copy(ids.begin(), ids.end(), alone_ids.begin() + int64_t(r) * c.k);
  }
  int bad = 0, bad_ids = 0;
  for (int R = 2; R <= RMAX; ++R) {
    const std::vector<float> h0R(h0.begin(), h0.begin() + int64_t(R) * c.H);
    auto [o, ids] = moe_layer(c, dx, gate, dbias, dups, ddowns, sup, sdown, h0R, R, counters);
    bad += !bitwise(o.data(), alone.data(), o.size());
    bad_ids += ids != std::vector<int32_t>(alone_ids.begin(), alone_ids.begin() + int64_t(R) * c.k);
  }
  verdict(std::string("moe_decode rows of R = 2..8 == each row alone: ") + c.name, bad == 0 && bad_ids == 0,
          std::to_string(bad) + " outputs, " + std::to_string(bad_ids) + " routings differ");
  for (void* p : {static_cast<void*>(up_all), static_cast<void*>(down_all), static_cast<void*>(sup), static_cast<void*>(sdown)}) cudaFree(p);
}

// ---- the engine: MTP verify steps == plain decode steps ----

/** Dummy weights; latent: LatentMoE (fc1 / fc2 around the experts, the shared expert beside), as the demo model. */
lm::EngineOptions engine_options(bool mtp, bool latent) {
  lm::EngineOptions o;
  auto& s = o.spec;
  s.vocab_size = 301;
  s.hidden_size = 64;
  s.pattern = "M*EM-E";
  s.mtp_pattern = "*E";
  s.num_nextn_predict_layers = 1;
  s.mamba_num_heads = 4, s.mamba_head_dim = 16, s.ssm_state_size = 16, s.n_groups = 2, s.conv_kernel = 4, s.chunk_size = 16;
  s.num_attention_heads = 4, s.num_key_value_heads = 2, s.head_dim = 16;
  s.intermediate_size = 48, s.moe_intermediate_size = 32, s.moe_shared_expert_intermediate_size = 32;
  s.n_routed_experts = 8, s.num_experts_per_tok = 2;
  s.moe_latent_size = latent ? 32 : 0;
  o.backend = "cuda";
  o.dummy = true;
  o.dummy_seed = 11;
  o.max_slots = 4;
  o.kv_block_size = 4;
  o.num_kv_blocks = 4 * 40;  // 160 positions per slot
  o.mtp = mtp;
  o.cuda_graphs = "replay";
  return o;
}

std::vector<int32_t> table(int slot) {
  std::vector<int32_t> t(40);
  for (int i = 0; i < 40; ++i) t[i] = slot * 40 + i;
  return t;
}

std::vector<int32_t> prompt(int n, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 5) % 301;
  return t;
}

/**
 * S sequences: plain greedy decoding (MTP off, decode graphs) records each step's tokens, logits and
 * states; then the MTP engine verifies those tokens as drafts, k per step from `ks` (cycled), every
 * third step's last draft changed (a rejection and a rollback). Each verify row whose fed tokens
 * are the plain ones must give the plain step's logits bitwise; the emitted tokens must be the plain
 * ones; the state after each step must equal the plain state at the same position bitwise.
 */
void test_engine_verify(int S, const std::vector<int>& ks, bool latent) {
  const int V = 301, N = 40, Lp = 9;
  auto prefill_batch = [&] {  // every sequence's prompt from position 0
    std::vector<lm::StepSeq> pre;
    for (int i = 0; i < S; ++i) {
      lm::StepSeq q;
      q.slot = i, q.tokens = prompt(Lp, i), q.position = 0, q.block_table = table(i);
      pre.push_back(q);
    }
    return pre;
  };
  auto plain = lm::create_engine(engine_options(false, latent));
  std::vector<std::vector<int32_t>> ref(S);               // ref[i][t]: token t (0: the prefill's)
  std::vector<std::vector<std::vector<float>>> logits(S);  // logits[i][t]: after feeding ref[i][t]
  std::vector<std::vector<std::vector<float>>> state(S);   // state[i][t]: after feeding ref[i][t]
  {
    const auto out = plain->step(prefill_batch());
    for (int i = 0; i < S; ++i) ref[i].push_back(out.tokens[i]);
    for (int t = 0; t < N + 10; ++t) {
      std::vector<lm::StepSeq> dec;
      for (int i = 0; i < S; ++i) {
        lm::StepSeq q;
        q.slot = i, q.tokens = {ref[i][t]}, q.position = Lp + t, q.block_table = table(i), q.logits = lm::LogitsMode::Last;
        dec.push_back(q);
      }
      const auto o = plain->step(dec);
      for (int i = 0; i < S; ++i) {
        ref[i].push_back(o.tokens[i]);
        logits[i].emplace_back(o.logits.begin() + int64_t(i) * V, o.logits.begin() + int64_t(i + 1) * V);
        state[i].push_back(plain->slot_state(i));
      }
    }
  }
  auto mtp = lm::create_engine(engine_options(true, latent));
  const auto out0 = mtp->step(prefill_batch());
  bool tokens_ok = true, logits_ok = true, state_ok = true;
  int rows = 0, steps = 0, accepted = 0, rejected = 0;
  for (int i = 0; i < S; ++i) tokens_ok = tokens_ok && out0.tokens[i] == ref[i][0];
  std::vector<int> got(S, 1);  // tokens emitted so far per sequence (ref[i][0 .. got - 1])
  while (*std::min_element(got.begin(), got.end()) < N) {
    std::vector<lm::StepSeq> batch;
    std::vector<int> kk(S), changed(S, -1);
    for (int i = 0; i < S; ++i) {
      const int k = ks[(steps + i) % ks.size()], g0 = got[i];
      kk[i] = k;
      lm::StepSeq q;
      q.slot = i, q.position = Lp + g0 - 1, q.block_table = table(i), q.logits = lm::LogitsMode::All, q.num_drafts = k;
      q.tokens = {ref[i][g0 - 1]};
      for (int d = 0; d < k; ++d) q.tokens.push_back(ref[i][g0 + d]);
      if (steps % 3 == 2) {  // a wrong last draft
        q.tokens[k] = (q.tokens[k] + 1) % V;
        changed[i] = k;
      }
      batch.push_back(q);
    }
    const auto o = mtp->step(batch);
    int64_t at = 0;
    for (int i = 0; i < S; ++i) {
      const int k = kk[i], g0 = got[i], a = o.num_accepted[i];
      for (int j = 0; j <= k; ++j, at += V) {
        if (changed[i] >= 0 && j >= changed[i]) continue;  // fed a token plain decoding did not
        ++rows;
        logits_ok = logits_ok && bitwise(o.logits.data() + at, logits[i][g0 - 1 + j].data(), V);
      }
      const int want_a = changed[i] >= 0 ? k - 1 : k;
      tokens_ok = tokens_ok && a == want_a && o.tokens[i] == ref[i][g0 + a];
      accepted += a;
      rejected += a < k;
      got[i] = g0 + a + 1;
      state_ok = state_ok && mtp->slot_state(i) == state[i][g0 - 1 + a];
    }
    ++steps;
  }
  std::string kl;
  for (int k : ks) kl += (kl.empty() ? "" : ",") + std::to_string(k);
  const std::string what = "engine verify == plain decode, " + std::to_string(S) + (S == 1 ? " sequence" : " sequences") + ", k " + kl + (latent ? ", latent MoE" : "");
  verdict(what, tokens_ok && logits_ok && state_ok,
          std::string("tokens ") + (tokens_ok ? "same" : "DIFFER") + ", logits of " + std::to_string(rows) + " rows " + (logits_ok ? "bitwise" : "DIFFER") + ", states " + (state_ok ? "bitwise" : "DIFFER") +
              "; " + std::to_string(steps) + " steps, " + std::to_string(accepted) + " drafts accepted, " + std::to_string(rejected) + " rejections");
}

}  // namespace

int main() {
  try {
    std::mt19937 g(321);
    test_skinny_rows(g);
    // Nano's attention heads: 1 sequence (64 splits either way), then decode steps whose rows
    // outnumber their sequences past 8 (the split count follows the sequences, not the rows)
    test_attention_rows(g, {"1 seq, k 7, ctx 5000", 32, 2, 128, {8}, {4999}});
    test_attention_rows(g, {"2 seqs, k 3 / 1", 32, 2, 128, {4, 2}, {777, 3000}});
    test_attention_rows(g, {"8 seqs, k 1..3", 32, 2, 128, {2, 4, 3, 2, 4, 2, 3, 4}, {100, 2100, 640, 5000, 64, 1500, 3333, 900}});
    {
      std::vector<int> lens, last;
      for (int i = 0; i < 40; ++i) lens.push_back(1 + i % 4), last.push_back(200 + 97 * i);
      test_attention_rows(g, {"40 seqs, k 0..3", 32, 2, 128, lens, last});
    }
    test_attention_rows(g, {"head dim 64, 16 seqs, k 1", 8, 2, 64, std::vector<int>(16, 2), {50, 900, 1700, 33, 4000, 260, 2600, 129, 64, 65, 1000, 3000, 2000, 10, 444, 777}});
    test_moe_rows(g, {"Nano widths", 2688, 128, 6, 1856, 3712, false});
    test_moe_rows(g, {"rows sharing experts", 264, 32, 4, 136, 200, true});
    test_engine_verify(1, {1, 2, 3, 4, 5, 6, 7}, true);
    test_engine_verify(1, {2, 7, 3}, false);
    test_engine_verify(2, {3, 1, 2}, true);
    test_engine_verify(2, {1, 3}, false);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failures\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
