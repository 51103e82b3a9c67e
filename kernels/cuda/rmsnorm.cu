// RMSNorm of fp32 rows into bf16: out = w * x / sqrt(mean(x²) + eps), fp32 math, one block per row.
// `rows` optionally gathers (the final norm runs only on the rows whose logits are needed).
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void rmsnorm_kernel(const float* h, const int32_t* rows, int H, const float* w, float eps, bf16* out) {
  __shared__ float scratch[32];
  const int64_t src = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* x = h + src * H;
  float ss = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / H + eps);
  bf16* o = out + static_cast<int64_t>(blockIdx.x) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = __float2bfloat16(w[i] * (x[i] * inv));
}

void rmsnorm_bf16(const float* h, const int32_t* rows, int R, int H, const float* w, float eps, bf16* out, cudaStream_t s) {
  if (R == 0) return;
  // Few rows (decode): 1024 threads, so each thread's loads are few and issued together; the
  // 256-thread blocks of prefill leave a single decode row latency-bound on 11 serial loads.
  rmsnorm_kernel<<<R, R < 128 ? 1024 : 256, 0, s>>>(h, rows, H, w, eps, out);
  LM_LAUNCH_CHECK("rmsnorm_bf16");
}

}  // namespace lm::cuda
