// Internal to the grouped expert GEMM (moe_gemm.cu, moe_gemm_wgmma.cu): the Hopper wgmma path that
// grouped_gemm takes for 64-row plan tiles with 16-byte aligned rows.
#pragma once
#include "cuda/ops.h"

namespace lm::cuda::moe_wgmma {

/** Plan tile rows the wgmma path pairs into its 128-row blocks. */
constexpr int TILE_ROWS = 64;

/** Whether grouped_gemm_wgmma takes p: 64-row plan tiles, K and lda multiples of 8, a 16-byte aligned. */
bool supported(const GroupedGemmParams& p);

/** Column tile width for N output columns: the fewest padded columns among 256, 232, 224, 192, 128, widest on ties. */
int column_tile(int N);

/** Whether grouped_gemm_wgmma takes p's weight tiles by tensor copies (w_base set and mappable, LM_CUDA_MOE_TMA not 0). */
bool takes_tma(const GroupedGemmParams& p);

/** grouped_gemm on wgmma (sm_90a); p must be supported(). */
void grouped_gemm_wgmma(const GroupedGemmParams& p, cudaStream_t s);

}  // namespace lm::cuda::moe_wgmma
