// The grouped expert GEMM's wgmma path (64-row plan tiles: moe_gemm_wgmma.cu) against a float64 CPU
// reference, on shapes that its 128-row super tiles distinguish: experts with no rows, one, two,
// three and more plan tiles (a first plan tile alone, an idle second consumer warpgroup, a last
// plan tile partly filled), N and K not multiples of the tiles (BN 256, 232, 224, 192; a partial
// last k-step), several items per block, the gathered up projection (relu² → bf16) and the down
// projection (fp32). Outputs are poisoned with NaN first, so an unwritten element fails. Every case
// runs twice more with the split-tail workspace: the same check against float64, two launches bitwise
// equal (deterministic), the counters left zero, and where the last round is split (expect_split)
// parts' sums written over the NaN-poisoned workspace. Then the weights as one
// (E, N, K) array, their tiles by tensor copies (TMA): bitwise equal to the per-thread copies.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/common.cuh"
#include "tests/cuda_test_util.h"
#include "cuda/ops.h"
#include "engine.h"

namespace {

using lm::cuda::bf16;
int failures = 0;

using namespace lm::cuda_test;

float to_float(float v) { return v; }
float to_float(bf16 v) { return __bfloat162float(v); }

/** Bf16-representable normal values (the reference multiplies exactly what the device reads). */
std::vector<float> randn_bf16(std::mt19937& g, size_t n, float s) {
  std::normal_distribution<float> d(0.f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = __bfloat162float(__float2bfloat16(d(g)));
  return v;
}

struct Case {
  const char* name;
  std::vector<int> rows;  // routed rows per expert
  int N, K;
  bool up;  // gathered rows, relu² → bf16; else expert-major rows → fp32
  bool expect_split = false;
};

/** Max |got - ref| / scale, and the relative L2 error. */
template <class Out>
std::pair<double, double> errors(const std::vector<Out>& got, const std::vector<double>& ref, double scale) {
  double max_err = 0, sq = 0, sq_ref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = std::fabs(double(to_float(got[i])) - ref[i]);
    if (std::isnan(d)) d = INFINITY;
    max_err = std::max(max_err, d / scale);
    sq += d * d, sq_ref += ref[i] * ref[i];
  }
  return {max_err, std::sqrt(sq / std::max(sq_ref, 1e-300))};
}

/** Runs grouped_gemm (64-row plan tiles: the wgmma path) and checks it against float64. */
template <class Out>
void run_case(std::mt19937& g, const Case& c) {
  const int E = static_cast<int>(c.rows.size());
  std::vector<int32_t> ids;  // k = 1: token row r chose ids[r]; rows shuffled so the gather is not the identity
  for (int e = 0; e < E; ++e) ids.insert(ids.end(), c.rows[e], e);
  std::shuffle(ids.begin(), ids.end(), g);
  const int M = static_cast<int>(ids.size());
  const int tile_rows = lm::cuda::moe_tile_rows(M, E), max_tiles = lm::cuda::moe_plan_max_tiles(M, E, tile_rows);
  lm::cuda::MoePlan plan{dev(std::vector<int32_t>(M, -1)), dev(std::vector<int32_t>(M, -1)), dev(std::vector<int32_t>(E + 1, -1)),
                         dev(std::vector<int4>(max_tiles, make_int4(-1, -1, -1, -1))), dev(std::vector<int32_t>(1, -1))};
  lm::cuda::moe_plan(dev(ids), M, 1, E, tile_rows, plan, nullptr);

  const auto a = randn_bf16(g, size_t(M) * c.K, 1.f);
  std::vector<std::vector<float>> w(E);
  std::vector<const bf16*> dw(E);
  for (int e = 0; e < E; ++e) {
    w[e] = randn_bf16(g, size_t(c.N) * c.K, 1.f / std::sqrt(float(c.K)));
    dw[e] = dev(to_bf16(w[e]));
  }
  const auto src_row = download(plan.src_row, M);
  const auto offsets = download(plan.offsets, E + 1);

  // Reference: out[p, n] = Σ_k A[row(p), k] · W_e[n, k] in double (relu² then bf16 rounding for the up projection).
  std::vector<double> ref(size_t(M) * c.N);
  double scale = 1e-30;
  for (int e = 0; e < E; ++e)
    for (int p = offsets[e]; p < offsets[e + 1]; ++p) {
      const float* x = a.data() + size_t(c.up ? src_row[p] : p) * c.K;
      for (int n = 0; n < c.N; ++n) {
        double s = 0;
        for (int k = 0; k < c.K; ++k) s += double(x[k]) * w[e][size_t(n) * c.K + k];
        if (c.up) s = __bfloat162float(__float2bfloat16(s > 0 ? float(s * s) : 0.f));
        ref[size_t(p) * c.N + n] = s;
        scale = std::max(scale, std::fabs(s));
      }
    }

  const bf16* da = dev(to_bf16(a));
  Out* out = nullptr;
  lm::cuda::check(cudaMalloc(&out, size_t(M) * c.N * sizeof(Out)), "cudaMalloc");
  lm::cuda::GroupedGemmParams p{da, c.K, c.up ? plan.src_row : nullptr, dev(dw), c.N, c.K, plan.tiles, plan.num_tiles, max_tiles, tile_rows, nullptr, nullptr};
  if constexpr (std::is_same_v<Out, bf16>) p.out_relu2 = out;
  else p.out = out;
  auto launch = [&] {
    lm::cuda::check(cudaMemset(out, 0xff, size_t(M) * c.N * sizeof(Out)), "cudaMemset");  // NaN in bf16 and fp32
    lm::cuda::grouped_gemm(p, nullptr);
    lm::cuda::check(cudaDeviceSynchronize(), "grouped_gemm");
    return download(out, size_t(M) * c.N);
  };
  // fp32 sums of exact bf16 products: ~1e-6; relu² rounded to bf16: half an ulp, 2e-3 of the value.
  const double tol = c.up ? 4e-3 : 1e-4;
  const auto got = launch();
  const auto [max_err, rel] = errors(got, ref, scale);
  const bool ok = max_err <= tol && tile_rows == 64;
  if (!ok) ++failures;
  std::printf("%-44s M %5d N %4d K %4d tile %2d rows: max %.2e rel-l2 %.2e (tol %.0e of max |ref|) %s\n", c.name, M, c.N, c.K, tile_rows, max_err, rel, tol, ok ? "ok" : "FAIL");

  // The same with the split-tail workspace, twice.
  float* ws = nullptr;
  unsigned* counters = nullptr;
  const int n_counters = lm::cuda::grouped_gemm_split_counters();
  lm::cuda::check(cudaMalloc(&ws, size_t(lm::cuda::grouped_gemm_split_floats()) * sizeof(float)), "cudaMalloc");
  lm::cuda::check(cudaMalloc(&counters, size_t(n_counters) * sizeof(unsigned)), "cudaMalloc");
  lm::cuda::check(cudaMemset(counters, 0, size_t(n_counters) * sizeof(unsigned)), "cudaMemset");
  p.split_ws = ws;
  p.split_counters = counters;
  // The workspace poisoned with NaN first: where the last round is split, parts' sums overwrite some of it.
  lm::cuda::check(cudaMemset(ws, 0xff, size_t(lm::cuda::grouped_gemm_split_floats()) * sizeof(float)), "cudaMemset");
  const auto split1 = launch();
  const auto ws_after = download(ws, size_t(lm::cuda::grouped_gemm_split_floats()));
  const bool ws_written = std::any_of(ws_after.begin(), ws_after.end(), [](float v) { return !std::isnan(v); });
  const auto split2 = launch();
  const auto [s_err, s_rel] = errors(split1, ref, scale);
  size_t differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &split1[i], sizeof(Out)) != 0;
  const bool same = std::memcmp(split1.data(), split2.data(), split1.size() * sizeof(Out)) == 0;
  const auto left = download(counters, size_t(n_counters));
  const bool zeroed = std::all_of(left.begin(), left.end(), [](unsigned v) { return v == 0; });
  const bool s_ok = s_err <= tol && same && zeroed && (!c.expect_split || ws_written);
  if (!s_ok) ++failures;
  std::printf("%-44s split tail: max %.2e rel-l2 %.2e, %s, %zu outputs differ from unsplit, repeat %s, counters %s %s\n", "", s_err, s_rel,
              ws_written ? "parts written" : c.expect_split ? "NO PARTS WRITTEN (expected)" : "not split", differ, same ? "bitwise equal" : "DIFFERS", zeroed ? "zero" : "NOT ZERO",
              s_ok ? "ok" : "FAIL");

  // The weights as one (E, N, K) array: tiles by tensor copies (TMA), with and without the split tail.
  std::vector<float> all;
  for (int e = 0; e < E; ++e) all.insert(all.end(), w[e].begin(), w[e].end());
  p.w_base = dev(to_bf16(all));
  p.w_stride = int64_t(c.N) * c.K;
  p.w_experts = E;
  if (!lm::cuda::grouped_gemm_takes_tma(p)) {
    ++failures;
    std::printf("%-44s weights by TMA: NOT TAKEN (no tensor map for this layout or driver) FAIL\n", "");
  }
  for (const bool split : {true, false}) {
    p.split_ws = split ? ws : nullptr;
    p.split_counters = split ? counters : nullptr;
    const auto tma = launch();
    const auto [t_err, t_rel] = errors(tma, ref, scale);
    const auto& same_as = split ? split1 : got;  // the same sums in the same order: bitwise equal
    const bool t_same = std::memcmp(tma.data(), same_as.data(), tma.size() * sizeof(Out)) == 0;
    const bool t_ok = t_err <= tol && t_same;
    if (!t_ok) ++failures;
    std::printf("%-44s weights by TMA%s: max %.2e rel-l2 %.2e, %s the per-thread copies' result %s\n", "", split ? ", split tail" : "", t_err, t_rel, t_same ? "bitwise equal to" : "DIFFERS from",
                t_ok ? "ok" : "FAIL");
  }
  cudaFree(ws);
  cudaFree(counters);
  cudaFree(out);
}

}  // namespace

int main() {
  try {
    std::mt19937 g(20261124);
    // Plan tiles per expert 0, 1, 2, 3, 5, 11 → super tiles {}, {1}, {2}, {1, 2}, {1, 2, 2}, {1, 2, 2, 2, 2, 2}.
    run_case<bf16>(g, {"wgmma up: mixed experts, BN 256", {0, 1, 100, 150, 300, 700}, 500, 200, true});
    run_case<bf16>(g, {"wgmma up: three column tiles, partial k-step", {130, 256, 513, 40, 64, 193}, 696, 136, true});
    run_case<float>(g, {"wgmma down: fp32 rows, BN 224", {384, 0, 200, 129}, 200, 696, false});
    run_case<float>(g, {"wgmma down: ring wraps, BN 192", {512, 512, 17}, 384, 1032, false});
    run_case<bf16>(g, {"wgmma up: more items than SMs, BN 232", std::vector<int>(16, 256), 1856, 264, true});
    // Split tails: fewer items than blocks (4 items on a 10-block grid: 2 parts; 8 items on 24 blocks,
    // 42 k-steps: 3 parts), and SMs + 3 items of one column tile each (whole rounds, then 3 items in 2
    // parts, one of them with an idle second warpgroup).
    int device = 0, sms = 0;
    lm::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    lm::cuda::check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    run_case<bf16>(g, {"wgmma up: split tail, 4 items", {256}, 512, 1056, true, true});
    run_case<bf16>(g, {"wgmma up: split tail, 8 items, BN 232", {128}, 1856, 2688, true, true});
    std::vector<int> many(static_cast<size_t>(sms), 128);
    many.insert(many.end(), {40, 128, 100});
    run_case<float>(g, {"wgmma down: split tail after whole rounds", many, 256, 520, false, true});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test-cuda-moe-gemm: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
