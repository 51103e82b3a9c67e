// Mamba-2 SSM over a mixed batch, fp32 state (see cpu/ssd.cc for the math):
//   S_t = exp(dt_t·A) · S_{t-1} + dt_t · x_t ⊗ B_t ;   y_t = S_t · C_t + D · x_t
// One block per (sequence, head) keeps the head's state (P × N) in shared memory across the
// sequence's tokens; each warp owns rows p and its lanes stride over the state dimension n.
// This recurrent form serves decode and short sequences (≤ SSM_RECURRENT_MAX_LEN rows: MTP verify
// steps); longer prefill goes through the chunked SSD kernel (ssd_chunked.cu) where the shape
// allows, with the same results to rounding.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void ssm_scan_kernel(BatchView b, SsmParams p, bool short_only) {
  extern __shared__ float smem[];
  const int seq = blockIdx.x, h = blockIdx.y;
  if (short_only && b.seq_len[seq] > SSM_RECURRENT_MAX_LEN) return;
  const int P = p.head_dim, N = p.dstate;
  const int g = h / (p.nheads / p.ngroups);
  float* S = smem;              // (P, N)
  float* xs = S + P * N;        // (P)
  float* Bs = xs + P;           // (N)
  float* Cs = Bs + N;           // (N)
  __shared__ float dt_s;
  const int slot = b.seq_slot[seq], row0 = b.seq_row0[seq], len = b.seq_len[seq];
  float* gstate = p.state + (static_cast<int64_t>(slot) * p.nheads + h) * P * N;
  for (int i = threadIdx.x; i < P * N; i += blockDim.x) S[i] = gstate[i];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int I = p.nheads * P;
  for (int t = 0; t < len; ++t) {
    const int64_t r = row0 + t;
    const float* row = p.xbc + r * p.xbc_stride;
    __syncthreads();
    for (int i = threadIdx.x; i < P; i += blockDim.x) xs[i] = row[h * P + i];
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
      Bs[i] = row[I + g * N + i];
      Cs[i] = row[I + p.ngroups * N + g * N + i];
    }
    if (threadIdx.x == 0) {
      const float d = softplus(p.dt_raw[r * p.dt_stride + h] + p.dt_bias[h]);
      dt_s = fminf(fmaxf(d, p.dt_min), p.dt_max);
    }
    __syncthreads();
    const float dt = dt_s, decay = __expf(dt * p.A[h]);
    for (int pp = warp; pp < P; pp += nwarps) {
      const float dx = dt * xs[pp];
      float acc = 0.f;
      for (int n = lane; n < N; n += 32) {
        const float v = decay * S[pp * N + n] + dx * Bs[n];
        S[pp * N + n] = v;
        acc += v * Cs[n];
      }
      acc = warp_sum(acc);
      if (lane == 0) p.y[r * I + h * P + pp] = acc + p.D[h] * xs[pp];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < P * N; i += blockDim.x) gstate[i] = S[i];
}

void ssm_scan(const BatchView& b, const SsmParams& p, cudaStream_t s, bool short_only) {
  if (b.nseq == 0) return;
  const size_t smem = static_cast<size_t>(p.head_dim * p.dstate + p.head_dim + 2 * p.dstate) * sizeof(float);
  if (smem > 200 * 1024) throw Error("ssm_scan: head_dim x ssm_state_size too large for shared memory");
  // Raised once, to the largest size seen: no attribute call while a decode graph is being captured.
  static size_t configured = 48 * 1024;
  if (smem > configured) {
    LM_CUDA_CHECK(cudaFuncSetAttribute(ssm_scan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    configured = smem;
  }
  dim3 grid(b.nseq, p.nheads);
  ssm_scan_kernel<<<grid, 256, smem, s>>>(b, p, short_only);
  LM_LAUNCH_CHECK("ssm_scan");
}

}  // namespace lm::cuda
