// CPU backend ops: the reference every other backend is checked against. fp32 in, fp32 out,
// fp32 accumulation. Row-major everywhere; shapes are in the comments as (rows, cols).
#pragma once
#include <cstdint>
#include <cmath>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace lm::cpu {

/** A fixed pool of worker threads; parallel_for splits [0, n) into contiguous ranges. */
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int size() const { return static_cast<int>(workers_.size()) + 1; }
  /** Runs fn(begin, end) over disjoint ranges covering [0, n); blocks until all are done. */
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::vector<std::thread> workers_;
};

/** y (M, N) = x (M, K) · Wᵀ, W (N, K); adds bias (N) when given. */
void gemm_xwt(ThreadPool& pool, const float* x, int64_t M, int64_t K, const float* W, int64_t N, float* y, const float* bias = nullptr);

/** A weight matrix (rows, cols) in int8 with one fp32 scale per row: W ≈ q · scale (row-wise absmax / 127). */
struct QuantWeight {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> q;     // (rows, cols)
  std::vector<float> scale;  // (rows)
  bool empty() const { return q.empty(); }
};

/** Quantizes W (N, K) row by row (symmetric, round to nearest). */
QuantWeight quantize_rows(const float* W, int64_t N, int64_t K);

/** y (M, W.rows) = x (M, K) · Wᵀ with int8 weights (fp32 accumulation); adds bias when given. K == W.cols. */
void gemm_xwt_q8(ThreadPool& pool, const float* x, int64_t M, int64_t K, const QuantWeight& W, float* y, const float* bias = nullptr);

/** out (rows, H) = x / rms(x) * w, per row. `out` may alias `x`. */
void rmsnorm(const float* x, const float* w, int64_t rows, int64_t H, float eps, float* out);

/** Gated group RMSNorm: out = norm_groups(y * silu(z)) * w, groups of `group` channels. y, out (rows, I); z rows `z_stride` apart. */
void gated_group_rmsnorm(const float* y, const float* z, int64_t z_stride, const float* w, int64_t rows, int64_t I, int64_t group, float eps, float* out);

/**
 * Causal depthwise conv1d + bias + SiLU over `T` consecutive tokens of one sequence.
 * x (T, C) with row stride `x_stride`; w (C, K) with w[c, K-1] on the current token; state (K-1, C)
 * holds the previous K-1 inputs (oldest first) and is updated to the last K-1 inputs.
 * out (T, C) contiguous.
 */
void causal_conv1d_silu(const float* x, int64_t x_stride, int64_t T, int64_t C, int64_t K, const float* w, const float* bias, float* state, float* out);

/** Inputs of the SSM scan for one sequence, all fp32. */
struct SsmArgs {
  int64_t T, nheads, head_dim, ngroups, dstate;
  const float* x;  // (T, nheads*head_dim), row stride x_stride
  int64_t x_stride;
  const float* B;  // (T, ngroups*dstate), row stride bc_stride
  const float* C;  // (T, ngroups*dstate), row stride bc_stride
  int64_t bc_stride;
  const float* dt;  // (T, nheads): softplus'd and clamped
  const float* A;   // (nheads) negative
  const float* D;   // (nheads)
  float* state;     // (nheads, head_dim, dstate), updated in place
  float* y;         // (T, nheads*head_dim) contiguous
};

/** Chunked SSD (Mamba-2) scan with initial state in and final state out. */
void ssd_chunked_scan(const SsmArgs& a, int64_t chunk_size);

/** The same function by the per-token recurrence (decode, and the reference in tests). */
void ssm_recurrent_scan(const SsmArgs& a);

/**
 * Causal attention for the `T` new tokens of one sequence at positions [pos0, pos0+T) over a paged
 * KV cache already holding keys/values for positions [0, pos0+T).
 * q (T, nq*hd); k_cache/v_cache (blocks, block_size, nkv, hd); out (T, nq*hd).
 */
void paged_attention(const float* q, int64_t T, int64_t pos0, int64_t nq, int64_t nkv, int64_t hd, const float* k_cache, const float* v_cache, const int32_t* block_table, int64_t block_size, float* out);

/**
 * MoE routing for one token: sigmoid scores (E), bias for choice, group top-k, top-k experts.
 * Writes k expert ids and weights (normalised if asked, times scaling).
 */
void moe_route(const float* logits, const float* correction_bias, int64_t E, int64_t n_group, int64_t topk_group, int64_t k, bool norm_topk, float scaling, int32_t* experts, float* weights);

inline float silu(float x) { return x / (1.f + std::exp(-x)); }
inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
inline float relu2(float x) { return x > 0.f ? x * x : 0.f; }

}  // namespace lm::cpu
