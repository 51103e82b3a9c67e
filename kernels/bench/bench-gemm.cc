// Decode-shaped projections: skinny_gemm (gemv.cu) against cuBLASLt on the Nano-30B shapes at the
// row counts of decode and MTP verify steps. Checks that both agree (max |Δ| relative to max |y|)
// and prints the time, the weight-streaming bandwidth and BENCH lines (kernels/bench/README.md).
// Usage: kernels/build/bench-gemm
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/ops.h"

using lm::cuda::bf16;

namespace {

struct Shape {
  const char* name;
  int N, K;
};

template <class F>
float time_ms(int iters, F&& fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  fn();
  cudaEventRecord(a);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / iters;
}

}  // namespace

int main() {
  const Shape shapes[] = {{"mamba.in_proj 10304x2688", 10304, 2688}, {"mamba.out_proj 2688x4096", 2688, 4096}, {"shared.up 3712x2688", 3712, 2688},
                          {"shared.down 2688x3712", 2688, 3712}, {"moe.gate 128x2688", 128, 2688},      {"attn.k 256x2688", 256, 2688},
                          {"lm_head 131072x2688", 131072, 2688}};
  const int Ms[] = {1, 2, 4, 8, 16, 32, 64};
  std::mt19937 g(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  lm::cuda::Gemm gemm;
  int failures = 0;
  std::printf("%-28s %4s %12s %12s %10s %10s %9s\n", "shape", "M", "skinny ms", "cuBLASLt ms", "skinny GB/s", "speedup", "max rel");
  for (const Shape& s : shapes) {
    std::vector<bf16> hw(static_cast<size_t>(s.N) * s.K), hx(static_cast<size_t>(64) * s.K);
    for (auto& v : hw) v = __float2bfloat16(u(g) / std::sqrt(static_cast<float>(s.K)));
    for (auto& v : hx) v = __float2bfloat16(u(g));
    bf16 *w, *x;
    float *y1, *y2;
    lm::cuda::check(cudaMalloc(&w, hw.size() * 2), "cudaMalloc");
    lm::cuda::check(cudaMalloc(&x, hx.size() * 2), "cudaMalloc");
    lm::cuda::check(cudaMalloc(&y1, sizeof(float) * 64 * s.N), "cudaMalloc");
    lm::cuda::check(cudaMalloc(&y2, sizeof(float) * 64 * s.N), "cudaMalloc");
    cudaMemcpy(w, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice);
    for (int M : Ms) {
      // beta = 1 on a non-zero y checks the accumulate path too
      cudaMemset(y1, 0, sizeof(float) * M * s.N);
      gemm.skinny_max_m = 64;
      gemm.run(x, M, s.K, w, s.N, y1, 0.f, nullptr);
      gemm.run(x, M, s.K, w, s.N, y1, 1.f, nullptr);
      gemm.skinny_max_m = 0;
      gemm.run(x, M, s.K, w, s.N, y2, 0.f, nullptr);
      gemm.run(x, M, s.K, w, s.N, y2, 1.f, nullptr);
      std::vector<float> a(static_cast<size_t>(M) * s.N), b(a.size());
      cudaMemcpy(a.data(), y1, a.size() * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(b.data(), y2, b.size() * 4, cudaMemcpyDeviceToHost);
      double mx = 0, md = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        mx = std::max(mx, std::fabs(static_cast<double>(b[i])));
        md = std::max(md, std::fabs(static_cast<double>(a[i]) - b[i]));
      }
      const double rel = md / std::max(mx, 1e-30);
      if (!(rel < 1e-4)) ++failures;
      gemm.skinny_max_m = 64;
      const float ts = time_ms(50, [&] { gemm.run(x, M, s.K, w, s.N, y1, 1.f, nullptr); });
      gemm.skinny_max_m = 0;
      const float tc = time_ms(50, [&] { gemm.run(x, M, s.K, w, s.N, y2, 1.f, nullptr); });
      const double bytes = 2.0 * s.N * s.K;
      std::printf("%-28s %4d %12.4f %12.4f %10.0f %9.2fx %9.1e %s\n", s.name, M, ts, tc, bytes / (ts * 1e-3) / 1e9, tc / ts, rel, rel < 1e-4 ? "" : "MISMATCH");
      const std::string key = std::string(s.name).substr(0, std::string(s.name).find(' '));
      std::printf("BENCH {\"key\": \"gemm_skinny_%s_m%d\", \"value\": %.1f, \"unit\": \"GB/s\", \"ms\": %.5f, \"bytes\": %.0f, \"baseline_cublaslt_ms\": %.5f}\n", key.c_str(), M, bytes / (ts * 1e-3) / 1e9, ts, bytes, tc);
    }
    cudaFree(w);
    cudaFree(x);
    cudaFree(y1);
    cudaFree(y2);
  }
  std::printf("%s: %d mismatches\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
