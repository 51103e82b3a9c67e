// Dense projections: y (M, N) fp32 = x (M, K) bf16 · W (N, K)ᵀ bf16 (+ beta · y), fp32
// accumulation, through cuBLASLt — or, for decode-sized M, the weight-streaming skinny_gemm kernel
// (gemv.cu). W is stored (N, K) row-major as in checkpoints.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "cuda/ops.h"

namespace lm::cuda {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  /** beta 0 overwrites y, beta 1 accumulates into it (the residual add). */
  void run(const __nv_bfloat16* x, int64_t M, int64_t K, const __nv_bfloat16* W, int64_t N, float* y, float beta, cudaStream_t s);
  /** Whether run() would take the skinny kernel for this shape (every output as skinny_gemm's; one launch up to SKINNY_MAX_M rows). */
  bool skinny(int64_t M, int64_t K, const void* x, const void* W) const;
  /**
   * Up to SKINNY_MAX_OUTS projections of the same x (attention's q, k, v; an MLP's relu² up
   * projection): one skinny_gemm_multi launch where skinny() holds for every W, else one run()
   * per projection (a y16 output then goes through `tmp`, (M, N) floats, and relu2_bf16).
   */
  void run_multi(const __nv_bfloat16* x, int64_t M, int64_t K, const SkinnyOut* outs, int n, float* tmp, cudaStream_t s);
  /**
   * Row counts up to this run as skinny_gemm launches of at most SKINNY_MAX_M rows each (the
   * weights streamed once per launch) instead of cuBLASLt, whose N tiling leaves most SMs idle at
   * decode shapes; 0 sends everything to cuBLASLt (benchmarks compare the two). 2: where skinny
   * wins on the H100 (kernels/bench/bench-gemm: 1.3–2.9× at M ≤ 2 on N ≤ 4K, on par for in_proj
   * and lm_head; from M = 4 cuBLASLt is faster, its kernels reuse x from shared memory).
   */
  int skinny_max_m = 2;
  /**
   * The row count the kernel choice follows; 0: each call's M. Decode and MTP verify steps set it
   * to their sequence count (CudaEngine::forward), so a verify step's k + 1 rows per sequence take
   * the kernel the plain decode step of the same batch takes — skinny iff sequences ≤
   * skinny_max_m — and, the skinny kernel computing each row alone (gemv.cuh), every verify row
   * equals the plain step's row bit for bit. cuBLASLt rows are not independent of M (its
   * algorithm and split follow the shape), so above skinny_max_m sequences they are not.
   */
  int64_t choice_rows = 0;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lm::cuda
