// y = x · Wᵀ (+ bias): the projections. W is stored (N, K) as in checkpoints, so each output is a
// dot product along contiguous K.
//
// Register tiles of MR rows of x × NR rows of W: every k step loads NR weight vectors and MR input
// vectors and runs MR·NR independent vector FMA chains, so one weight row read serves MR tokens and
// the FMA latency is hidden by the other chains (a lone dot product is latency-bound). The tile
// shape follows the rows left (4×2, 3×3, 2×4, 1×8: about eight chains each), and outputs are split
// over threads by columns of W in panels small enough to stay in cache while every row block reads
// them.
//
// Every output is computed the same way whatever tile it falls in: one 8-lane accumulator over k in
// steps of 8, summed across lanes in a fixed order, then the k tail, then the bias. A row's results
// therefore never depend on M or on which other rows share the call (a verify step's rows equal
// plain decode steps' bit for bit; speculative decoding relies on it).
//
// gemm_xwt_q8 is the same loop over int8 weights with one scale per output (a quarter of the bytes:
// for drafting, where only speed and a close argmax matter): each weight is widened to fp32 and
// the row's dot product is scaled once at the end.
#include <algorithm>
#include <cstring>
#include <type_traits>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace lm::cpu {

namespace {

inline v8 load8q(const int8_t* p) {
#if defined(__AVX2__)
  const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  v8 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
#else
  v8 v;
  for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(p[i]);
  return v;
#endif
}

/** Outputs y[m0..m0+MR) × [n0..n0+NR); `scale` (N) multiplies each dot product (int8 weights). */
template <int MR, int NR, typename Wt>
inline void tile(const float* x, int64_t m0, int64_t K, const Wt* W, const float* scale, int64_t n0, int64_t N, float* y, const float* bias) {
  v8 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = v8{};
  const int64_t K8 = K & ~int64_t{7};
  const float* xr[MR];
  const Wt* wr[NR];
  for (int i = 0; i < MR; ++i) xr[i] = x + (m0 + i) * K;
  for (int j = 0; j < NR; ++j) wr[j] = W + (n0 + j) * K;
  for (int64_t k = 0; k < K8; k += 8) {
    v8 w[NR];
    for (int j = 0; j < NR; ++j) {
      if constexpr (std::is_same_v<Wt, int8_t>) w[j] = load8q(wr[j] + k);
      else w[j] = load8(wr[j] + k);
    }
    for (int i = 0; i < MR; ++i) {
      const v8 xv = load8(xr[i] + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = fma8(xv, w[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = lanes_sum(acc[i][j]);
      for (int64_t k = K8; k < K; ++k) s += xr[i][k] * static_cast<float>(wr[j][k]);
      if (scale) s *= scale[n0 + j];
      y[(m0 + i) * N + n0 + j] = s + (bias ? bias[n0 + j] : 0.f);
    }
}

#if defined(__AVX512F__)
// GCC 12 warns about the AVX-512 headers' deliberately undefined pass-through operands
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
/**
 * int8 weights with 16-lane vectors (AVX-512): widening each weight costs two instructions, so the
 * int8 path is bound by them, not by bytes, and twice the lanes halve them. Drafting only: the
 * fp32 path keeps 8 lanes everywhere (its results must not depend on the machine's vector width).
 */
template <int MR, int NR>
inline void tile_q8_wide(const float* x, int64_t m0, int64_t K, const int8_t* W, const float* scale, int64_t n0, int64_t N, float* y, const float* bias) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t K16 = K & ~int64_t{15};
  for (int64_t k = 0; k < K16; k += 16) {
    __m512 w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(W + (n0 + j) * K + k))));
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + (m0 + i) * K + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, w[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = _mm512_reduce_add_ps(acc[i][j]);
      for (int64_t k = K16; k < K; ++k) s += x[(m0 + i) * K + k] * static_cast<float>(W[(n0 + j) * K + k]);
      y[(m0 + i) * N + n0 + j] = s * scale[n0 + j] + (bias ? bias[n0 + j] : 0.f);
    }
}

template <int MR, int NR>
inline void rows_block_q8_wide(const float* x, int64_t m0, int64_t K, const int8_t* W, const float* scale, int64_t n0, int64_t n1, int64_t N, float* y, const float* bias) {
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) tile_q8_wide<MR, NR>(x, m0, K, W, scale, n, N, y, bias);
  for (; n < n1; ++n) tile_q8_wide<MR, 1>(x, m0, K, W, scale, n, N, y, bias);
}

void columns_q8_wide(const float* x, int64_t M, int64_t K, const int8_t* W, const float* scale, int64_t n0, int64_t n1, int64_t N, float* y, const float* bias) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) rows_block_q8_wide<4, 4>(x, m, K, W, scale, n0, n1, N, y, bias);
  switch (M - m) {
    case 3: rows_block_q8_wide<3, 4>(x, m, K, W, scale, n0, n1, N, y, bias); break;
    case 2: rows_block_q8_wide<2, 6>(x, m, K, W, scale, n0, n1, N, y, bias); break;
    case 1: rows_block_q8_wide<1, 8>(x, m, K, W, scale, n0, n1, N, y, bias); break;
    default: break;
  }
}
#pragma GCC diagnostic pop
#endif

/** Rows [m0, m0+MR) × columns [n0, n1): NR-wide tiles, then single columns. */
template <int MR, int NR, typename Wt>
inline void rows_block(const float* x, int64_t m0, int64_t K, const Wt* W, const float* scale, int64_t n0, int64_t n1, int64_t N, float* y, const float* bias) {
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) tile<MR, NR>(x, m0, K, W, scale, n, N, y, bias);
  for (; n < n1; ++n) tile<MR, 1>(x, m0, K, W, scale, n, N, y, bias);
}

/** Every row of x against columns [n0, n1), panel by panel. */
template <typename Wt>
void columns(const float* x, int64_t M, int64_t K, const Wt* W, const float* scale, int64_t n0, int64_t n1, int64_t N, float* y, const float* bias) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Wt, int8_t>) {
    if (K >= 16) return columns_q8_wide(x, M, K, W, scale, n0, n1, N, y, bias);
  }
#endif
  // a panel of W stays in L2 while every row block streams it: about 256 KB of fp32
  const int64_t panel = std::max<int64_t>(8, (int64_t{64} * 1024 / std::max<int64_t>(K, 1)) & ~int64_t{7});
  for (int64_t p0 = n0; p0 < n1; p0 += panel) {
    const int64_t p1 = std::min(n1, p0 + panel);
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) rows_block<4, 2>(x, m, K, W, scale, p0, p1, N, y, bias);
    switch (M - m) {
      case 3: rows_block<3, 3>(x, m, K, W, scale, p0, p1, N, y, bias); break;
      case 2: rows_block<2, 4>(x, m, K, W, scale, p0, p1, N, y, bias); break;
      case 1: rows_block<1, 8>(x, m, K, W, scale, p0, p1, N, y, bias); break;
      default: break;
    }
  }
}

/** Below this many multiply-adds a GEMM runs on the calling thread: waking the pool costs more. */
constexpr int64_t PARALLEL_MIN_WORK = int64_t{1} << 17;
/** Columns per unit of work handed to a thread (whole tiles of every shape above but 3×3). */
constexpr int64_t COLUMN_GROUP = 8;

template <typename Wt>
void gemm(ThreadPool& pool, const float* x, int64_t M, int64_t K, const Wt* W, const float* scale, int64_t N, float* y, const float* bias) {
  if (M <= 0 || N <= 0) return;
  // int8 weights are a quarter of the bytes: count their work as such when deciding on threads
  const int64_t work = M * N * K / static_cast<int64_t>(sizeof(float) / sizeof(Wt));
  if (work < PARALLEL_MIN_WORK || pool.size() == 1) {
    columns(x, M, K, W, scale, 0, N, N, y, bias);
    return;
  }
  const int64_t groups = (N + COLUMN_GROUP - 1) / COLUMN_GROUP;
  // each thread's share should be worth at least about PARALLEL_MIN_WORK / 2
  const int64_t min_groups = std::max<int64_t>(1, PARALLEL_MIN_WORK / 2 / std::max<int64_t>(1, work / groups));
  pool.parallel_for(
      groups, [&](int64_t g0, int64_t g1) { columns(x, M, K, W, scale, g0 * COLUMN_GROUP, std::min(N, g1 * COLUMN_GROUP), N, y, bias); }, min_groups);
}

}  // namespace

void gemm_xwt(ThreadPool& pool, const float* x, int64_t M, int64_t K, const float* W, int64_t N, float* y, const float* bias) {
  gemm(pool, x, M, K, W, static_cast<const float*>(nullptr), N, y, bias);
}

void gemm_xwt_q8(ThreadPool& pool, const float* x, int64_t M, int64_t K, const QuantWeight& W, float* y, const float* bias) {
  gemm(pool, x, M, K, W.q.data(), W.scale.data(), W.rows, y, bias);
}

QuantWeight quantize_rows(const float* W, int64_t N, int64_t K) {
  QuantWeight q;
  q.rows = N;
  q.cols = K;
  q.q.resize(static_cast<size_t>(N * K));
  q.scale.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    float amax = 0.f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[n * K + k]));
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    q.scale[n] = s;
    for (int64_t k = 0; k < K; ++k) q.q[n * K + k] = static_cast<int8_t>(std::lround(W[n * K + k] / s));
  }
  return q;
}

}  // namespace lm::cpu
