// Every CUDA op against the CPU reference on random inputs with unaligned sizes, several sequences
// and state continuation (run on the GPU machine by scripts/gpu-check.sh). Prints max and mean
// error per op; tolerances per output dtype are stated beside each check.
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <random>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "engine.h"
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/ops.h"
#include "engine/sampler.h"

namespace {

using lm::cuda::bf16;
int failures = 0;

struct Err {
  double max = 0, mean = 0;
};

Err compare(const std::vector<float>& got, const std::vector<float>& want) {
  Err e;
  double scale = 1e-6;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) {
    double d = std::fabs(static_cast<double>(got[i]) - want[i]) / scale;
    if (std::isnan(d)) d = INFINITY;  // an unwritten (poisoned) or NaN output fails every tolerance
    e.max = std::max(e.max, d);
    e.mean += d / want.size();
  }
  return e;
}

void report(const char* op, const Err& e, double tol) {
  const bool ok = e.max <= tol;
  if (!ok) ++failures;
  std::printf("%-34s max %.2e  mean %.2e  (tol %.0e, relative to max |ref|) %s\n", op, e.max, e.mean, tol, ok ? "ok" : "FAIL");
}

std::vector<float> randn(std::mt19937& g, size_t n, float s = 1.f) {
  std::normal_distribution<float> d(0.f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

template <class T>
T* dev(const std::vector<T>& h) {
  T* p = nullptr;
  lm::cuda::check(cudaMalloc(&p, std::max<size_t>(1, h.size()) * sizeof(T)), "cudaMalloc");
  lm::cuda::check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}
std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}
template <class T>
std::vector<float> host(const T* p, size_t n) {
  std::vector<T> h(n);
  lm::cuda::check(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<float> o(n);
  for (size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, bf16>) o[i] = __bfloat162float(h[i]);
    else o[i] = static_cast<float>(h[i]);
  }
  return o;
}

/** A batch of sequences with given lengths, positions and slots, as host vectors and a device view. */
struct Batch {
  std::vector<int> slot, row0, len, pos0, bt0, tables, row_seq;
  lm::cuda::BatchView view;
  Batch(const std::vector<int>& lens, const std::vector<int>& pos, int block_size) {
    int r = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      slot.push_back(static_cast<int>(i) * 2 + 1);
      row0.push_back(r);
      len.push_back(lens[i]);
      pos0.push_back(pos[i]);
      bt0.push_back(static_cast<int>(tables.size()));
      const int blocks = (pos[i] + lens[i] + block_size - 1) / block_size;
      for (int b = 0; b < blocks; ++b) tables.push_back(static_cast<int>(i) * 100 + b * 3 + 1);  // scattered blocks
      for (int t = 0; t < lens[i]; ++t) row_seq.push_back(static_cast<int>(i));
      r += lens[i];
    }
    view.nseq = static_cast<int>(lens.size());
    view.rows = r;
    view.seq_slot = dev(slot);
    view.seq_row0 = dev(row0);
    view.seq_len = dev(len);
    view.seq_pos0 = dev(pos0);
    view.seq_bt0 = dev(bt0);
    view.block_tables = dev(tables);
    view.block_size = block_size;
    view.row_seq = dev(row_seq);
    view.max_len = *std::max_element(lens.begin(), lens.end());
  }
};

void test_gemm(std::mt19937& g) {
  lm::cuda::Gemm gemm;
  for (auto [M, K, N] : {std::tuple{1, 96, 200}, {37, 130, 75}, {128, 256, 384}}) {
    auto x = randn(g, M * K), w = randn(g, N * K, 0.1f);
    for (auto& v : x) v = round_bf16(v);
    for (auto& v : w) v = round_bf16(v);
    std::vector<float> ref(M * N);
    lm::cpu::ThreadPool pool(1);
    lm::cpu::gemm_xwt(pool, x.data(), M, K, w.data(), N, ref.data());
    auto dx = dev(to_bf16(x));
    auto dw = dev(to_bf16(w));
    float* dy = dev(std::vector<float>(M * N, 0.f));
    gemm.run(dx, M, K, dw, N, dy, 0.f, nullptr);
    report(("gemm " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K)).c_str(), compare(host(dy, M * N), ref), 1e-4);
  }
}

void test_rmsnorm(std::mt19937& g) {
  const int R = 7, H = 333;
  auto h = randn(g, R * H), w = randn(g, H);
  std::vector<float> ref(R * H);
  lm::cpu::rmsnorm(h.data(), w.data(), R, H, 1e-5f, ref.data());
  bf16* out = dev(std::vector<bf16>(R * H));
  lm::cuda::rmsnorm_bf16(dev(h), nullptr, R, H, dev(w), 1e-5f, out, nullptr);
  report("rmsnorm (bf16 out)", compare(host(out, R * H), ref), 1e-2);
}

void test_conv_and_ssm(std::mt19937& g) {
  const int nh = 6, P = 12, G = 3, N = 20, K = 4, I = nh * P, CD = I + 2 * G * N;
  const std::vector<int> lens = {13, 1, 29}, pos = {5, 40, 0};
  Batch b(lens, pos, 16);
  const int R = b.view.rows, slots = 8;
  auto x = randn(g, R * CD), w = randn(g, CD * K, 0.5f), bias = randn(g, CD, 0.1f);
  auto conv_state = randn(g, slots * (K - 1) * CD);
  std::vector<float> ref_out(R * CD), ref_state = conv_state;
  for (size_t i = 0; i < lens.size(); ++i)
    lm::cpu::causal_conv1d_silu(x.data() + b.row0[i] * CD, CD, lens[i], CD, K, w.data(), bias.data(), ref_state.data() + b.slot[i] * (K - 1) * CD, ref_out.data() + b.row0[i] * CD);
  float* dstate = dev(conv_state);
  float* dout = dev(std::vector<float>(R * CD));
  float* dx = dev(x);
  lm::cuda::conv1d_silu(b.view, dx, CD, CD, K, dev(w), dev(bias), dstate, dout, nullptr);
  lm::cuda::conv_state_update(b.view, dx, CD, CD, K, dstate, nullptr);
  report("conv1d + silu (3 seqs, with state)", compare(host(dout, R * CD), ref_out), 1e-5);
  report("conv state after the step", compare(host(dstate, conv_state.size()), ref_state), 1e-6);

  // SSM on the conv output with random dt and initial states.
  auto xbc = ref_out;
  auto dt_raw = randn(g, R * nh, 0.5f), dt_bias = randn(g, nh, 0.3f), D = randn(g, nh);
  std::vector<float> A(nh);
  for (auto& a : A) a = -std::exp(std::uniform_real_distribution<float>(0.f, 2.f)(g));
  auto ssm = randn(g, slots * nh * P * N, 0.3f);
  std::vector<float> ref_y(R * I), ref_ssm = ssm, dt(R * nh);
  for (int r = 0; r < R; ++r)
    for (int hh = 0; hh < nh; ++hh) dt[r * nh + hh] = lm::cpu::softplus(dt_raw[r * nh + hh] + dt_bias[hh]);
  for (size_t i = 0; i < lens.size(); ++i) {
    lm::cpu::SsmArgs a{lens[i], nh, P, G, N, xbc.data() + b.row0[i] * CD, CD, xbc.data() + b.row0[i] * CD + I, xbc.data() + b.row0[i] * CD + I + G * N, CD,
                       dt.data() + b.row0[i] * nh, A.data(), D.data(), ref_ssm.data() + int64_t(b.slot[i]) * nh * P * N, ref_y.data() + b.row0[i] * I};
    lm::cpu::ssm_recurrent_scan(a);
  }
  float* dssm = dev(ssm);
  float* dy = dev(std::vector<float>(R * I));
  lm::cuda::SsmParams p{nh, P, G, N, dev(xbc), CD, dev(dt_raw), nh, dev(dt_bias), dev(A), dev(D), 0.f, 3.4e38f, dssm, dy};
  lm::cuda::ssm_scan(b.view, p, nullptr);
  report("ssm scan (3 seqs, initial states)", compare(host(dy, R * I), ref_y), 1e-4);
  report("ssm state after the step", compare(host(dssm, ssm.size()), ref_ssm), 1e-4);

  // Gated group norm of y with z.
  auto z = randn(g, R * I), nw = randn(g, I);
  std::vector<float> ref_n(R * I);
  lm::cpu::gated_group_rmsnorm(ref_y.data(), z.data(), I, nw.data(), R, I, I / G, 1e-5f, ref_n.data());
  bf16* dn = dev(std::vector<bf16>(R * I));
  lm::cuda::gated_rmsnorm(dev(ref_y), dev(z), I, dev(nw), R, I, I / G, 1e-5f, dn, nullptr);
  report("gated group rmsnorm (bf16 out)", compare(host(dn, R * I), ref_n), 1e-2);
}

void test_attention(std::mt19937& g) {
  const int nq = 6, nkv = 2, hd = 40, bs = 16;
  const std::vector<int> lens = {9, 1, 33}, pos = {20, 70, 0};
  Batch b(lens, pos, bs);
  const int R = b.view.rows, blocks = 400;
  const int W = nkv * hd;
  // Cache already holding earlier positions (bf16), plus this step's k/v.
  auto cache_k = randn(g, int64_t(blocks) * bs * W), cache_v = randn(g, int64_t(blocks) * bs * W);
  for (auto& v : cache_k) v = round_bf16(v);
  for (auto& v : cache_v) v = round_bf16(v);
  auto q = randn(g, R * nq * hd), k = randn(g, R * W), v = randn(g, R * W);
  bf16* dk = dev(to_bf16(cache_k));
  bf16* dv = dev(to_bf16(cache_v));
  bf16* dout = dev(std::vector<bf16>(R * nq * hd));
  lm::cuda::kv_write(b.view, dev(k), dev(v), nkv, hd, dk, dv, nullptr);
  lm::cuda::paged_attention(b.view, dev(q), nq, nkv, hd, dk, dv, dout, dev(std::vector<float>(lm::cuda::paged_attention_workspace_floats(b.view.rows, nq, hd))), nullptr);
  // CPU: write the bf16-rounded new rows the same way, then attend.
  std::vector<float> ref(R * nq * hd);
  for (size_t i = 0; i < lens.size(); ++i) {
    for (int t = 0; t < lens[i]; ++t) {
      const int p = pos[i] + t, blk = b.tables[b.bt0[i] + p / bs];
      for (int j = 0; j < W; ++j) {
        cache_k[(int64_t(blk) * bs + p % bs) * W + j] = round_bf16(k[(b.row0[i] + t) * W + j]);
        cache_v[(int64_t(blk) * bs + p % bs) * W + j] = round_bf16(v[(b.row0[i] + t) * W + j]);
      }
    }
    lm::cpu::paged_attention(q.data() + b.row0[i] * nq * hd, lens[i], pos[i], nq, nkv, hd, cache_k.data(), cache_v.data(), b.tables.data() + b.bt0[i], bs, ref.data() + b.row0[i] * nq * hd);
  }
  report("paged attention (GQA 6/2, hd 40)", compare(host(dout, R * nq * hd), ref), 1e-2);
  report("KV cache after the write", compare(host(dk, cache_k.size()), cache_k), 1e-7);
}

/** One attention problem: head shape, per-sequence lengths and first positions, KV block size. */
struct AttnCase {
  const char* name;
  int nq, nkv, hd;
  std::vector<int> lens, pos;
  int block_size;
};

/**
 * paged_attention through the paths it picks by shape (tiled prefill for sequences of more than 8
 * rows: wgmma at head dim 128, mma.sync at 16..64; split-K decode for the rest; the simple kernel
 * for other head dims) against
 * lm::cpu::paged_attention. Every sequence gets its own blocks in shuffled order; the cache holds
 * random keys and values at earlier positions, this step's rows are written by kv_write. q is drawn
 * with scale 2 (peaked softmax, so a wrong mask or a dropped key shows) and rounded to bf16 values,
 * which the kernels read exactly: what remains is the bf16 probabilities in P·V and the bf16
 * output, about 4e-3 of max |ref|; tolerance 1e-2. Output and workspace start as NaN.
 */
void test_attention_case(std::mt19937& g, const AttnCase& c) {
  Batch b(c.lens, c.pos, c.block_size);
  std::vector<int> order;
  for (size_t i = 0; i < b.tables.size(); ++i) order.push_back(static_cast<int>(i) + 1);  // block 0 stays unused
  std::shuffle(order.begin(), order.end(), g);
  b.tables = order;
  b.view.block_tables = dev(b.tables);
  const int blocks = static_cast<int>(order.size()) + 1, W = c.nkv * c.hd, R = b.view.rows, QW = c.nq * c.hd;
  auto cache_k = randn(g, int64_t(blocks) * c.block_size * W), cache_v = randn(g, int64_t(blocks) * c.block_size * W);
  for (auto& v : cache_k) v = round_bf16(v);
  for (auto& v : cache_v) v = round_bf16(v);
  auto q = randn(g, int64_t(R) * QW, 2.f), k = randn(g, int64_t(R) * W), v = randn(g, int64_t(R) * W);
  for (auto& x : q) x = round_bf16(x);
  bf16* dk = dev(to_bf16(cache_k));
  bf16* dv = dev(to_bf16(cache_v));
  bf16* dout = dev(std::vector<bf16>(int64_t(R) * QW, __float2bfloat16(NAN)));
  const int64_t ws_floats = lm::cuda::paged_attention_workspace_floats(R, c.nq, c.hd);
  float* ws = dev(std::vector<float>(ws_floats, NAN));
  lm::cuda::kv_write(b.view, dev(k), dev(v), c.nkv, c.hd, dk, dv, nullptr);
  lm::cuda::paged_attention(b.view, dev(q), c.nq, c.nkv, c.hd, dk, dv, dout, ws, nullptr);
  lm::cuda::check(cudaDeviceSynchronize(), "paged_attention");
  // CPU: every sequence's new rows into the cache first (as kv_write does for the whole step), then attend.
  for (size_t i = 0; i < c.lens.size(); ++i)
    for (int t = 0; t < c.lens[i]; ++t) {
      const int p = c.pos[i] + t, blk = b.tables[b.bt0[i] + p / c.block_size];
      for (int j = 0; j < W; ++j) {
        cache_k[(int64_t(blk) * c.block_size + p % c.block_size) * W + j] = round_bf16(k[int64_t(b.row0[i] + t) * W + j]);
        cache_v[(int64_t(blk) * c.block_size + p % c.block_size) * W + j] = round_bf16(v[int64_t(b.row0[i] + t) * W + j]);
      }
    }
  std::vector<float> ref(int64_t(R) * QW);
  for (size_t i = 0; i < c.lens.size(); ++i)
    lm::cpu::paged_attention(q.data() + int64_t(b.row0[i]) * QW, c.lens[i], c.pos[i], c.nq, c.nkv, c.hd, cache_k.data(), cache_v.data(), b.tables.data() + b.bt0[i], c.block_size,
                             ref.data() + int64_t(b.row0[i]) * QW);
  report(c.name, compare(host(dout, int64_t(R) * QW), ref), 1e-2);
  for (bf16* p : {dk, dv, dout}) cudaFree(p);
  cudaFree(ws);
}

void test_attention_paths(std::mt19937& g) {
  std::vector<int> many_pos(100), ones(100, 1);
  for (auto& p : many_pos) p = std::uniform_int_distribution<int>(0, 2047)(g);
  const std::vector<AttnCase> cases = {
      {"attn prefill 300 from 0, GQA 4/4 hd 64", 4, 4, 64, {300}, {0}, 16},
      {"attn prefill after cached prefix, GQA 8/4 hd 128, bs 12", 8, 4, 128, {200, 77}, {333, 0}, 12},
      {"attn prefill 600 at 100, GQA 32/2 hd 128", 32, 2, 128, {600}, {100}, 16},
      {"attn decode+prefill+MTP, GQA 32/2 hd 128", 32, 2, 128, {1, 150, 3, 1, 5, 1, 2}, {517, 40, 77, 0, 63, 1000, 126}, 16},
      {"attn MTP verify len 2..5, GQA 16/1 hd 64", 16, 1, 64, {3, 3, 5, 2, 4}, {10, 64, 200, 0, 1}, 4},
      {"attn decode 8K split-K, GQA 32/2 hd 128", 32, 2, 128, {1, 1, 1, 1}, {8191, 8300, 4095, 64}, 16},
      {"attn decode b100 ctx<=2K, GQA 32/2 hd128", 32, 2, 128, ones, many_pos, 16},
      {"attn GQA 32/1 (2 head chunks) hd 32", 32, 1, 32, {1, 40, 1}, {300, 20, 5}, 16},
      {"attn GQA 2/1 hd 16, bs 4", 2, 1, 16, {1, 70, 9}, {33, 0, 64}, 4},
  };
  for (const auto& c : cases) test_attention_case(g, c);
}

void test_moe_route(std::mt19937& g) {
  const int R = 19, E = 48, k = 5;
  for (auto [ng, tg] : {std::pair{1, 1}, {4, 2}, {8, 3}}) {
    auto logits = randn(g, R * E), bias = randn(g, E, 0.2f);
    std::vector<int32_t> ref_ids(R * k);
    std::vector<float> ref_w(R * k);
    for (int r = 0; r < R; ++r) lm::cpu::moe_route(logits.data() + r * E, bias.data(), E, ng, tg, k, true, 2.5f, ref_ids.data() + r * k, ref_w.data() + r * k);
    int32_t* did = dev(std::vector<int32_t>(R * k));
    float* dw = dev(std::vector<float>(R * k));
    lm::cuda::moe_route(dev(logits), dev(bias), R, E, ng, tg, k, true, 2.5f, did, dw, nullptr);
    std::vector<int32_t> ids(R * k);
    lm::cuda::check(cudaMemcpy(ids.data(), did, ids.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
    // Compare as sets per row (order within the top-k does not matter for the sum).
    int mismatched = 0;
    std::vector<float> w = host(dw, R * k), want(R * k), got(R * k);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < k; ++j) {
        int found = -1;
        for (int jj = 0; jj < k; ++jj)
          if (ids[r * k + jj] == ref_ids[r * k + j]) found = jj;
        if (found < 0) ++mismatched;
        want[r * k + j] = ref_w[r * k + j];
        got[r * k + j] = found < 0 ? 0.f : w[r * k + found];
      }
    if (mismatched) ++failures;
    std::printf("%-34s %d of %d choices differ %s\n", ("moe route n_group " + std::to_string(ng)).c_str(), mismatched, R * k, mismatched ? "FAIL" : "ok");
    report(("moe route weights n_group " + std::to_string(ng)).c_str(), compare(got, want), 1e-5);
  }
}


/** One routed-experts problem: tokens, experts, choices per token, widths, routing skew, combine mode. */
struct MoeCase {
  int R, E, k, Din, inter;
  bool zipf;        // expert popularity ∝ 1/(rank+1) instead of uniform
  bool accumulate;  // non-latent: combine adds into the residual stream; latent: writes the routed sum
};

/** Distinct experts per token, uniform or Zipf-like. */
std::vector<int32_t> random_routing(std::mt19937& g, int R, int E, int k, bool zipf) {
  std::vector<double> pop(E);
  for (int e = 0; e < E; ++e) pop[e] = zipf ? 1.0 / (e + 1) : 1.0;
  std::vector<int32_t> ids(int64_t(R) * k);
  for (int r = 0; r < R; ++r) {
    std::vector<double> p = pop;
    for (int j = 0; j < k; ++j) {
      std::discrete_distribution<int> d(p.begin(), p.end());
      const int e = d(g);
      ids[int64_t(r) * k + j] = e;
      p[e] = 0.0;
    }
  }
  return ids;
}

/** Device plan → grouped up (relu²) → grouped down → combine, against a CPU loop over the choices. */
void test_moe_experts(std::mt19937& g, const MoeCase& c) {
  const int M = c.R * c.k;
  auto x = randn(g, int64_t(c.R) * c.Din), h0 = randn(g, int64_t(c.R) * c.Din);
  for (auto& v : x) v = round_bf16(v);
  std::vector<std::vector<float>> up(c.E), down(c.E);
  std::vector<bf16*> dup(c.E), ddown(c.E);
  for (int e = 0; e < c.E; ++e) {
    up[e] = randn(g, int64_t(c.inter) * c.Din, 1.f / std::sqrt(float(c.Din)));
    down[e] = randn(g, int64_t(c.Din) * c.inter, 1.f / std::sqrt(float(c.inter)));
    for (auto& v : up[e]) v = round_bf16(v);
    for (auto& v : down[e]) v = round_bf16(v);
    dup[e] = dev(to_bf16(up[e]));
    ddown[e] = dev(to_bf16(down[e]));
  }
  const auto ids = random_routing(g, c.R, c.E, c.k, c.zipf);
  std::vector<float> w(M);
  for (auto& v : w) v = std::uniform_real_distribution<float>(0.1f, 1.f)(g);
  // Reference: relu² activations rounded to bf16 as the device writes them, sums in double.
  std::vector<float> ref = c.accumulate ? h0 : std::vector<float>(h0.size(), 0.f), act(c.inter);
  for (int r = 0; r < c.R; ++r)
    for (int j = 0; j < c.k; ++j) {
      const int e = ids[r * c.k + j];
      for (int n = 0; n < c.inter; ++n) {
        double a = 0;
        for (int d = 0; d < c.Din; ++d) a += double(x[int64_t(r) * c.Din + d]) * up[e][int64_t(n) * c.Din + d];
        act[n] = round_bf16(a > 0 ? float(a * a) : 0.f);
      }
      for (int d = 0; d < c.Din; ++d) {
        double y = 0;
        for (int n = 0; n < c.inter; ++n) y += double(act[n]) * down[e][int64_t(d) * c.inter + n];
        ref[int64_t(r) * c.Din + d] += float(w[r * c.k + j] * y);
      }
    }
  const int tile_rows = lm::cuda::moe_tile_rows(M, c.E), max_tiles = lm::cuda::moe_plan_max_tiles(M, c.E, tile_rows);
  lm::cuda::MoePlan plan{dev(std::vector<int32_t>(M, -1)), dev(std::vector<int32_t>(M, -1)), dev(std::vector<int32_t>(c.E + 1, -1)),
                         dev(std::vector<int4>(max_tiles, make_int4(-1, -1, -1, -1))), dev(std::vector<int32_t>(1, -1))};
  lm::cuda::moe_plan(dev(ids), c.R, c.k, c.E, tile_rows, plan, nullptr);
  bf16* act16 = dev(std::vector<bf16>(int64_t(M) * c.inter));
  float* xo = dev(std::vector<float>(int64_t(M) * c.Din, 0.f));
  lm::cuda::GroupedGemmParams pu{dev(to_bf16(x)), c.Din, plan.src_row, dev(std::vector<const bf16*>(dup.begin(), dup.end())), c.inter, c.Din, plan.tiles, plan.num_tiles, max_tiles, tile_rows, act16, nullptr};
  lm::cuda::grouped_gemm(pu, nullptr);
  lm::cuda::GroupedGemmParams pd{act16, c.inter, nullptr, dev(std::vector<const bf16*>(ddown.begin(), ddown.end())), c.Din, c.inter, plan.tiles, plan.num_tiles, max_tiles, tile_rows, nullptr, xo};
  lm::cuda::grouped_gemm(pd, nullptr);
  float* out = dev(h0);
  lm::cuda::moe_combine(xo, plan.slot_of, dev(w), c.R, c.k, c.Din, out, c.accumulate, nullptr);
  // The plan itself: each expert's positions are contiguous, in expert order, and hold its choices.
  std::vector<int32_t> src_row(M), slot_of(M), offsets(c.E + 1);
  lm::cuda::check(cudaMemcpy(src_row.data(), plan.src_row, M * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  lm::cuda::check(cudaMemcpy(slot_of.data(), plan.slot_of, M * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  lm::cuda::check(cudaMemcpy(offsets.data(), plan.offsets, (c.E + 1) * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  int bad = offsets[0] != 0 || offsets[c.E] != M;
  std::vector<int> seen(M, 0);
  for (int i = 0; i < M; ++i) {
    const int pos = slot_of[i], e = ids[i];
    if (pos < 0 || pos >= M || seen[pos]++ || pos < offsets[e] || pos >= offsets[e + 1] || src_row[pos] != i / c.k) ++bad;
  }
  if (bad) ++failures;
  const std::string name = "moe experts R" + std::to_string(c.R) + " E" + std::to_string(c.E) + " k" + std::to_string(c.k) + " " + std::to_string(c.Din) + "x" + std::to_string(c.inter) +
                           (c.zipf ? " zipf" : "") + (c.accumulate ? " +h" : " latent") + " BM" + std::to_string(tile_rows);
  std::printf("%-34s plan %s\n", name.c_str(), bad ? "FAIL" : "ok");
  // bf16 operands as in the reference, fp32 sums in another order: relu² outputs may round to the
  // neighbouring bf16 (4e-3 relative), which the down projection averages: ~1e-3 of max |ref|.
  report("  routed output vs CPU", compare(host(out, h0.size()), ref), 1e-2);
}

/** Mean milliseconds of one call of fn over `iters` calls after one warm-up call (CUDA events, default stream). */
template <class F>
float time_ms(int iters, F&& fn) {
  cudaEvent_t e0, e1;
  lm::cuda::check(cudaEventCreate(&e0), "cudaEventCreate");
  lm::cuda::check(cudaEventCreate(&e1), "cudaEventCreate");
  fn();
  lm::cuda::check(cudaEventRecord(e0), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) fn();
  lm::cuda::check(cudaEventRecord(e1), "cudaEventRecord");
  lm::cuda::check(cudaEventSynchronize(e1), "cudaEventSynchronize");
  float ms = 0.f;
  lm::cuda::check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / iters;
}

/** Nano expert shapes (128 experts, 2688 → 1856 → 2688, k 6): grouped GEMM time and its roofline. */
void time_moe_nano(std::mt19937& g) {
  const int E = 128, k = 6, Din = 2688, inter = 1856;
  const int64_t wsize = int64_t(inter) * Din;
  bf16* wup = nullptr;  // (2E, inter, Din): up matrices, then down
  lm::cuda::check(cudaMalloc(&wup, 2 * E * wsize * sizeof(bf16)), "cudaMalloc");
  lm::cuda::fill_dummy_bf16(wup, 2 * E * wsize, 7, -0.02f, 0.02f, nullptr);
  std::vector<const bf16*> ups(E), downs(E);
  for (int e = 0; e < E; ++e) {
    ups[e] = wup + e * wsize;
    downs[e] = wup + (E + e) * wsize;
  }
  const bf16* const* dups = dev(ups);
  const bf16* const* ddowns = dev(downs);
  for (int R : {1, 32, 256, 1366, 10923}) {
    const int M = R * k, tile_rows = lm::cuda::moe_tile_rows(M, E), max_tiles = lm::cuda::moe_plan_max_tiles(M, E, tile_rows);
    const auto ids = random_routing(g, R, E, k, false);
    std::vector<int> touched(E, 0);
    for (int32_t e : ids) touched[e] = 1;
    int distinct = 0;
    for (int t : touched) distinct += t;
    lm::cuda::MoePlan plan{dev(std::vector<int32_t>(M)), dev(std::vector<int32_t>(M)), dev(std::vector<int32_t>(E + 1)), dev(std::vector<int4>(max_tiles)), dev(std::vector<int32_t>(1))};
    const int32_t* dids = dev(ids);
    bf16* x = dev(std::vector<bf16>(int64_t(R) * Din, __float2bfloat16(0.5f)));
    bf16* act16 = dev(std::vector<bf16>(int64_t(M) * inter));
    float* xo = nullptr;
    lm::cuda::check(cudaMalloc(&xo, int64_t(M) * Din * sizeof(float)), "cudaMalloc");
    lm::cuda::GroupedGemmParams pu{x, Din, plan.src_row, dups, inter, Din, plan.tiles, plan.num_tiles, max_tiles, tile_rows, act16, nullptr};
    lm::cuda::GroupedGemmParams pd{act16, inter, nullptr, ddowns, Din, inter, plan.tiles, plan.num_tiles, max_tiles, tile_rows, nullptr, xo};
    lm::cuda::moe_plan(dids, R, k, E, tile_rows, plan, nullptr);
    const float plan_ms = time_ms(20, [&] { lm::cuda::moe_plan(dids, R, k, E, tile_rows, plan, nullptr); });
    const float up_ms = time_ms(20, [&] { lm::cuda::grouped_gemm(pu, nullptr); });
    const float down_ms = time_ms(20, [&] { lm::cuda::grouped_gemm(pd, nullptr); });
    const double bytes = double(distinct) * wsize * 2, flops = 2.0 * M * wsize;
    std::printf("moe timing R %5d (%5d slots, %3d experts, BM %d): plan %.3f ms, up %.3f ms (%.0f GB/s of weights, %.0f TFLOP/s), down %.3f ms\n", R, M, distinct, tile_rows, plan_ms, up_ms,
                bytes / (up_ms * 1e-3) / 1e9, flops / (up_ms * 1e-3) / 1e12, down_ms);
    cudaFree(xo);
  }
  cudaFree(wup);
}

/** One SSM problem: random x|B|C rows, dt, A, D and per-slot initial states for a batch. */
struct SsmCase {
  int nh, P, G, N, chunk;
  std::vector<int> lens;
};

void test_ssd_chunked(std::mt19937& g, const SsmCase& c) {
  const int I = c.nh * c.P, CD = I + 2 * c.G * c.N, slots = 2 * static_cast<int>(c.lens.size()) + 1;
  std::vector<int> pos(c.lens.size(), 3);
  Batch b(c.lens, pos, 16);
  const int R = b.view.rows;
  // dt around softplus(-3) ≈ 0.05 and |A| around 1: decays of ~0.95 per token, so the state
  // carries across many chunks.
  auto xbc = randn(g, int64_t(R) * CD), dt_raw = randn(g, int64_t(R) * c.nh, 0.5f), D = randn(g, c.nh);
  std::vector<float> dt_bias(c.nh), A(c.nh), dt(int64_t(R) * c.nh);
  for (auto& v : dt_bias) v = -3.f + std::normal_distribution<float>(0.f, 0.3f)(g);
  for (auto& a : A) a = -std::exp(std::uniform_real_distribution<float>(-1.f, 1.f)(g));
  for (int64_t r = 0; r < R; ++r)
    for (int hh = 0; hh < c.nh; ++hh) dt[r * c.nh + hh] = lm::cpu::softplus(dt_raw[r * c.nh + hh] + dt_bias[hh]);
  const int64_t state_size = int64_t(c.nh) * c.P * c.N;
  auto ssm = randn(g, slots * state_size, 0.3f);
  std::vector<float> ref_y(int64_t(R) * I), ref_ssm = ssm;
  for (size_t i = 0; i < c.lens.size(); ++i) {
    const float* row = xbc.data() + int64_t(b.row0[i]) * CD;
    lm::cpu::SsmArgs a{c.lens[i], c.nh, c.P, c.G, c.N, row, CD, row + I, row + I + c.G * c.N, CD, dt.data() + int64_t(b.row0[i]) * c.nh, A.data(), D.data(), ref_ssm.data() + b.slot[i] * state_size,
                       ref_y.data() + int64_t(b.row0[i]) * I};
    lm::cpu::ssm_recurrent_scan(a);
  }
  float* dssm = dev(ssm);
  float* dy = dev(std::vector<float>(int64_t(R) * I, 0.f));
  float* ws = dev(std::vector<float>(lm::cuda::ssd_chunked_workspace_floats(R, c.G, c.chunk)));
  lm::cuda::SsmParams p{c.nh, c.P, c.G, c.N, dev(xbc), CD, dev(dt_raw), c.nh, dev(dt_bias), dev(A), dev(D), 0.f, 3.4e38f, dssm, dy};
  if (!lm::cuda::ssd_chunked_supported(c.P, c.N, c.chunk)) throw lm::Error("ssd_chunked_supported refused a test shape");
  lm::cuda::ssd_chunked_scan(b.view, p, c.chunk, ws, nullptr);
  lm::cuda::ssm_scan(b.view, p, nullptr, /*single_token_only=*/true);
  std::string lens;
  for (int l : c.lens) lens += (lens.empty() ? "" : ",") + std::to_string(l);
  const std::string name = "ssd chunked " + std::to_string(c.nh) + "x" + std::to_string(c.P) + "x" + std::to_string(c.N) + " G" + std::to_string(c.G) + " L" + std::to_string(c.chunk) + " [" + lens + "]";
  // TF32 operands (10-bit mantissa) in the chunk products, fp32 sums and state: ~1e-3 of max |ref|.
  report(name.c_str(), compare(host(dy, int64_t(R) * I), ref_y), 5e-3);
  report("  state after (vs recurrence)", compare(host(dssm, ssm.size()), ref_ssm), 5e-3);
}

/** Nano heads (64 × 64 × 128, 8 groups, chunk 128), one 8K-token sequence: tokens/s per layer. */
void time_ssd_nano(std::mt19937& g) {
  const int nh = 64, P = 64, G = 8, N = 128, L = 128, T = 8192, I = nh * P, CD = I + 2 * G * N;
  Batch b({T}, {0}, 16);
  auto xbc = randn(g, int64_t(T) * CD), dt_raw = randn(g, int64_t(T) * nh, 0.5f);
  std::vector<float> dt_bias(nh, -3.f), A(nh, -1.f), D(nh, 1.f);
  float* dssm = dev(std::vector<float>(16 * int64_t(nh) * P * N, 0.f));  // slots 1, 3, .., 15
  float* dy = dev(std::vector<float>(int64_t(T) * I, 0.f));
  float* ws = dev(std::vector<float>(lm::cuda::ssd_chunked_workspace_floats(T, G, L)));
  lm::cuda::SsmParams p{nh, P, G, N, dev(xbc), CD, dev(dt_raw), nh, dev(dt_bias), dev(A), dev(D), 0.f, 3.4e38f, dssm, dy};
  const float chunked = time_ms(20, [&] { lm::cuda::ssd_chunked_scan(b.view, p, L, ws, nullptr); });
  const float recurrent = time_ms(2, [&] { lm::cuda::ssm_scan(b.view, p, nullptr); });
  Batch b8(std::vector<int>(8, T / 8), std::vector<int>(8, 0), 16);  // the same rows as 8 sequences
  const float chunked8 = time_ms(20, [&] { lm::cuda::ssd_chunked_scan(b8.view, p, L, ws, nullptr); });
  std::printf("%-34s chunked %.3f ms = %.2e tok/s per layer (target 3e7); recurrent %.3f ms = %.2e tok/s\n", "ssd timing, Nano heads, 8192 tok", chunked, T / (chunked * 1e-3), recurrent, T / (recurrent * 1e-3));
  std::printf("%-34s chunked %.3f ms = %.2e tok/s per layer\n", "ssd timing, 8 seqs x 1024 tok", chunked8, T / (chunked8 * 1e-3));
}

void test_sampler(std::mt19937& g) {
  const int V = 50021;
  struct Case {
    float temperature;
    int top_k;
    float top_p;
  };
  const std::vector<Case> cases = {{0.f, 0, 1.f}, {0.8f, 1, 1.f}, {1.f, 0, 1.f}, {0.7f, 0, 1.f}, {1.f, 40, 1.f}, {1.f, 0, 0.9f}, {0.9f, 50, 0.8f}, {1.5f, 0, 0.5f}, {0.6f, 2000, 0.95f}, {2.f, 0, 1.f}};
  const int rows_per_case = 8, n = static_cast<int>(cases.size()) * rows_per_case;
  auto logits = randn(g, int64_t(n) * V, 2.f);
  // Row 0: a tie for the maximum at 7 and 3, which greedy resolves to 3.
  logits[7] = logits[3] = 50.f;
  std::vector<lm::cuda::SampleRow> rows;
  std::vector<int32_t> want;
  for (int i = 0; i < n; ++i) {
    const Case& c = cases[i / rows_per_case];
    lm::cuda::SampleRow r{i, c.top_k, c.temperature, c.top_p, 1000ull + i / 3, int64_t(i) * 7 + 5};
    rows.push_back(r);
    lm::Sampling s;
    s.temperature = c.temperature;
    s.top_k = c.top_k;
    s.top_p = c.top_p;
    s.seed = r.seed;
    want.push_back(lm::sample_token(logits.data() + int64_t(i) * V, V, s, r.position));
  }
  float* dl = dev(logits);
  int32_t* dt = dev(std::vector<int32_t>(n, -1));
  lm::cuda::sample_tokens(dl, V, dev(rows), n, dt, nullptr);
  std::vector<int32_t> got(n);
  lm::cuda::check(cudaMemcpy(got.data(), dt, n * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  int greedy_bad = 0, sampled_bad = 0, greedy = 0;
  for (int i = 0; i < n; ++i) {
    const bool is_greedy = rows[i].temperature <= 0.f || rows[i].top_k == 1;
    greedy += is_greedy;
    if (got[i] != want[i]) ++(is_greedy ? greedy_bad : sampled_bad);
  }
  if (got[0] != 3) ++greedy_bad;
  if (greedy_bad || sampled_bad) ++failures;
  std::printf("%-34s greedy %d/%d, sampled %d/%d match lm::sample_token (vocab %d) %s\n", "device sampling", greedy - greedy_bad, greedy, n - greedy - sampled_bad, n - greedy, V, greedy_bad || sampled_bad ? "FAIL" : "ok");
}


// Decode graphs: the same steps through the engine with cuda_graphs "off" (eager, unpadded),
// "padded" (padded to the bucket, eager) and "replay" (padded, captured and replayed). Replay must
// match padded-eager bitwise (tokens, logits, state); eager differs from both only where cuBLASLt
// picks another algorithm for the padded row count, so its tokens must match and logits stay
// within 1e-4 of max |logit|. Slots no sequence used must keep zero state (padding rows run on
// the reserved scratch slot). Fed tokens are fixed, not the sampled ones, so a flipped sample
// cannot change later steps.
struct EngineRun {
  std::vector<int32_t> tokens;
  std::vector<float> logits, state;
  std::vector<float> untouched;  // state of slots no sequence used
};

EngineRun run_engine(const char* mode) {
  lm::EngineOptions o;
  o.cuda_graphs = mode;
  auto& s = o.spec;
  s.vocab_size = 301;
  s.hidden_size = 64;
  s.pattern = "M*EM-E";
  s.mamba_num_heads = 4, s.mamba_head_dim = 16, s.ssm_state_size = 16, s.n_groups = 2, s.conv_kernel = 4, s.chunk_size = 16;
  s.num_attention_heads = 4, s.num_key_value_heads = 2, s.head_dim = 16;
  s.intermediate_size = 48, s.moe_intermediate_size = 32, s.moe_shared_expert_intermediate_size = 32;
  s.n_routed_experts = 8, s.num_experts_per_tok = 2;
  o.backend = "cuda";
  o.dummy = true;
  o.dummy_seed = 7;
  o.max_slots = 8;
  o.kv_block_size = 4;
  o.num_kv_blocks = 96;  // 12 blocks (48 positions) per slot
  auto engine = lm::create_engine(o);
  auto table = [](int slot) {
    std::vector<int32_t> t(12);
    for (int i = 0; i < 12; ++i) t[i] = slot * 12 + i;
    return t;
  };
  auto prompt = [](int n, int salt) {
    std::vector<int32_t> t(n);
    for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 5) % 301;
    return t;
  };
  const std::vector<int> slots = {0, 2, 3, 5, 6}, lens = {7, 3, 12, 5, 9};
  std::vector<lm::StepSeq> pre;
  for (size_t i = 0; i < slots.size(); ++i) {
    lm::StepSeq q;
    q.slot = slots[i], q.tokens = prompt(lens[i], static_cast<int>(i)), q.position = 0, q.block_table = table(slots[i]);
    pre.push_back(q);
  }
  EngineRun r;
  engine->step(pre);
  std::vector<int> pos(lens);
  for (int step = 0; step < 8; ++step) {
    if (step == 5) {  // a prefill larger than any before: scratch grows, bucket 8's graph is re-captured
      lm::StepSeq q;
      q.slot = 7, q.tokens = prompt(44, 9), q.position = 0, q.block_table = table(7), q.sample = false;
      engine->step({q});
    }
    const size_t n = step < 3 ? 3 : 5;  // bucket 4 (one padding row), then bucket 8 (three)
    std::vector<lm::StepSeq> dec;
    for (size_t i = 0; i < n; ++i) {
      lm::StepSeq q;
      q.slot = slots[i], q.tokens = {(step * 53 + static_cast<int>(i) * 17 + 1) % 301}, q.position = pos[i], q.block_table = table(slots[i]);
      q.logits = lm::LogitsMode::Last;
      q.sample = i != 3;
      if (i == 1) q.sampling = {0.8f, 20, 1.f, 5};
      if (i == 2) q.sampling = {1.f, 0, 0.9f, 11};
      if (i == 4) q.sampling = {1.2f, 0, 1.f, 3};
      dec.push_back(q);
      ++pos[i];
    }
    const lm::StepOutput out = engine->step(dec);
    r.tokens.insert(r.tokens.end(), out.tokens.begin(), out.tokens.end());
    r.logits.insert(r.logits.end(), out.logits.begin(), out.logits.end());
  }
  for (int slot : slots) {
    const auto st = engine->slot_state(slot);
    r.state.insert(r.state.end(), st.begin(), st.end());
  }
  for (int slot : {1, 4}) {
    const auto st = engine->slot_state(slot);
    r.untouched.insert(r.untouched.end(), st.begin(), st.end());
  }
  return r;
}

void test_engine_decode_graphs() {
  const EngineRun eager = run_engine("off"), padded = run_engine("padded"), graphs = run_engine("replay");
  auto max_abs = [](const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
    return m;
  };
  const bool replay_bitwise = graphs.tokens == padded.tokens && graphs.logits == padded.logits && graphs.state == padded.state;
  const Err le = compare(graphs.logits, eager.logits), se = compare(graphs.state, eager.state);
  const bool tokens_eq = graphs.tokens == eager.tokens;
  const double untouched = std::max({max_abs(eager.untouched), max_abs(padded.untouched), max_abs(graphs.untouched)});
  const bool ok = replay_bitwise && tokens_eq && le.max <= 1e-4 && se.max <= 1e-4 && untouched == 0.0;
  std::printf("%-34s replay == padded eager bitwise: %s; vs unpadded eager: tokens %s (%zu), logits max %.2e mean %.2e, state max %.2e%s; untouched slots max |state| %.1e %s\n",
              "engine decode graphs (buckets 4, 8)", replay_bitwise ? "yes" : "NO", tokens_eq ? "identical" : "DIFFER", graphs.tokens.size(), le.max, le.mean, se.max,
              graphs.logits == eager.logits ? " (bitwise)" : "", untouched, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

}  // namespace

int main() {
  try {
    std::mt19937 g(123);
    test_gemm(g);
    test_rmsnorm(g);
    test_conv_and_ssm(g);
    test_attention(g);
    test_attention_paths(g);
    test_moe_route(g);
    test_moe_experts(g, {37, 10, 3, 72, 40, false, true});     // decode-like tiles (BM 16), E not a tile multiple
    test_moe_experts(g, {150, 5, 3, 64, 200, false, true});    // BM 64, several row tiles per expert, N not a tile multiple
    test_moe_experts(g, {23, 7, 2, 37, 29, false, false});     // K not a multiple of 8 (plain loads), latent combine
    test_moe_experts(g, {300, 33, 4, 93, 48, true, false});    // Zipf routing: one expert holds many tiles; BM 64 plain loads
    test_moe_experts(g, {50, 300, 8, 40, 24, false, true});    // many experts, most empty
    test_moe_experts(g, {700, 16, 4, 136, 264, true, false});  // wgmma: Zipf (pairs, odd tile counts), partial k-steps, BN 192
    test_moe_experts(g, {400, 32, 8, 512, 1040, false, true}); // wgmma: 128-row pairs, the ring wraps (8 and 17 k-steps), BN 224 / 256
    test_ssd_chunked(g, {4, 24, 2, 20, 24, {37, 1, 100, 5, 2}});   // padded P, N and chunk; PT 32
    test_ssd_chunked(g, {6, 16, 3, 16, 8, {13, 1, 29}});            // fixture-like; PT 16
    test_ssd_chunked(g, {64, 64, 8, 128, 128, {520, 1, 129}});      // Nano heads
    {
      std::vector<int> many;  // more than 32 sequences, decode rows among them
      for (int i = 0; i < 40; ++i) many.push_back(i % 5 == 0 ? 1 : 2 + (i * 7) % 31);
      test_ssd_chunked(g, {4, 16, 2, 16, 16, many});
    }
    test_ssd_chunked(g, {40, 16, 2, 16, 8, {19, 1, 33}});           // more heads per group than the chunk length
    test_ssd_chunked(g, {4, 18, 2, 18, 16, {45, 3}});               // head and state sizes not multiples of 4
    test_ssd_chunked(g, {8, 128, 2, 64, 64, {150, 1}});             // head size 128
    test_ssd_chunked(g, {64, 64, 8, 128, 128, {2048}});             // one 2K Nano sequence (16 chained chunks)
    test_sampler(g);
    test_engine_decode_graphs();
    time_ssd_nano(g);
    time_moe_nano(g);
    lm::cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failures\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
