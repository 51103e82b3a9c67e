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
#include "tests/cuda_test_util.h"
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

using namespace lm::cuda_test;

/** n elements of p, as floats. */
template <class T>
std::vector<float> host(const T* p, size_t n) {
  const std::vector<T> h = download(p, n);
  std::vector<float> o(n);
  for (size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, bf16>) o[i] = __bfloat162float(h[i]);
    else o[i] = static_cast<float>(h[i]);
  }
  return o;
}

/** A batch of sequences with given lengths, positions and slots, as host vectors and a device view. */
struct Batch {
  std::vector<int> slot, row0, len, pos0, bt0, tables;
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
      r += lens[i];
    }
    view = batch_view(slot, len, pos0, bt0, dev(tables), block_size);
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

// ---- The decode path's kernels (moe_decode.cu, gemv.cu, conv1d.cu, rmsnorm.cu, sampler.cu) ----

/** n bf16 values on the device, uniform with standard deviation `scale` (fill_dummy_bf16: large weights without a host generator). */
bf16* dev_dummy(int64_t n, uint64_t seed, float scale) {
  bf16* p = nullptr;
  lm::cuda::check(cudaMalloc(&p, std::max<int64_t>(1, n) * sizeof(bf16)), "cudaMalloc");
  const float a = std::sqrt(3.f) * scale;
  lm::cuda::fill_dummy_bf16(p, n, seed, -a, a, nullptr);
  return p;
}

/** Σ a[i]·b[i] in float64. */
double dot64(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

/** Float values after the n written ones: must still hold the sentinel they were given. */
const float GUARD = 7777.f;
constexpr int GUARD_N = 16;
bool guard_intact(const float* d, int64_t n) {
  for (float v : host(d + n, GUARD_N))
    if (v != GUARD) return false;
  return true;
}
float* dev_guarded(int64_t n, float fill) {
  std::vector<float> h(n + GUARD_N, fill);
  std::fill(h.begin() + n, h.end(), GUARD);
  return dev(h);
}

/**
 * skinny_gemm_multi with three fp32 outputs (attention's q, k, v of Nano: 2688 → 4096, 256 and an
 * odd 259 so one warp has a row past N) and with one relu² bf16 output (2688 → 3712), for row
 * counts through each row-template (1, 2, 3, 8, 13, 16); fp32 outputs again with beta 1 over given
 * values; then Gemm::run_multi for both sets (one skinny launch up to skinny_max_m rows, cuBLASLt
 * and relu2_bf16 through tmp beyond). Reference: float64 dots of the bf16 values. fp32 outputs:
 * 1e-4 of max |ref| (as gemm); relu² rounded to bf16 (≤ 4e-3 of a value, 2× through the square's
 * input error): 1e-2. Outputs start as NaN; 16 values after each fp32 output must stay untouched.
 */
void test_skinny_multi(std::mt19937& g) {
  const int K = 2688, MMAX = lm::cuda::SKINNY_MAX_M;
  const std::vector<int> qkv_n = {4096, 256, 259};
  const int relu_n = 3712;
  auto x = randn(g, int64_t(MMAX) * K);
  for (auto& v : x) v = round_bf16(v);
  const bf16* dx = dev(to_bf16(x));
  std::vector<bf16*> dw;
  std::vector<std::vector<float>> w, ref;  // per projection: weights (N, K) and float64 results for MMAX rows
  std::vector<int> ns = qkv_n;
  ns.push_back(relu_n);
  for (size_t i = 0; i < ns.size(); ++i) {
    dw.push_back(dev_dummy(int64_t(ns[i]) * K, 100 + i, 1.f / std::sqrt(float(K))));
    w.push_back(host(dw.back(), int64_t(ns[i]) * K));
    std::vector<float> r(int64_t(MMAX) * ns[i]);
    for (int m = 0; m < MMAX; ++m)
      for (int n = 0; n < ns[i]; ++n) {
        const double a = dot64(x.data() + int64_t(m) * K, w[i].data() + int64_t(n) * K, K);
        r[int64_t(m) * ns[i] + n] = i < qkv_n.size() ? float(a) : round_bf16(a > 0 ? float(a * a) : 0.f);
      }
    ref.push_back(r);
  }
  auto y0 = randn(g, int64_t(MMAX) * 4096);  // beta-1 starting values (first M·N of them per output)
  lm::cuda::Gemm gemm;
  float* tmp = dev(std::vector<float>(int64_t(MMAX) * 4096 + 1024));
  const std::vector<int> ms = {1, 2, 3, 8, 13, 16};
  // Paths: 0 skinny q/k/v, 1 skinny q/k/v beta 1, 2 skinny relu², 3 run_multi q/k/v, 4 run_multi relu².
  const char* names[] = {"skinny multi q/k/v (3 outs)", "skinny multi q/k/v, beta 1", "skinny multi relu² (bf16 out)", "Gemm::run_multi q/k/v", "Gemm::run_multi relu²"};
  const double tols[] = {1e-4, 1e-4, 1e-2, 1e-4, 1e-2};
  for (int path = 0; path < 5; ++path) {
    Err worst;
    int worst_m = 0, guards = 0;
    for (int M : ms) {
      const bool relu = path == 2 || path == 4, beta1 = path == 1;
      const size_t first = relu ? qkv_n.size() : 0, count = relu ? 1 : qkv_n.size();
      std::vector<lm::cuda::SkinnyOut> outs;
      std::vector<float*> ys;
      std::vector<bf16*> y16s;
      for (size_t i = first; i < first + count; ++i) {
        const int64_t n = int64_t(M) * ns[i];
        if (relu) {
          y16s.push_back(dev(std::vector<bf16>(n, __float2bfloat16(NAN))));
          outs.push_back({dw[i], ns[i], nullptr, y16s.back()});
        } else {
          ys.push_back(dev_guarded(n, NAN));
          if (beta1) lm::cuda::check(cudaMemcpy(ys.back(), y0.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
          outs.push_back({dw[i], ns[i], ys.back(), nullptr});
        }
      }
      if (path <= 2) lm::cuda::skinny_gemm_multi(dx, M, K, outs.data(), static_cast<int>(outs.size()), beta1 ? 1.f : 0.f, nullptr);
      else gemm.run_multi(dx, M, K, outs.data(), static_cast<int>(outs.size()), tmp, nullptr);
      std::vector<float> got, want;
      for (size_t o = 0; o < count; ++o) {
        const size_t i = first + o;
        const int64_t n = int64_t(M) * ns[i];
        const auto h = relu ? host(y16s[o], n) : host(ys[o], n);
        got.insert(got.end(), h.begin(), h.end());
        for (int64_t j = 0; j < n; ++j) want.push_back(ref[i][j] + (beta1 ? y0[j] : 0.f));
        if (!relu && !guard_intact(ys[o], n)) ++guards;
      }
      const Err e = compare(got, want);
      if (e.max >= worst.max) {
        worst = e;
        worst_m = M;
      }
      for (float* p : ys) cudaFree(p);
      for (bf16* p : y16s) cudaFree(p);
    }
    report((std::string(names[path]) + " M1..16, worst M" + std::to_string(worst_m)).c_str(), worst, tols[path]);
    if (guards) {
      ++failures;
      std::printf("  %d outputs written past their end FAIL\n", guards);
    }
  }
  for (bf16* p : dw) cudaFree(p);
  cudaFree(tmp);
}

/**
 * conv1d_silu_step (one launch: each sequence's one row, then its state shifted) against
 * conv1d_silu + conv_state_update on the same inputs: outputs and the whole state buffer (slots no
 * sequence uses included) equal bitwise, the header's claim that the arithmetic is the same; and
 * the outputs within 1e-5 of cpu::causal_conv1d_silu (fp32 in another contraction order). Nano's
 * conv width (6144, K 4), odd widths with K 2, 9 (the most state rows) and 1 (no state), with and
 * without bias; x rows strided inside wider rows at an offset, as the xBC part of in_proj's output.
 */
void test_conv_step(std::mt19937& g) {
  struct Case {
    int nseq, C, K;
    bool bias;
  };
  for (const Case& c : {Case{5, 6144, 4, true}, {3, 333, 2, false}, {7, 1000, 9, true}, {2, 130, 1, true}, {1, 6144, 4, true}}) {
    Batch b(std::vector<int>(c.nseq, 1), std::vector<int>(c.nseq, 17), 16);
    const int slots = 2 * c.nseq + 1, S = c.K - 1, off = 8;
    const int64_t stride = c.C + 40;
    auto xw = randn(g, c.nseq * stride), w = randn(g, int64_t(c.C) * c.K, 0.5f), bias = randn(g, c.C, 0.1f), state = randn(g, int64_t(slots) * S * c.C);
    std::vector<float> ref_out(int64_t(c.nseq) * c.C), ref_state = state;
    for (int i = 0; i < c.nseq; ++i)
      lm::cpu::causal_conv1d_silu(xw.data() + i * stride + off, stride, 1, c.C, c.K, w.data(), c.bias ? bias.data() : nullptr, ref_state.data() + int64_t(b.slot[i]) * S * c.C,
                                  ref_out.data() + int64_t(i) * c.C);
    const float* dx = dev(xw) + off;
    const float *dw = dev(w), *dbias = c.bias ? dev(bias) : nullptr;
    float *st_two = dev(state), *st_one = dev(state);
    float *out_two = dev(std::vector<float>(ref_out.size(), NAN)), *out_one = dev(std::vector<float>(ref_out.size(), NAN));
    lm::cuda::conv1d_silu(b.view, dx, stride, c.C, c.K, dw, dbias, st_two, out_two, nullptr);
    lm::cuda::conv_state_update(b.view, dx, stride, c.C, c.K, st_two, nullptr);
    lm::cuda::conv1d_silu_step(b.view, dx, stride, c.C, c.K, dw, dbias, st_one, out_one, nullptr);
    const auto o1 = host(out_one, ref_out.size()), o2 = host(out_two, ref_out.size());
    const auto s1 = host(st_one, state.size()), s2 = host(st_two, state.size());
    const bool bitwise = std::memcmp(o1.data(), o2.data(), o1.size() * 4) == 0 && std::memcmp(s1.data(), s2.data(), s1.size() * 4) == 0;
    const std::string name = "conv step " + std::to_string(c.nseq) + " seqs C" + std::to_string(c.C) + " K" + std::to_string(c.K) + (c.bias ? "" : " no bias");
    const Err e = compare(o1, ref_out), es = compare(s1, ref_state);
    const bool ok = bitwise && e.max <= 1e-5 && es.max == 0.0;
    if (!ok) ++failures;
    std::printf("%-34s == two-launch path bitwise (out, all slots' state): %s; vs CPU out max %.2e, state max %.2e %s\n", name.c_str(), bitwise ? "yes" : "NO", e.max, es.max, ok ? "ok" : "FAIL");
    for (float* p : {st_two, st_one, out_two, out_one}) cudaFree(p);
  }
}

/**
 * skinny_gemm_conv (a decode in_proj with the conv in its epilogue) against skinny_gemm followed by
 * conv1d_silu_step on the same inputs: the columns outside the conv range equal bitwise (y), the
 * conv outputs and the whole conv state buffer (slots no row uses included) equal bitwise. Shapes:
 * Nano's in_proj (2688 -> 10304, conv on 4096 .. 10240, K 4) at 1 and 2 rows; small odd ones with
 * K 2 without bias and K 1, up to 16 rows (every MT instance). Outputs start as NaN.
 */
void test_conv_in_proj(std::mt19937& g) {
  struct Case {
    int M, K, N, col0, C, taps;
    bool bias;
  };
  for (const Case& c : {Case{1, 2688, 10304, 4096, 6144, 4, true}, {2, 2688, 10304, 4096, 6144, 4, true}, {3, 264, 200, 40, 136, 4, true}, {5, 136, 97, 3, 90, 2, false},
                        {9, 64, 50, 10, 30, 1, true}, {16, 72, 66, 0, 66, 4, true}}) {
    Batch b(std::vector<int>(c.M, 1), std::vector<int>(c.M, 9), 16);
    const int slots = 2 * c.M + 1, S = c.taps - 1;
    auto x = randn(g, int64_t(c.M) * c.K), w = randn(g, int64_t(c.N) * c.K, 0.05f);
    auto taps = randn(g, int64_t(c.C) * c.taps, 0.5f), bias = randn(g, c.C, 0.1f), state = randn(g, int64_t(std::max(slots * S * c.C, 1)));
    const bf16 *dx = dev(to_bf16(x)), *dw = dev(to_bf16(w));
    const float *dtaps = dev(taps), *dbias = c.bias ? dev(bias) : nullptr;
    float *st_ref = dev(state), *st_one = dev(state);
    float *y_ref = dev(std::vector<float>(int64_t(c.M) * c.N, NAN)), *y_one = dev(std::vector<float>(int64_t(c.M) * c.N, NAN));
    float *xbc_ref = dev(std::vector<float>(int64_t(c.M) * c.C, NAN)), *xbc_one = dev(std::vector<float>(int64_t(c.M) * c.C, NAN));
    lm::cuda::skinny_gemm(dx, c.M, c.K, dw, c.N, y_ref, 0.f, nullptr);
    lm::cuda::conv1d_silu_step(b.view, y_ref + c.col0, c.N, c.C, c.taps, dtaps, dbias, st_ref, xbc_ref, nullptr);
    const lm::cuda::SkinnyConv cv{c.col0, c.C, c.taps, dtaps, dbias, st_one, b.view.seq_slot, xbc_one};
    lm::cuda::skinny_gemm_conv(dx, c.M, c.K, dw, c.N, y_one, cv, nullptr);
    const auto yr = host(y_ref, int64_t(c.M) * c.N), yo = host(y_one, int64_t(c.M) * c.N);
    bool y_same = true;
    for (int m = 0; m < c.M; ++m)
      for (int n = 0; n < c.N; ++n)
        if (n < c.col0 || n >= c.col0 + c.C) y_same = y_same && std::memcmp(&yr[int64_t(m) * c.N + n], &yo[int64_t(m) * c.N + n], 4) == 0;
    const auto xr = host(xbc_ref, int64_t(c.M) * c.C), xo = host(xbc_one, int64_t(c.M) * c.C);
    const auto sr = host(st_ref, state.size()), so = host(st_one, state.size());
    // the same fp32 terms as the conv step; the compiler may contract a multiply-add differently
    const bool xbc_same = std::memcmp(xr.data(), xo.data(), xr.size() * 4) == 0, state_same = std::memcmp(sr.data(), so.data(), sr.size() * 4) == 0;
    const Err ex = compare(xo, xr), es = compare(so, sr);
    const bool ok = y_same && ex.max <= 1e-6 && es.max <= 1e-6;
    if (!ok) ++failures;
    const std::string name = "conv in in_proj M" + std::to_string(c.M) + " " + std::to_string(c.K) + "->" + std::to_string(c.N) + " K" + std::to_string(c.taps) + (c.bias ? "" : " no bias");
    std::printf("%-34s vs skinny_gemm + conv step: other columns bitwise %s; conv out max %.1e (bitwise %s), all slots' state max %.1e (bitwise %s) %s\n", name.c_str(), y_same ? "yes" : "NO",
                ex.max, xbc_same ? "yes" : "no", es.max, state_same ? "yes" : "no", ok ? "ok" : "FAIL");
    for (float* p : {st_ref, st_one, y_ref, y_one, xbc_ref, xbc_one}) cudaFree(p);
  }
}

/**
 * rmsnorm_bf16's single-pass float4 path (H % 4 == 0 up to 8192: 1, 2, 4 and 8 float4 per thread,
 * with and without idle threads; rows 3 × 2688 is Nano's decode shape) and its fallback (H 8196,
 * 1022), direct and through a row gather, against cpu::rmsnorm. bf16 outputs start as NaN and 8
 * values after them must stay NaN; tolerance 1e-2 of max |ref| as the other bf16 outputs.
 */
void test_rmsnorm_vec(std::mt19937& g) {
  struct Case {
    int R, H;
    bool gather;
  };
  for (const Case& c : {Case{3, 2688, false}, {2, 2688, true}, {5, 4096, false}, {2, 8192, true}, {4, 64, false}, {2, 4, false}, {3, 1020, false}, {3, 1028, true}, {2, 8196, false},
                        {2, 1022, true}}) {
    const int src_rows = c.gather ? c.R + 3 : c.R;
    auto h = randn(g, int64_t(src_rows) * c.H, 3.f), w = randn(g, c.H);
    std::vector<int32_t> rows(c.R);
    for (int i = 0; i < c.R; ++i) rows[i] = c.gather ? (src_rows - 1 - 2 * i + src_rows) % src_rows : i;
    std::vector<float> picked(int64_t(c.R) * c.H), ref(picked.size());
    for (int i = 0; i < c.R; ++i) std::copy_n(h.data() + int64_t(rows[i]) * c.H, c.H, picked.data() + int64_t(i) * c.H);
    lm::cpu::rmsnorm(picked.data(), w.data(), c.R, c.H, 1e-5f, ref.data());
    const int64_t n = int64_t(c.R) * c.H;
    bf16* out = dev(std::vector<bf16>(n + 8, __float2bfloat16(NAN)));
    lm::cuda::rmsnorm_bf16(dev(h), c.gather ? dev(rows) : nullptr, c.R, c.H, dev(w), 1e-5f, out, nullptr);
    const auto all = host(out, n + 8);
    int guard = 0;
    for (int i = 0; i < 8; ++i) guard += !std::isnan(all[n + i]);
    if (guard) {
      ++failures;
      std::printf("  rmsnorm wrote %d values past its output FAIL\n", guard);
    }
    report(("rmsnorm bf16 " + std::to_string(c.R) + "x" + std::to_string(c.H) + (c.gather ? " gathered" : "")).c_str(), compare(std::vector<float>(all.begin(), all.begin() + n), ref), 1e-2);
    cudaFree(out);
  }
}

/**
 * Greedy rows of sample_tokens (temperature 0, or top_k 1 at temperature 0.7) on vocabularies that
 * are multiples of 4 (the 16-byte unrolled argmax): Nano's 131072 (whole unrolled passes), 50020
 * (a remainder after them), 16388 and 8. Per vocabulary: random rows; ties for the maximum where
 * the lower index is visited later (2047 = thread 511's first float4, 2049 = thread 0's second),
 * within one float4, in the remainder against the first float4, across warps and passes; all equal;
 * all -inf; the maximum alone at the last index. Rows are read in reverse order. Expected: the
 * lowest index of the maximum (the tie rule, known per row) and lm::sample_token.
 */
void test_greedy_sampling(std::mt19937& g) {
  for (int V : {131072, 50020, 16388, 8}) {
    const std::vector<std::vector<int>> ties = {{}, {2049, 2047}, {403, 402}, {V - 1, 5}, {16397, 4002, 4003}, {6, 5}, {V - 1}, {1, 0}};
    std::vector<std::vector<float>> rows;
    std::vector<int> expect;
    for (const auto& t : ties) {
      std::vector<int> in;
      for (int i : t)
        if (i >= 0 && i < V) in.push_back(i);
      if (in.empty() && !t.empty()) continue;
      auto l = randn(g, V, 2.f);
      for (int i : in) l[i] = 100.f;
      rows.push_back(l);
      expect.push_back(in.empty() ? -1 : *std::min_element(in.begin(), in.end()));
    }
    rows.push_back(std::vector<float>(V, 0.5f));
    expect.push_back(0);
    rows.push_back(std::vector<float>(V, -INFINITY));
    expect.push_back(0);
    const int n = static_cast<int>(rows.size());
    std::vector<float> logits;
    for (const auto& r : rows) logits.insert(logits.end(), r.begin(), r.end());
    std::vector<lm::cuda::SampleRow> srows;
    std::vector<int32_t> want;
    for (int i = 0; i < n; ++i) {
      const int row = n - 1 - i;
      srows.push_back(i % 2 ? lm::cuda::SampleRow{row, 1, 0.7f, 1.f, 9, 3} : lm::cuda::SampleRow{row, 0, 0.f, 1.f, 9, 3});
      want.push_back(lm::sample_token(logits.data() + int64_t(row) * V, V, lm::Sampling{}, 0));
    }
    int32_t* dt = dev(std::vector<int32_t>(n, -1));
    lm::cuda::sample_tokens(dev(logits), V, dev(srows), n, dt, nullptr);
    std::vector<int32_t> got(n);
    lm::cuda::check(cudaMemcpy(got.data(), dt, n * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
    int bad = 0;
    std::string detail;
    for (int i = 0; i < n; ++i) {
      const int e = expect[srows[i].row];
      if (got[i] != want[i] || (e >= 0 && want[i] != e)) {
        ++bad;
        detail += " row " + std::to_string(srows[i].row) + ": got " + std::to_string(got[i]) + " want " + std::to_string(e >= 0 ? e : want[i]) + ";";
      }
    }
    if (bad) ++failures;
    std::printf("%-34s %d/%d rows give the lowest index of the maximum%s %s\n", ("greedy sampling vocab " + std::to_string(V)).c_str(), n - bad, n, detail.c_str(), bad ? "FAIL" : "ok");
    cudaFree(dt);
  }
}

/** One small-batch MoE problem (moe_decode.cu). Din != H: latent (v its own input, no shared expert, out written, not accumulated). */
struct MoeDecodeCase {
  int R, H, E, n_group, topk_group, k, Din, inter, S;
  bool popular;  // the correction bias lifts experts 3, 17 and 40, so every row chooses them (experts shared by rows)
};

/**
 * moe_decode_route → moe_decode_up → moe_decode_down against float64 loops and cpu::moe_route:
 * router logits (vs float64 dots of the bf16 x and gate: 1e-4 of max |ref|); the routing of the
 * device's logits by cpu::moe_route (the same expert sets; weights within 1e-5, as the moe_route
 * case); the layer output h + Σ_j w_j · down_e(relu²(up_e · v)) + shared(x) with the relu²
 * activations rounded to bf16 as the device stores them (1e-2 of max |ref|, as the grouped-GEMM
 * cases); and the counters back at zero (the next launch relies on it). Scratch and ids start as
 * NaN / -1, the latent output as NaN. Expert weights are filled on the device; the host reads back
 * only the chosen experts'.
 */
void test_moe_decode(std::mt19937& g, const MoeDecodeCase& c) {
  const bool latent = c.Din != c.H;
  const int M = c.R * c.k;
  auto x = randn(g, int64_t(c.R) * c.H), gate = randn(g, int64_t(c.E) * c.H, 1.f / std::sqrt(float(c.H))), bias = randn(g, c.E, 0.05f);
  for (auto& v : x) v = round_bf16(v);
  for (auto& v : gate) v = round_bf16(v);
  if (c.popular)
    for (int e : {3, 17, 40}) bias[e] += 5.f;
  auto v = x;
  if (latent) {
    v = randn(g, int64_t(c.R) * c.Din);
    for (auto& a : v) a = round_bf16(a);
  }
  auto h0 = randn(g, int64_t(c.R) * c.Din);
  const int64_t wsize = int64_t(c.inter) * c.Din;
  bf16* up_all = dev_dummy(c.E * wsize, 11, 1.f / std::sqrt(float(c.Din)));
  bf16* down_all = dev_dummy(c.E * wsize, 12, 1.f / std::sqrt(float(c.inter)));
  std::vector<const bf16*> ups(c.E), downs(c.E);
  for (int e = 0; e < c.E; ++e) {
    ups[e] = up_all + e * wsize;
    downs[e] = down_all + e * wsize;
  }
  bf16* sup = latent ? nullptr : dev_dummy(int64_t(c.S) * c.H, 13, 1.f / std::sqrt(float(c.H)));
  bf16* sdown = latent ? nullptr : dev_dummy(int64_t(c.H) * c.S, 14, 1.f / std::sqrt(float(c.S)));
  const bf16 nan16 = __float2bfloat16(NAN);
  lm::cuda::MoeDecodeParams p{};
  p.R = c.R, p.x = dev(to_bf16(x)), p.H = c.H, p.gate = dev(to_bf16(gate)), p.correction_bias = dev(bias);
  p.E = c.E, p.n_group = c.n_group, p.topk_group = c.topk_group, p.k = c.k, p.norm_topk = true, p.scaling = 2.5f;
  p.v = latent ? dev(to_bf16(v)) : p.x, p.Din = c.Din, p.up = dev(ups), p.down = dev(downs), p.inter = c.inter;
  p.shared_up = sup, p.shared_down = sdown, p.S = c.S;
  p.out = dev(latent ? std::vector<float>(h0.size(), NAN) : h0), p.accumulate = !latent;
  p.logits = dev(std::vector<float>(int64_t(c.R) * c.E, NAN));
  p.ids = dev(std::vector<int32_t>(M, -1));
  p.weights = dev(std::vector<float>(M, NAN));
  p.act = dev(std::vector<bf16>(int64_t(M) * c.inter, nan16));
  p.shared_act = latent ? nullptr : dev(std::vector<bf16>(int64_t(c.R) * c.S, nan16));
  p.expert_out = dev(std::vector<float>(int64_t(M) * c.Din, NAN));
  p.shared_out = latent ? nullptr : dev(std::vector<float>(int64_t(c.R) * c.Din, NAN));
  const int ncount = lm::cuda::moe_decode_counters(c.Din);
  p.counters = dev(std::vector<unsigned>(ncount, 0u));
  if (!lm::cuda::moe_decode_supported(p)) throw lm::Error("moe_decode_supported refused a test shape");
  lm::cuda::moe_decode_route(p, nullptr);
  lm::cuda::moe_decode_up(p, nullptr);
  lm::cuda::moe_decode_down(p, nullptr);
  lm::cuda::check(cudaDeviceSynchronize(), "moe_decode");
  const std::string name = "moe decode R" + std::to_string(c.R) + " E" + std::to_string(c.E) + " k" + std::to_string(c.k) + " g" + std::to_string(c.n_group) + "/" + std::to_string(c.topk_group) +
                           " " + std::to_string(c.Din) + "x" + std::to_string(c.inter) + (latent ? " latent" : " +shared") + (c.popular ? " shared experts" : "");
  // Router logits.
  const auto logits = host(p.logits, int64_t(c.R) * c.E);
  std::vector<float> ref_logits(logits.size());
  for (int r = 0; r < c.R; ++r)
    for (int e = 0; e < c.E; ++e) ref_logits[int64_t(r) * c.E + e] = float(dot64(x.data() + int64_t(r) * c.H, gate.data() + int64_t(e) * c.H, c.H));
  report((name + ": router logits").c_str(), compare(logits, ref_logits), 1e-4);
  // Routing of those logits.
  std::vector<int32_t> ids(M), ref_ids(M);
  std::vector<float> ref_w(M);
  lm::cuda::check(cudaMemcpy(ids.data(), p.ids, M * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  const auto w = host(p.weights, M);
  for (int r = 0; r < c.R; ++r)
    lm::cpu::moe_route(logits.data() + int64_t(r) * c.E, bias.data(), c.E, c.n_group, c.topk_group, c.k, true, 2.5f, ref_ids.data() + r * c.k, ref_w.data() + r * c.k);
  int mismatched = 0, shared_choices = 0;
  std::vector<float> got_w(M), want_w(M);
  for (int r = 0; r < c.R; ++r)
    for (int j = 0; j < c.k; ++j) {
      int found = -1;
      for (int jj = 0; jj < c.k; ++jj)
        if (ids[r * c.k + jj] == ref_ids[r * c.k + j]) found = jj;
      if (found < 0) ++mismatched;
      got_w[r * c.k + j] = found < 0 ? 0.f : w[r * c.k + found];
      want_w[r * c.k + j] = ref_w[r * c.k + j];
      for (int rr = 0; rr < r; ++rr)
        for (int jj = 0; jj < c.k; ++jj) shared_choices += ref_ids[rr * c.k + jj] == ref_ids[r * c.k + j];
    }
  if (mismatched) ++failures;
  std::printf("%-34s %d of %d choices differ from cpu::moe_route (%d choices of an expert an earlier row chose) %s\n", "  routing", mismatched, M, shared_choices, mismatched ? "FAIL" : "ok");
  report("  routing weights", compare(got_w, want_w), 1e-5);
  // The layer output, from the CPU's routing.
  std::vector<float> ref = latent ? std::vector<float>(h0.size(), 0.f) : h0;
  std::vector<float> act(std::max(c.inter, c.S));
  for (int e = 0; e < c.E; ++e) {  // expert by expert: only one expert's weights on the host at a time
    std::vector<float> up_h, down_h;
    for (int i = 0; i < M; ++i) {
      if (ref_ids[i] != e) continue;
      if (up_h.empty()) {
        up_h = host(ups[e], wsize);
        down_h = host(downs[e], wsize);
      }
      const int r = i / c.k;
      for (int n = 0; n < c.inter; ++n) {
        const double a = dot64(v.data() + int64_t(r) * c.Din, up_h.data() + int64_t(n) * c.Din, c.Din);
        act[n] = round_bf16(a > 0 ? float(a * a) : 0.f);
      }
      for (int d = 0; d < c.Din; ++d) ref[int64_t(r) * c.Din + d] += float(ref_w[i] * dot64(act.data(), down_h.data() + int64_t(d) * c.inter, c.inter));
    }
  }
  if (!latent) {
    const auto su = host(sup, int64_t(c.S) * c.H), sd = host(sdown, int64_t(c.H) * c.S);
    for (int r = 0; r < c.R; ++r) {
      for (int n = 0; n < c.S; ++n) {
        const double a = dot64(x.data() + int64_t(r) * c.H, su.data() + int64_t(n) * c.H, c.H);
        act[n] = round_bf16(a > 0 ? float(a * a) : 0.f);
      }
      for (int d = 0; d < c.H; ++d) ref[int64_t(r) * c.H + d] += float(dot64(act.data(), sd.data() + int64_t(d) * c.S, c.S));
    }
  }
  report(latent ? "  routed sum (latent, written)" : "  h + routed + shared", compare(host(p.out, ref.size()), ref), 1e-2);
  std::vector<unsigned> counters(ncount);
  lm::cuda::check(cudaMemcpy(counters.data(), p.counters, ncount * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  int nonzero = 0;
  for (unsigned u : counters) nonzero += u != 0;
  if (nonzero) ++failures;
  std::printf("%-34s %d of %d non-zero after the layer %s\n", "  counters", nonzero, ncount, nonzero ? "FAIL" : "ok");
  for (void* q : {static_cast<void*>(up_all), static_cast<void*>(down_all), static_cast<void*>(sup), static_cast<void*>(sdown)}) cudaFree(q);
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
    test_greedy_sampling(g);
    test_rmsnorm_vec(g);
    test_conv_step(g);
    test_conv_in_proj(g);
    test_skinny_multi(g);
    test_moe_decode(g, {1, 2688, 128, 1, 1, 6, 2688, 1856, 3712, false});  // Nano widths, one row
    test_moe_decode(g, {2, 2688, 128, 8, 4, 6, 2688, 1856, 3712, false});  // group routing
    test_moe_decode(g, {3, 2688, 128, 4, 2, 6, 2688, 1856, 3712, true});   // rows sharing experts
    test_moe_decode(g, {4, 2688, 128, 8, 4, 6, 2688, 1856, 3712, true});
    test_moe_decode(g, {8, 264, 64, 4, 2, 8, 264, 136, 200, true});        // the most rows; partial column slices
    test_moe_decode(g, {3, 4096, 512, 1, 1, 22, 1024, 2688, 0, false});    // Super latent: 4096 -> 1024, 512 experts, k 22
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
