// Holding a stream while the host enqueues a step (per-component profiling, cuda_engine.cc): one
// thread spins until the host sets a flag in mapped pinned memory, or a timeout passes (so a host
// that blocks on a full launch queue, or on a synchronising call, only costs the timeout). The GPU
// then runs the step's kernels back to back, and events between components time the kernels, not
// the host's launch overhead.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void hold_kernel(const volatile int* flag, int64_t timeout_ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  while (*flag == 0) {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (static_cast<int64_t>(t - t0) > timeout_ns) break;
  }
}

void hold_stream(const int* flag, int64_t timeout_ns, cudaStream_t s) {
  hold_kernel<<<1, 1, 0, s>>>(flag, timeout_ns);
  LM_LAUNCH_CHECK("hold_stream");
}

}  // namespace lm::cuda
