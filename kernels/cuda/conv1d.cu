// Causal depthwise conv1d + bias + SiLU for a mixed batch. Row r (token t of its sequence) reads the
// inputs t-K+1 .. t: from this step's rows where t-j >= 0, else from the slot's conv state (the
// previous K-1 inputs, oldest first). conv_state_update then shifts the state in a second launch,
// so no row reads a state another row already overwrote.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void conv1d_kernel(BatchView b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, const float* state, float* out) {
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

void conv1d_silu(const BatchView& b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, const float* conv_state, float* out, cudaStream_t s) {
  if (b.rows == 0) return;
  dim3 grid(b.rows, ceil_div(C, 256));
  conv1d_kernel<<<grid, 256, 0, s>>>(b, x, x_stride, C, K, w, bias, conv_state, out);
  LM_LAUNCH_CHECK("conv1d_silu");
}

void conv_state_update(const BatchView& b, const float* x, int64_t x_stride, int C, int K, float* conv_state, cudaStream_t s) {
  if (b.nseq == 0 || K <= 1) return;
  if (K - 1 > 8) throw Error("conv_state_update: conv_kernel > 9 is not supported");
  dim3 grid(b.nseq, ceil_div(C, 256));
  conv_state_kernel<<<grid, 256, 0, s>>>(b, x, x_stride, C, K, conv_state);
  LM_LAUNCH_CHECK("conv_state_update");
}

}  // namespace lm::cuda
