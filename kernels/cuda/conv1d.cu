// Causal depthwise conv1d + bias + SiLU for a mixed batch. Row r (token t of its sequence) reads the
// inputs t-K+1 .. t: from this step's rows where t-j >= 0, else from the slot's conv state (the
// previous K-1 inputs, oldest first). conv_state_update then shifts the state in a second launch,
// so no row reads a state another row already overwrote. A step of one row per sequence (decode)
// does both in one launch (conv1d_silu_step): each thread owns one channel of one sequence, reads
// its K-1 state values, then writes the shifted state; the arithmetic is the two-launch path's.
#include <cstdint>
#include <cstdlib>

#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

/** Dev switch for A/B runs: LM_CUDA_PREFILL_VEC=0 keeps the one-row-per-thread kernels. */
static bool prefill_vec_paths() {
  static const bool on = [] {
    const char* v = std::getenv("LM_CUDA_PREFILL_VEC");
    return v == nullptr || *v == '\0' || std::atoi(v) != 0;
  }();
  return on;
}

__global__ void conv1d_kernel(BatchView b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, const float* state, float* out) {
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x;
  const int seq = b.row_seq[r];
  const int t = r - b.seq_row0[seq];
  const int slot = b.seq_slot[seq];
  const float* st = state + static_cast<int64_t>(slot) * (K - 1) * C;
  for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < C; c += gridDim.y * blockDim.x) {
    float acc = bias ? bias[c] : 0.f;
    for (int j = 0; j < K; ++j) {
      const int src = t - (K - 1) + j;  // index within this step's rows of the sequence
      const float v = src >= 0 ? x[static_cast<int64_t>(r - t + src) * x_stride + c] : st[static_cast<int64_t>(K - 1 + src) * C + c];
      acc += w[static_cast<int64_t>(c) * K + j] * v;
    }
    out[static_cast<int64_t>(r) * C + c] = silu(acc);
  }
}

constexpr int CONV_TILE_ROWS = 16;   // rows per thread of the tiled kernel
constexpr int CONV_MAX_WINDOW = 8;   // K - 1 inputs kept in registers (K <= 9)
constexpr int CONV_TILE_THREADS = 128;
constexpr int CONV_ROWS_IN_FLIGHT = 4;  // inputs loaded ahead of the arithmetic

__device__ __forceinline__ float4 fma4(float w0, float w1, float w2, float w3, float4 v, float4 acc) {
  return make_float4(fmaf(w0, v.x, acc.x), fmaf(w1, v.y, acc.y), fmaf(w2, v.z, acc.z), fmaf(w3, v.w, acc.w));
}

// WINDOW: the most K - 1 state rows the instance keeps in registers (CONV_MAX_WINDOW, or 3 for the
// conv_kernel 4 of every released Nemotron-H: 16 weight registers instead of 36, so twice the
// resident blocks of this latency-bound kernel).
template <int WINDOW>
__global__ void __launch_bounds__(CONV_TILE_THREADS, WINDOW <= 3 ? 6 : 1) conv1d_tiled_kernel(BatchView b, const float* __restrict__ x, int64_t x_stride, int C, int K, const float* w, const float* bias,
                                                                         const float* __restrict__ state, float* __restrict__ out) {
  // weights of the thread's 4 channels, tap j of channel c + i at wr[j][i] (constants: loaded
  // before waiting for the kernel that writes x)
  const int c = 4 * (blockIdx.y * blockDim.x + threadIdx.x);
  float wr[WINDOW + 1][4];
#pragma unroll
  for (int j = 0; j <= WINDOW; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) wr[j][i] = j < K && c < C ? w[static_cast<int64_t>(c + i) * K + j] : 0.f;
  const float4 bv = bias && c < C ? *reinterpret_cast<const float4*>(bias + c) : make_float4(0.f, 0.f, 0.f, 0.f);
  pdl_wait();
  pdl_trigger();
  if (c >= C) return;
  const int r0 = blockIdx.x * CONV_TILE_ROWS;
  const int r1 = min(r0 + CONV_TILE_ROWS, b.rows);
  float4 win[WINDOW];  // win[j]: input at t - (K - 1) + j
  int prev_seq = -1;
  for (int rq = r0; rq < r1; rq += CONV_ROWS_IN_FLIGHT) {
    float4 xs[CONV_ROWS_IN_FLIGHT];  // this group's inputs, loaded before any arithmetic
#pragma unroll
    for (int q = 0; q < CONV_ROWS_IN_FLIGHT; ++q)
      if (rq + q < r1) xs[q] = *reinterpret_cast<const float4*>(x + static_cast<int64_t>(rq + q) * x_stride + c);
#pragma unroll
    for (int q = 0; q < CONV_ROWS_IN_FLIGHT; ++q) {
      const int r = rq + q;
      if (r >= r1) break;
      const int seq = b.row_seq[r];
      if (seq != prev_seq) {  // (re)load the window: this step's rows of the sequence, else its state
        const int t = r - b.seq_row0[seq];
        const float* st = state + static_cast<int64_t>(b.seq_slot[seq]) * (K - 1) * C;
#pragma unroll
        for (int j = 0; j < WINDOW; ++j) {
          if (j < K - 1) {
            const int src = t - (K - 1) + j;
            win[j] = src >= 0 ? *reinterpret_cast<const float4*>(x + static_cast<int64_t>(r - t + src) * x_stride + c)
                              : *reinterpret_cast<const float4*>(st + static_cast<int64_t>(K - 1 + src) * C + c);
          }
        }
        prev_seq = seq;
      }
      const float4 xv = xs[q];
      float4 acc = bv;
#pragma unroll
      for (int j = 0; j < WINDOW; ++j)
        if (j < K - 1) acc = fma4(wr[j][0], wr[j][1], wr[j][2], wr[j][3], win[j], acc);
      // the current input is tap K - 1
#pragma unroll
      for (int j = 0; j <= WINDOW; ++j)
        if (j == K - 1) acc = fma4(wr[j][0], wr[j][1], wr[j][2], wr[j][3], xv, acc);
      *reinterpret_cast<float4*>(out + static_cast<int64_t>(r) * C + c) = make_float4(silu(acc.x), silu(acc.y), silu(acc.z), silu(acc.w));
#pragma unroll
      for (int j = 0; j + 1 < WINDOW; ++j)
        if (j + 1 < K - 1) win[j] = win[j + 1];
#pragma unroll
      for (int j = 0; j < WINDOW; ++j)
        if (j == K - 2) win[j] = xv;
    }
  }
}

__global__ void conv_state_kernel(BatchView b, const float* x, int64_t x_stride, int C, int K, float* state) {
  pdl_wait();
  pdl_trigger();
  const int seq = blockIdx.x;
  const int len = b.seq_len[seq], row0 = b.seq_row0[seq];
  float* st = state + static_cast<int64_t>(b.seq_slot[seq]) * (K - 1) * C;
  for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < C; c += gridDim.y * blockDim.x) {
    float window[8];  // K - 1 <= 8
    for (int j = 0; j < K - 1; ++j) {
      const int src = len - (K - 1) + j;
      window[j] = src >= 0 ? x[static_cast<int64_t>(row0 + src) * x_stride + c] : st[static_cast<int64_t>(K - 1 + src) * C + c];
    }
    for (int j = 0; j < K - 1; ++j) st[static_cast<int64_t>(j) * C + c] = window[j];
  }
}

constexpr int STEP_MAX_WINDOW = 8;  // K - 1 state rows kept in registers

__global__ void conv1d_step_kernel(BatchView b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, float* state, float* out) {
  pdl_wait();
  pdl_trigger();
  const int seq = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int r = b.seq_row0[seq];
  float* st = state + static_cast<int64_t>(b.seq_slot[seq]) * (K - 1) * C;
  float window[STEP_MAX_WINDOW];
#pragma unroll
  for (int j = 0; j < STEP_MAX_WINDOW; ++j)
    if (j < K - 1) window[j] = st[static_cast<int64_t>(j) * C + c];
  const float xv = x[static_cast<int64_t>(r) * x_stride + c];
  float acc = bias ? bias[c] : 0.f;
#pragma unroll
  for (int j = 0; j < STEP_MAX_WINDOW; ++j)
    if (j < K - 1) acc += w[static_cast<int64_t>(c) * K + j] * window[j];
  acc += w[static_cast<int64_t>(c) * K + K - 1] * xv;
  out[static_cast<int64_t>(r) * C + c] = silu(acc);
#pragma unroll
  for (int j = 0; j + 1 < STEP_MAX_WINDOW; ++j)
    if (j + 1 < K - 1) st[static_cast<int64_t>(j) * C + c] = window[j + 1];
  if (K > 1) st[static_cast<int64_t>(K - 2) * C + c] = xv;
}

void conv1d_silu(const BatchView& b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, const float* conv_state, float* out, cudaStream_t s) {
  if (b.rows == 0) return;
  const bool aligned = (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(conv_state) | reinterpret_cast<uintptr_t>(bias)) % 16 == 0;
  if (prefill_vec_paths() && aligned && C % 4 == 0 && x_stride % 4 == 0 && K >= 1 && K - 1 <= CONV_MAX_WINDOW && b.rows > b.nseq) {
    const dim3 grid(ceil_div(b.rows, CONV_TILE_ROWS), ceil_div(C / 4, CONV_TILE_THREADS));
    if (K - 1 <= 3) launch("conv1d_silu_tiled", conv1d_tiled_kernel<3>, grid, dim3(CONV_TILE_THREADS), 0, s, b, x, x_stride, C, K, w, bias, conv_state, out);
    else launch("conv1d_silu_tiled", conv1d_tiled_kernel<CONV_MAX_WINDOW>, grid, dim3(CONV_TILE_THREADS), 0, s, b, x, x_stride, C, K, w, bias, conv_state, out);
    return;
  }
  launch("conv1d_silu", conv1d_kernel, dim3(b.rows, ceil_div(C, 256)), dim3(256), 0, s, b, x, x_stride, C, K, w, bias, conv_state, out);
}

void conv_state_update(const BatchView& b, const float* x, int64_t x_stride, int C, int K, float* conv_state, cudaStream_t s) {
  if (b.nseq == 0 || K <= 1) return;
  if (K - 1 > 8) throw Error("conv_state_update: conv_kernel > 9 is not supported");
  launch("conv_state_update", conv_state_kernel, dim3(b.nseq, ceil_div(C, 256)), dim3(256), 0, s, b, x, x_stride, C, K, conv_state);
}

void conv1d_silu_step(const BatchView& b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, float* conv_state, float* out, cudaStream_t s) {
  if (b.nseq == 0) return;
  if (b.rows != b.nseq) throw Error("conv1d_silu_step: every sequence must feed exactly one row");
  if (K < 1 || K - 1 > STEP_MAX_WINDOW) throw Error("conv1d_silu_step: conv_kernel must be in [1, 9]");
  launch("conv1d_silu_step", conv1d_step_kernel, dim3(b.nseq, ceil_div(C, 128)), dim3(128), 0, s, b, x, x_stride, C, K, w, bias, conv_state, out);
}

}  // namespace lm::cuda
