// Causal depthwise conv1d + bias + SiLU for a mixed batch. Row r (token t of its sequence) reads the
// inputs t-K+1 .. t: from this step's rows where t-j >= 0, else from the slot's conv state (the
// previous K-1 inputs, oldest first). conv_state_update then shifts the state in a second launch,
// so no row reads a state another row already overwrote. A step of one row per sequence (decode)
// does both in one launch (conv1d_silu_step): each thread owns one channel of one sequence, reads
// its K-1 state values, then writes the shifted state; the arithmetic is the two-launch path's.
#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

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
