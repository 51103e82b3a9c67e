// The Nano-shape SSD scan on Hopper wgmma without a chain between blocks (ssd_scan_wg.cu): one
// block per (sequence, head, half of the head's 64 columns) walks its sequence with the state in
// registers. Internal to ssd_chunked.cu's dispatch; the op's entry points stay in ops.h.
#pragma once

#include <cuda_runtime.h>

#include "cuda/ops.h"

namespace lm::cuda {

/** Whether ssd_scan_wg takes this problem: LM_SSD_SCAN=wg, head 64, state 128, 16-byte aligned rows, sm_90. */
bool ssd_scan_wg_fits(const SsmParams& p);

/** ssd_chunked_scan for the shapes ssd_scan_wg_fits accepts: same values (TF32 products), no workspace. */
void ssd_scan_wg(const BatchView& b, const SsmParams& p, cudaStream_t s);

/** Dev profile (LM_SSD_PROFILE=1): cycles per phase of block 0 summed since the last call, then cleared. */
void ssd_scan_wg_profile(unsigned long long (&cycles)[2][12]);

}  // namespace lm::cuda
