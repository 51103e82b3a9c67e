// y = x · Wᵀ (+ bias): the projections. W is stored (N, K) as in checkpoints, so each output is a
// dot product along contiguous K; outputs are split over threads by columns of W (rows of y^T),
// and 4 rows of x are processed together so each W row is read once per 4 tokens.
#include "cpu/ops.h"

namespace lm::cpu {

namespace {

inline float dot(const float* a, const float* b, int64_t K) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f, s4 = 0.f, s5 = 0.f, s6 = 0.f, s7 = 0.f;
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    s0 += a[k] * b[k];
    s1 += a[k + 1] * b[k + 1];
    s2 += a[k + 2] * b[k + 2];
    s3 += a[k + 3] * b[k + 3];
    s4 += a[k + 4] * b[k + 4];
    s5 += a[k + 5] * b[k + 5];
    s6 += a[k + 6] * b[k + 6];
    s7 += a[k + 7] * b[k + 7];
  }
  for (; k < K; ++k) s0 += a[k] * b[k];
  return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
}

}  // namespace

void gemm_xwt(ThreadPool& pool, const float* x, int64_t M, int64_t K, const float* W, int64_t N, float* y, const float* bias) {
  const int64_t work = M * N * K;
  auto body = [&](int64_t n0, int64_t n1) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
      const float* x0 = x + m * K;
      for (int64_t n = n0; n < n1; ++n) {
        const float* w = W + n * K;
        const float b = bias ? bias[n] : 0.f;
        y[(m + 0) * N + n] = dot(x0, w, K) + b;
        y[(m + 1) * N + n] = dot(x0 + K, w, K) + b;
        y[(m + 2) * N + n] = dot(x0 + 2 * K, w, K) + b;
        y[(m + 3) * N + n] = dot(x0 + 3 * K, w, K) + b;
      }
    }
    for (; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) y[m * N + n] = dot(x + m * K, W + n * K, K) + (bias ? bias[n] : 0.f);
  };
  if (work < (1 << 16)) body(0, N);
  else pool.parallel_for(N, body, 16);
}

}  // namespace lm::cpu
