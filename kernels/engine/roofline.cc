// Ceilings measured in the same run as a benchmark: copy bandwidth and GEMM rate, per backend.
#include <chrono>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "engine.h"

namespace lm {

#ifdef LM_HAVE_CUDA
Roofline measure_cuda_roofline();
#endif

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Roofline measure_cpu_roofline(int threads) {
  Roofline r;
  const size_t n = 64u << 20;  // 256 MiB of floats
  std::vector<float> a(n, 1.f), b(n, 0.f);
  std::memcpy(b.data(), a.data(), n * 4);  // touch pages
  double best = 1e30;
  for (int i = 0; i < 4; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(i % 2 ? a.data() : b.data(), i % 2 ? b.data() : a.data(), n * 4);
    best = std::min(best, seconds_since(t0));
  }
  r.copy_gbps = 2.0 * n * 4 / best / 1e9;
  cpu::ThreadPool pool(threads);
  const int64_t M = 256, K = 1024, N = 1024;
  std::vector<float> x(M * K, 0.5f), w(N * K, 0.25f), y(M * N);
  best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::gemm_xwt(pool, x.data(), M, K, w.data(), N, y.data());
    best = std::min(best, seconds_since(t0));
  }
  r.matmul_tflops = 2.0 * M * N * K / best / 1e12;
  return r;
}

}  // namespace

Roofline measure_roofline(const std::string& backend, int threads) {
  if (backend == "cpu") return measure_cpu_roofline(threads);
#ifdef LM_HAVE_CUDA
  if (backend == "cuda") return measure_cuda_roofline();
#endif
  throw Error("measure_roofline: backend '" + backend + "' is not in this build");
}

}  // namespace lm
