// cuBLASLt wrapper. Row-major y (M, N) = x (M, K) · Wᵀ is, in cuBLAS's column-major terms,
// yᵀ (N, M) = op_T(W as K×N, ld K) · xᵀ (K×M, ld K): transa = T, transb = N, ldc = N.
// Descriptors and the heuristic's algorithm are cached per (M, N, K, beta).
#include "cuda/gemm.h"
#include "cuda/ops.h"

#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "cuda/common.cuh"

namespace lm::cuda {

namespace {

void lt_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) throw Error(std::string(what) + ": cuBLASLt status " + std::to_string(static_cast<int>(st)));
}

constexpr size_t WORKSPACE = 32u << 20;

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

}  // namespace

struct Gemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Plan> plans;

  const Plan& plan(int64_t M, int64_t K, int64_t N, bool accumulate) {
    auto key = std::make_tuple(M, N, K, accumulate);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    lt_check(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
    lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
    lt_check(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, K, N, K), "layout A");
    lt_check(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, K, M, K), "layout B");
    lt_check(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, N, M, N), "layout C");
    cublasLtMatmulPreference_t pref;
    lt_check(cublasLtMatmulPreferenceCreate(&pref), "preference");
    size_t ws = WORKSPACE;
    lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), "preference workspace");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    lt_check(cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found), "cublasLtMatmulAlgoGetHeuristic");
    cublasLtMatmulPreferenceDestroy(pref);
    if (found == 0) throw Error("cuBLASLt has no algorithm for a " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " bf16 GEMM");
    p.algo = result.algo;
    return plans.emplace(key, p).first->second;
  }
};

Gemm::Gemm() : impl_(std::make_unique<Impl>()) {
  lt_check(cublasLtCreate(&impl_->handle), "cublasLtCreate");
  LM_CUDA_CHECK(cudaMalloc(&impl_->workspace, WORKSPACE));
}

Gemm::~Gemm() {
  for (auto& [k, p] : impl_->plans) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
  cudaFree(impl_->workspace);
  cublasLtDestroy(impl_->handle);
}

bool Gemm::skinny(int64_t M, int64_t K, const void* x, const void* W) const {
  const int64_t choose = choice_rows > 0 ? choice_rows : M;
  return M >= 1 && choose <= std::min<int64_t>(skinny_max_m, SKINNY_MAX_M) && skinny_gemm_supported(std::min<int64_t>(M, SKINNY_MAX_M), K, x, W);
}

void Gemm::run_multi(const __nv_bfloat16* x, int64_t M, int64_t K, const SkinnyOut* outs, int n, float* tmp, cudaStream_t s) {
  if (M == 0) return;
  bool one_launch = n <= SKINNY_MAX_OUTS;
  for (int i = 0; i < n; ++i) one_launch = one_launch && skinny(M, K, x, outs[i].W);
  if (one_launch) {  // launches of at most SKINNY_MAX_M rows (one for every decode step)
    for (int64_t m0 = 0; m0 < M; m0 += SKINNY_MAX_M) {
      SkinnyOut part[SKINNY_MAX_OUTS];
      for (int i = 0; i < n; ++i) {
        part[i] = outs[i];
        if (part[i].y) part[i].y += m0 * part[i].N;
        if (part[i].y16) part[i].y16 += m0 * part[i].N;
      }
      skinny_gemm_multi(x + m0 * K, static_cast<int>(std::min<int64_t>(SKINNY_MAX_M, M - m0)), static_cast<int>(K), part, n, 0.f, s);
    }
    return;
  }
  for (int i = 0; i < n; ++i) {
    if (outs[i].y) {
      run(x, M, K, outs[i].W, outs[i].N, outs[i].y, 0.f, s);
    } else {
      run(x, M, K, outs[i].W, outs[i].N, tmp, 0.f, s);
      relu2_bf16(tmp, M * outs[i].N, outs[i].y16, s);
    }
  }
}

void Gemm::run(const __nv_bfloat16* x, int64_t M, int64_t K, const __nv_bfloat16* W, int64_t N, float* y, float beta, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  const int64_t choose = choice_rows > 0 ? choice_rows : M;
  if (choose <= skinny_max_m && skinny_gemm_supported(std::min<int64_t>(M, SKINNY_MAX_M), K, x, W)) {
    for (int64_t m0 = 0; m0 < M; m0 += SKINNY_MAX_M)
      skinny_gemm(x + m0 * K, static_cast<int>(std::min<int64_t>(SKINNY_MAX_M, M - m0)), static_cast<int>(K), W, static_cast<int>(N), y + m0 * N, beta, s);
    return;
  }
  const Plan& p = impl_->plan(M, K, N, beta != 0.f);
  const float alpha = 1.f;
  lt_check(cublasLtMatmul(impl_->handle, p.desc, &alpha, W, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, impl_->workspace, WORKSPACE, s), "cublasLtMatmul");
}

}  // namespace lm::cuda
