// The chunked SSD scan at the Nano head shape (64 × 128) against the CPU per-token recurrence:
// chunk and sub-chunk edges, mixed batches, group layouts, state carried across calls, fast
// decays, and every output row written (y poisoned with NaN first). It checks whichever path the
// environment selects: the chained kernels by default, ssd_scan_wg.cu with LM_SSD_SCAN=wg (and its
// variants with LM_SSD_PROBE). `test-cuda-ssd time` prints the timings alone (LM_SSD_PROFILE=1:
// cycles per phase of the wg kernel too). Run on the GPU machine by scripts/gpu-check.sh; exit
// status 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "cuda/ssd_scan_wg.cuh"
#include "tests/cuda_test_util.h"
#include "engine.h"

namespace {

int failures = 0;

using namespace lm::cuda_test;

std::vector<float> host(const float* p, size_t n) { return download(p, n); }

/** Max |got − want| over max |want|; NaN (an unwritten poisoned output) counts as infinite. */
double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double scale = 1e-6, worst = 0;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]) / scale;
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

void report(const std::string& name, double err, double tol) {
  const bool ok = err <= tol;
  if (!ok) ++failures;
  std::printf("%-58s max %.2e  (tol %.0e, relative to max |ref|) %s\n", name.c_str(), err, tol, ok ? "ok" : "FAIL");
}

/** Device view of a batch: sequence i in slot 2i + 1, rows packed in order. */
struct Batch {
  std::vector<int> slot, row0;
  lm::cuda::BatchView view;
  explicit Batch(const std::vector<int>& lens) {
    int r = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      slot.push_back(2 * static_cast<int>(i) + 1);
      row0.push_back(r);
      r += lens[i];
    }
    const std::vector<int> zeros(lens.size(), 0);
    view = batch_view(slot, lens, zeros, zeros, dev(std::vector<int>{0}), lm::cuda::BatchView{}.block_size);
  }
};

struct Case {
  std::string what;
  int nh, G;
  std::vector<std::vector<int>> calls;  // each call's sequence lengths; call k feeds the same sequences on
  float dt_bias = -3.f;                 // around softplus(-3) ≈ 0.05: the state carries across sub-chunks
};

/**
 * Runs the calls in order on the same slots (ssd_chunked_scan, then ssm_scan for the short
 * sequences, as the engine does) and compares every call's y and the final states with the CPU
 * recurrence fed the same rows.
 */
void run_case(std::mt19937& g, const Case& c) {
  constexpr int P = 64, N = 128, L = 128;
  const int I = c.nh * P, CD = I + 2 * c.G * N, nseq = static_cast<int>(c.calls[0].size());
  const int64_t state_size = int64_t(c.nh) * P * N;
  std::vector<float> dt_bias(c.nh), A(c.nh), D = randn(g, c.nh);
  for (auto& v : dt_bias) v = c.dt_bias + std::normal_distribution<float>(0.f, 0.3f)(g);
  for (auto& a : A) a = -std::exp(std::uniform_real_distribution<float>(-1.f, 1.f)(g));
  auto ssm = randn(g, (2 * nseq + 1) * state_size, 0.3f);
  std::vector<float> ref_ssm = ssm;
  float* dssm = dev(ssm);
  const float *d_bias = dev(dt_bias), *d_A = dev(A), *d_D = dev(D);
  for (size_t k = 0; k < c.calls.size(); ++k) {
    const auto& lens = c.calls[k];
    Batch b(lens);
    const int R = b.view.rows;
    auto xbc = randn(g, int64_t(R) * CD), dt_raw = randn(g, int64_t(R) * c.nh, 0.5f);
    std::vector<float> dt(int64_t(R) * c.nh), ref_y(int64_t(R) * I);
    for (int64_t r = 0; r < R; ++r)
      for (int h = 0; h < c.nh; ++h) dt[r * c.nh + h] = lm::cpu::softplus(dt_raw[r * c.nh + h] + dt_bias[h]);
    for (int i = 0; i < nseq; ++i) {
      const float* row = xbc.data() + int64_t(b.row0[i]) * CD;
      lm::cpu::SsmArgs a{lens[i], c.nh, P, c.G, N, row, CD, row + I, row + I + c.G * N, CD, dt.data() + int64_t(b.row0[i]) * c.nh, A.data(), D.data(), ref_ssm.data() + b.slot[i] * state_size,
                         ref_y.data() + int64_t(b.row0[i]) * I};
      lm::cpu::ssm_recurrent_scan(a);
    }
    float* dy = dev(std::vector<float>(int64_t(R) * I, NAN));
    float* ws = dev(std::vector<float>(lm::cuda::ssd_chunked_workspace_floats(R, c.G, L)));
    const lm::cuda::SsmParams p{c.nh, P, c.G, N, dev(xbc), CD, dev(dt_raw), c.nh, d_bias, d_A, d_D, 0.f, 3.4e38f, dssm, dy};
    lm::cuda::ssd_chunked_scan(b.view, p, L, ws, nullptr);
    lm::cuda::ssm_scan(b.view, p, nullptr, /*short_only=*/true);
    lm::cuda::check(cudaDeviceSynchronize(), "ssd scan");
    std::string shape;
    for (int l : lens) shape += (shape.empty() ? "" : ",") + std::to_string(l);
    report(c.what + " call " + std::to_string(k + 1) + " [" + shape + "] y", rel_error(host(dy, ref_y.size()), ref_y), 5e-3);
  }
  report(c.what + " states after", rel_error(host(dssm, ssm.size()), ref_ssm), 5e-3);
}

/** Nano heads, one 8K sequence and 16 × 512: median time of 20 calls (LM_SSD_PROFILE=1: cycles per phase too). */
void time_nano(std::mt19937& g) {
  const char* prof_env = std::getenv("LM_SSD_PROFILE");
  const bool profile = prof_env != nullptr && prof_env[0] == '1';
  constexpr int nh = 64, P = 64, G = 8, N = 128, L = 128, T = 8192, I = nh * P, CD = I + 2 * G * N;
  auto xbc = randn(g, int64_t(T) * CD), dt_raw = randn(g, int64_t(T) * nh, 0.5f);
  float* dssm = dev(std::vector<float>(64 * int64_t(nh) * P * N, 0.f));
  float* dy = dev(std::vector<float>(int64_t(T) * I, 0.f));
  float* ws = dev(std::vector<float>(lm::cuda::ssd_chunked_workspace_floats(T, G, L)));
  const lm::cuda::SsmParams p{nh, P, G, N, dev(xbc), CD, dev(dt_raw), nh, dev(std::vector<float>(nh, -3.f)), dev(std::vector<float>(nh, -1.f)), dev(std::vector<float>(nh, 1.f)), 0.f, 3.4e38f, dssm, dy};
  for (const auto& lens : {std::vector<int>{T}, std::vector<int>(16, T / 16)}) {
    Batch b(lens);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<float> ms;
    unsigned long long cycles[2][12];
    if (profile) lm::cuda::ssd_scan_wg_profile(cycles);  // clears
    for (int i = 0; i < 22; ++i) {
      cudaEventRecord(e0);
      lm::cuda::ssd_chunked_scan(b.view, p, L, ws, nullptr);
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float t = 0;
      cudaEventElapsedTime(&t, e0, e1);
      if (i >= 2) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const float med = ms[ms.size() / 2];
    std::printf("ssd timing, Nano heads, %2zu x %4d tokens: %.3f ms = %.3g tokens/s per layer (min %.3f, max %.3f)\n", lens.size(), lens[0], med, T / (med * 1e-3), ms.front(), ms.back());
    if (profile) {
      lm::cuda::ssd_scan_wg_profile(cycles);
      const double subs = 22.0 * ((lens[0] + 63) / 64);  // block 0 walks sequence 0's sub-chunks
      for (int w = 0; w < 2; ++w) {
        std::printf("  profile warpgroup %d, cycles per sub-chunk of block 0:", w);
        for (int k = 0; k < 9; ++k) std::printf(" %.0f", cycles[w][k] / subs);
        std::printf("\n");
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::mt19937 g(321);
    if (argc > 1 && std::string(argv[1]) == "time") {  // timings alone (dev probes: LM_SSD_PROBE, LM_SSD_PROFILE)
      time_nano(g);
      return 0;
    }
    run_case(g, {"sub-chunk edges", 64, 8, {{9, 63, 64, 65, 1, 127, 129, 200}}});
    run_case(g, {"state carried across calls", 64, 8, {{300, 5, 70}, {200, 1, 64}, {1, 1, 1}, {129, 9, 20}}});
    run_case(g, {"16 heads in 2 groups", 16, 2, {{777, 3, 90}}});
    run_case(g, {"24 heads in 8 groups", 24, 8, {{333, 41}}});
    run_case(g, {"fast decays (dt around 2)", 64, 8, {{400, 17}}, 2.f});
    run_case(g, {"one 1K sequence", 64, 8, {{1024}}});
    time_nano(g);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test-cuda-ssd: %s\n", e.what());
    return 2;
  }
  std::printf("%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
