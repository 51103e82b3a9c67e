// The paged attention kernels against a float64 reference (run on the GPU machine by
// scripts/gpu-check.sh): causal, GQA, head dims 128 and 64, lengths that are not tile multiples,
// several sequences packed with their own row offsets and positions (decode rows among them),
// chunked prefill over a KV prefix already in the cache, block sizes that are not powers of two.
// Every head-dim-128 prefill variant runs on every case (paged_attention_variant: 0 = the default,
// 2 = mma.sync, 3 = the earlier wgmma kernel, 4..9 = the warp-specialized kernel's configs).
//
// Inputs: q drawn N(0, 2²) and rounded to bf16 values (which the kernels read exactly), K and V
// N(0, 1) bf16 at every position a sequence reads, each sequence on its own shuffled blocks (block 0
// unused). What remains is the bf16 probabilities in P·V and the bf16 output: about 4e-3 of
// max |ref|; tolerance 1e-2 on the largest error, 2e-3 on the mean. The output starts as NaN, so
// an unwritten element fails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "tests/cuda_test_util.h"

namespace lm::cuda {
// attention.cu, for benchmarks and tests (not in ops.h).
void paged_attention_variant(int variant, const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s);
}  // namespace lm::cuda

namespace {

using lm::cuda::bf16;
using lm::cuda::check;
int failures = 0;

struct Case {
  const char* name;
  int nq, nkv, hd;
  std::vector<int> lens, pos;
  int block_size;
};

using namespace lm::cuda_test;


/** out (rows, nq, hd) of every row of one sequence, in float64: keys 0 .. pos + t for row t. */
void reference(const Case& c, const std::vector<float>& q, const std::vector<float>& kc, const std::vector<float>& vc, const std::vector<int>& tables, int bt0, int row0, int len, int pos,
               std::vector<double>& ref) {
  const int W = c.nkv * c.hd;
  const double scale = 1.0 / std::sqrt(double(c.hd));
  std::vector<double> sc(pos + len), acc(c.hd);
  std::vector<int64_t> at(pos + len);
  for (int p = 0; p < pos + len; ++p) at[p] = (int64_t(tables[bt0 + p / c.block_size]) * c.block_size + p % c.block_size) * W;
  for (int t = 0; t < len; ++t)
    for (int h = 0; h < c.nq; ++h) {
      const int kvh = h / (c.nq / c.nkv), last = pos + t;
      const float* qr = q.data() + (int64_t(row0 + t) * c.nq + h) * c.hd;
      double mx = -INFINITY;
      for (int p = 0; p <= last; ++p) {
        const float* kr = kc.data() + at[p] + kvh * c.hd;
        double d = 0;
        for (int i = 0; i < c.hd; ++i) d += double(qr[i]) * kr[i];
        sc[p] = d * scale;
        mx = std::max(mx, sc[p]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int p = 0; p <= last; ++p) {
        const double e = std::exp(sc[p] - mx);
        sum += e;
        const float* vr = vc.data() + at[p] + kvh * c.hd;
        for (int i = 0; i < c.hd; ++i) acc[i] += e * vr[i];
      }
      for (int i = 0; i < c.hd; ++i) ref[(int64_t(row0 + t) * c.nq + h) * c.hd + i] = acc[i] / sum;
    }
}

void run_case(std::mt19937& g, const Case& c, const std::vector<int>& variants) {
  const int nseq = static_cast<int>(c.lens.size()), W = c.nkv * c.hd, QW = c.nq * c.hd;
  std::vector<int> row0(nseq), bt0(nseq), slot(nseq), row_seq;
  int rows = 0, blocks = 0, max_len = 0;
  for (int i = 0; i < nseq; ++i) {
    row0[i] = rows, bt0[i] = blocks, slot[i] = i;
    rows += c.lens[i];
    blocks += (c.pos[i] + c.lens[i] + c.block_size - 1) / c.block_size;
    max_len = std::max(max_len, c.lens[i]);
    row_seq.insert(row_seq.end(), c.lens[i], i);
  }
  std::vector<int> tables(blocks);
  std::iota(tables.begin(), tables.end(), 1);  // block 0 stays unused
  std::shuffle(tables.begin(), tables.end(), g);
  const int64_t cache_elems = int64_t(blocks + 1) * c.block_size * W;
  std::normal_distribution<float> n01(0.f, 1.f), nq(0.f, 2.f);
  std::vector<float> q(int64_t(rows) * QW), kc(cache_elems), vc(cache_elems);
  for (auto& x : q) x = round_bf16(nq(g));
  for (auto& x : kc) x = round_bf16(n01(g));
  for (auto& x : vc) x = round_bf16(n01(g));
  std::vector<double> ref(q.size());
  for (int i = 0; i < nseq; ++i) reference(c, q, kc, vc, tables, bt0[i], row0[i], c.lens[i], c.pos[i], ref);
  double scale = 1e-30;
  for (double r : ref) scale = std::max(scale, std::fabs(r));

  std::vector<bf16> kb(cache_elems), vb(cache_elems);
  for (int64_t i = 0; i < cache_elems; ++i) kb[i] = __float2bfloat16(kc[i]), vb[i] = __float2bfloat16(vc[i]);
  std::vector<void*> owned;
  auto keep = [&](auto* p) {
    owned.push_back(p);
    return p;
  };
  lm::cuda::BatchView v;
  v.nseq = nseq, v.rows = rows, v.block_size = c.block_size, v.max_len = max_len;
  v.seq_slot = keep(dev(slot)), v.seq_row0 = keep(dev(row0)), v.seq_len = keep(dev(c.lens)), v.seq_pos0 = keep(dev(c.pos)), v.seq_bt0 = keep(dev(bt0));
  v.block_tables = keep(dev(tables)), v.row_seq = keep(dev(row_seq));
  float* dq = keep(dev(q));
  bf16* dk = keep(dev(kb));
  bf16* dv = keep(dev(vb));
  bf16* dout = keep(dev(std::vector<bf16>(q.size())));
  float* ws = keep(dev(std::vector<float>(lm::cuda::paged_attention_workspace_floats(rows, c.nq, c.hd), NAN)));
  std::vector<bf16> got(q.size()), poison(q.size(), __float2bfloat16(NAN));
  for (int variant : variants) {
    check(cudaMemcpy(dout, poison.data(), poison.size() * sizeof(bf16), cudaMemcpyHostToDevice), "cudaMemcpy");
    lm::cuda::paged_attention_variant(variant, v, dq, c.nq, c.nkv, c.hd, dk, dv, dout, ws, nullptr);
    check(cudaDeviceSynchronize(), "paged_attention");
    check(cudaMemcpy(got.data(), dout, got.size() * sizeof(bf16), cudaMemcpyDeviceToHost), "cudaMemcpy");
    double max_err = 0, mean_err = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      double d = std::fabs(double(__bfloat162float(got[i])) - ref[i]) / scale;
      if (std::isnan(d)) d = INFINITY;
      max_err = std::max(max_err, d);
      mean_err += d / got.size();
    }
    const bool ok = max_err <= 1e-2 && mean_err <= 2e-3;
    if (!ok) ++failures;
    std::printf("%-62s v%d  max %.2e  mean %.2e  (tol 1e-2 / 2e-3 of max |ref|) %s\n", c.name, variant, max_err, mean_err, ok ? "ok" : "FAIL");
  }
  for (void* p : owned) cudaFree(p);
}

}  // namespace

int main() {
  try {
    std::mt19937 g(20261124);
    const std::vector<int> hd128 = {0, 4, 5, 6, 7, 8, 9, 3, 2}, other = {0};
    const std::vector<Case> cases = {
        {"hd128 GQA 8/2, 1000 rows from 0", 8, 2, 128, {1000}, {0}, 16},
        {"hd128 GQA 32/2, 300 rows after a 700-key prefix", 32, 2, 128, {300}, {700}, 16},
        {"hd128 GQA 4/1, packed 129/9/1/257/40/3 at 0/0/50/0/1000/7", 4, 1, 128, {129, 9, 1, 257, 40, 3}, {0, 0, 50, 0, 1000, 7}, 16},
        {"hd128 GQA 6/3, bs 12, 200 after 333 + 77 from 0", 6, 3, 128, {200, 77}, {333, 0}, 12},
        {"hd128 GQA 4/2, 1536 rows from 0, bs 64", 4, 2, 128, {1536}, {0}, 64},
        {"hd128 GQA 2/1, 64 rows after a 4000-key prefix, bs 32", 2, 1, 128, {64}, {4000}, 32},
        {"hd128 GQA 32/4, 1100 rows from 0 (288 row tiles: >2 per SM)", 32, 4, 128, {1100}, {0}, 16},
        {"hd128 GQA 16/2, packed 300/129/700/9/64/1, prefixes, bs 16", 16, 2, 128, {300, 129, 700, 9, 64, 1}, {0, 500, 0, 3, 2000, 40}, 16},
        {"hd64 GQA 4/2, 500 after 100 + 37 from 0", 4, 2, 64, {500, 37}, {100, 0}, 16},
    };
    for (const auto& c : cases) run_case(g, c, c.hd == 128 ? hd128 : other);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
