// Embedding gather: h[r] = float(table[tokens[r]]), one block per row.
#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void embedding_kernel(const int32_t* tokens, const bf16* table, int H, float* h) {
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x;
  const bf16* src = table + static_cast<int64_t>(tokens[r]) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) h[static_cast<int64_t>(r) * H + i] = __bfloat162float(src[i]);
}

void embedding_gather(const int32_t* tokens, int R, const bf16* table, int H, float* h, cudaStream_t s) {
  if (R == 0) return;
  launch("embedding_gather", embedding_kernel, dim3(R), dim3(256), 0, s, tokens, table, H, h);
}

}  // namespace lm::cuda
