// CUDA ceilings: device-to-device copy bandwidth (bytes read + written) and the bf16 cuBLASLt GEMM
// rate on a large square problem of random values (all-zero operands run faster: the tensor cores
// draw less power and hold higher clocks, METHOD.md), both timed with CUDA events after a warm-up.
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/ops.h"

namespace lm {

Roofline measure_cuda_roofline() {
  Roofline r;
  cudaStream_t s;
  LM_CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  LM_CUDA_CHECK(cudaEventCreate(&e0));
  LM_CUDA_CHECK(cudaEventCreate(&e1));
  const size_t bytes = size_t(2) << 30;
  void *a = nullptr, *b = nullptr;
  LM_CUDA_CHECK(cudaMalloc(&a, bytes));
  LM_CUDA_CHECK(cudaMalloc(&b, bytes));
  LM_CUDA_CHECK(cudaMemsetAsync(a, 0, bytes, s));
  LM_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
  const int reps = 5;
  LM_CUDA_CHECK(cudaEventRecord(e0, s));
  for (int i = 0; i < reps; ++i) LM_CUDA_CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, s));
  LM_CUDA_CHECK(cudaEventRecord(e1, s));
  LM_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  LM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  r.copy_gbps = 2.0 * bytes * reps / (ms / 1e3) / 1e9;
  {
    const int64_t n = 8192;
    cuda::Gemm gemm;
    auto* x = static_cast<__nv_bfloat16*>(a);
    auto* w = static_cast<__nv_bfloat16*>(b);
    float* y = nullptr;
    LM_CUDA_CHECK(cudaMalloc(&y, n * n * sizeof(float)));
    cuda::fill_dummy_bf16(x, n * n, 1, -1.f, 1.f, s);
    cuda::fill_dummy_bf16(w, n * n, 2, -1.f, 1.f, s);
    gemm.run(x, n, n, w, n, y, 0.f, s);
    LM_CUDA_CHECK(cudaEventRecord(e0, s));
    for (int i = 0; i < reps; ++i) gemm.run(x, n, n, w, n, y, 0.f, s);
    LM_CUDA_CHECK(cudaEventRecord(e1, s));
    LM_CUDA_CHECK(cudaEventSynchronize(e1));
    LM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    r.matmul_tflops = 2.0 * n * n * n * reps / (ms / 1e3) / 1e12;
    cudaFree(y);
  }
  cudaFree(a);
  cudaFree(b);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  return r;
}

}  // namespace lm
