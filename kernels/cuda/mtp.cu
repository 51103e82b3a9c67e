// Kernels of MTP speculation on the CUDA backend (kernels/cuda/cuda_engine.cc): the MTP head's input
// rows, row gathers and scatters between the main model's hidden states, the head's passes and the
// per-slot hidden store, and the Mamba state snapshot a verify step restores on rejection.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

// out row r = [enorm-rmsnorm(embed[tokens[r]]) ; hnorm-rmsnorm(hidden[r])] in bf16, fp32 math.
__global__ void mtp_input_kernel(const int32_t* tokens, const bf16* hidden, const bf16* embed, const float* enorm, const float* hnorm, int H, float eps, bf16* out) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const bf16* e = embed + static_cast<int64_t>(tokens[r]) * H;
  const bf16* x = hidden + r * H;
  float se = 0.f, sx = 0.f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float a = __bfloat162float(e[i]), b = __bfloat162float(x[i]);
    se += a * a;
    sx += b * b;
  }
  se = block_sum(se, scratch);
  sx = block_sum(sx, scratch);
  const float ie = rsqrtf(se / H + eps), ix = rsqrtf(sx / H + eps);
  bf16* o = out + r * 2 * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    o[i] = __float2bfloat16(enorm[i] * (__bfloat162float(e[i]) * ie));
    o[H + i] = __float2bfloat16(hnorm[i] * (__bfloat162float(x[i]) * ix));
  }
}

void mtp_input(const int32_t* tokens, const bf16* hidden, int R, const bf16* embed, const float* enorm, const float* hnorm, int H, float eps, bf16* out, cudaStream_t s) {
  if (R == 0) return;
  mtp_input_kernel<<<R, 256, 0, s>>>(tokens, hidden, embed, enorm, hnorm, H, eps, out);
  LM_LAUNCH_CHECK("mtp_input");
}

__global__ void move_rows_bf16_kernel(const bf16* src, const int32_t* src_idx, const int32_t* dst_idx, int D, bf16* dst) {
  const int64_t i = blockIdx.x, from = src_idx ? src_idx[i] : i, to = dst_idx ? dst_idx[i] : i;
  for (int d = threadIdx.x; d < D; d += blockDim.x) dst[to * D + d] = src[from * D + d];
}

void move_rows_bf16(const bf16* src, const int32_t* src_idx, const int32_t* dst_idx, int M, int D, bf16* dst, cudaStream_t s) {
  if (M == 0) return;
  move_rows_bf16_kernel<<<M, 256, 0, s>>>(src, src_idx, dst_idx, D, dst);
  LM_LAUNCH_CHECK("move_rows_bf16");
}

__global__ void gather_rows_f32_kernel(const float* src, int64_t ld, const int32_t* idx, int D, float* dst) {
  const int64_t i = blockIdx.x, from = idx[i];
  for (int d = threadIdx.x; d < D; d += blockDim.x) dst[i * D + d] = src[from * ld + d];
}

void gather_rows_f32(const float* src, int64_t ld, const int32_t* idx, int M, int D, float* dst, cudaStream_t s) {
  if (M == 0) return;
  gather_rows_f32_kernel<<<M, 256, 0, s>>>(src, ld, idx, D, dst);
  LM_LAUNCH_CHECK("gather_rows_f32");
}

__global__ void gather_ints_kernel(const int32_t* src, const int32_t* idx, int n, int32_t* dst) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[idx[i]];
}

void gather_ints(const int32_t* src, const int32_t* idx, int n, int32_t* dst, cudaStream_t s) {
  if (n == 0) return;
  gather_ints_kernel<<<ceil_div(n, 256), 256, 0, s>>>(src, idx, n, dst);
  LM_LAUNCH_CHECK("gather_ints");
}

// pairs (slot, snapshot index) per entry; grid (entries × layers, chunks of the state).
__global__ void slot_states_kernel(float* state, int slots_per_layer, int layers, int64_t size, const int32_t* slots, const int32_t* snap, float* snapshot, bool restore) {
  const int entry = blockIdx.x / layers, l = blockIdx.x % layers;
  float* live = state + (static_cast<int64_t>(l) * slots_per_layer + slots[entry]) * size;
  float* saved = snapshot + (static_cast<int64_t>(snap[entry]) * layers + l) * size;
  const int64_t per = (size + gridDim.y - 1) / gridDim.y, lo = blockIdx.y * per, hi = min(size, lo + per);
  if ((size & 3) == 0 && (per & 3) == 0) {  // 16-byte moves (the state arrays are 256-byte aligned)
    for (int64_t i = lo + 4 * threadIdx.x; i < hi; i += 4 * blockDim.x) {
      if (restore) *reinterpret_cast<float4*>(live + i) = *reinterpret_cast<const float4*>(saved + i);
      else *reinterpret_cast<float4*>(saved + i) = *reinterpret_cast<const float4*>(live + i);
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      if (restore) live[i] = saved[i];
      else saved[i] = live[i];
    }
  }
}

void slot_states(float* state, int slots_per_layer, int layers, int64_t size, const int32_t* slots, const int32_t* snap, int n, float* snapshot, bool restore, cudaStream_t s) {
  if (n == 0 || layers == 0 || size == 0) return;
  const int64_t want = (size + 4095) / 4096;
  const int chunks = static_cast<int>(want < 64 ? want : 64);
  slot_states_kernel<<<dim3(n * layers, chunks), 256, 0, s>>>(state, slots_per_layer, layers, size, slots, snap, snapshot, restore);
  LM_LAUNCH_CHECK("slot_states");
}

}  // namespace lm::cuda
