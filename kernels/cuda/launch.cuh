// Programmatic dependent launch (PDL, sm_90) for the decode path's kernels. A kernel launched with
// launch() may start while the kernel before it in the stream is still running: its blocks run a
// prologue that reads only constant data (weights, norm gains: the first loads of the weight rows
// it will stream), then pdl_wait() blocks until every earlier kernel has finished and its
// writes are visible. pdl_trigger() lets the next kernel launch before this one ends.
//
// Rules every kernel launched with launch() follows:
//   - every block executes pdl_wait() before it exits and before it reads anything its
//     predecessor (the launch right before it in the stream) writes, or writes anything an earlier
//     kernel reads (a block that skipped it could let a later kernel overtake an unfinished one);
//   - pdl_trigger() only after pdl_wait(), so a kernel launched early can rely on everything
//     before its predecessor being complete: data written two or more launches back (weights,
//     the batch description, the state of earlier steps) may be read before pdl_wait(); each
//     kernel that does so says which.
// Without the launch attribute (set_programmatic_launch(false), or a predecessor that is not a
// kernel) both instructions return at once and the launch is an ordinary stream-ordered one.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "cuda/common.cuh"

namespace lm::cuda {

/** Whether launch() asks for programmatic stream serialization (one switch per process). */
inline bool& programmatic_launch_flag() {
  static bool on = true;
  return on;
}

#ifdef __CUDACC__
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

/** Launches `kernel` on `s`, allowed to overlap its predecessor's tail (see the rules above); checks the launch. */
template <class... Params, class... Args>
void launch(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = programmatic_launch_flag() && s != nullptr ? 1 : 0;  // the legacy default stream launches plainly
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), what);
  check(cudaGetLastError(), what);
}
#endif  // __CUDACC__

}  // namespace lm::cuda
