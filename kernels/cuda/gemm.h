// Dense projections through cuBLASLt: y (M, N) fp32 = x (M, K) bf16 · W (N, K)ᵀ bf16 (+ beta · y),
// fp32 accumulation. W is stored (N, K) row-major as in checkpoints.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

namespace lm::cuda {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  /** beta 0 overwrites y, beta 1 accumulates into it (the residual add). */
  void run(const __nv_bfloat16* x, int64_t M, int64_t K, const __nv_bfloat16* W, int64_t N, float* y, float beta, cudaStream_t s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lm::cuda
