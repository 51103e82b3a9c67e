// Skinny projections (decode and MTP verify steps): y (M, N) fp32 = x (M, K) bf16 · W (N, K)ᵀ bf16
// (+ beta · y) for M ≤ SKINNY_MAX_M. They are weight-streaming: every byte of W is read once and
// each is used M times, so the kernel is built for bandwidth. cuBLASLt tiles N by 128 or more,
// which at decode shapes leaves most multiprocessors idle (2688 outputs = 21 tiles on 132 SMs;
// the MoE router's 128 outputs = one): measured 20× under the copy bandwidth for Nano's out_proj
// at batch 1 (kernels/dev/NOTES.md, run 13).
//
// Each warp owns ROWS consecutive output features (gemv.cuh: 16-byte loads of W, the M activation
// rows through L1, fp32 sums in a fixed order). Blocks of 4 warps give N / 8 blocks: 336 for
// N = 2688, enough to keep every SM streaming. One launch may compute up to SKINNY_MAX_OUTS
// projections of the same x (attention's q, k and v): blocks are dealt out to the projections in
// order. Epilogues: fp32 (+ beta · y), or relu(acc)² rounded to bf16 (the MLP's up projection).
// Launched with programmatic dependent launch: each warp asks L2 for its weight rows before
// waiting for the kernel that produces x.
#include "cuda/common.cuh"
#include "cuda/gemv.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {
constexpr int ROWS = 2;   // output features per warp
constexpr int WARPS = 4;  // per block
constexpr int ROWS_PER_BLOCK = ROWS * WARPS;

struct MultiParams {
  const bf16* x;
  int M, K;
  float beta;
  int n;  // projections
  SkinnyOut out[SKINNY_MAX_OUTS];
  int block0[SKINNY_MAX_OUTS + 1];  // first block of each projection; block0[n] = grid
};
}  // namespace

template <int MT>
__global__ void __launch_bounds__(WARPS * 32) skinny_gemm_kernel(MultiParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int o = 0;
  while (o + 1 < p.n && static_cast<int>(blockIdx.x) >= p.block0[o + 1]) ++o;
  const SkinnyOut& out = p.out[o];
  const int N = out.N, n0 = (static_cast<int>(blockIdx.x) - p.block0[o]) * ROWS_PER_BLOCK + warp * ROWS;
  prefetch_rows<ROWS>(out.W, n0, N, p.K);
  pdl_wait();
  pdl_trigger();
  if (n0 >= N) return;
  const bf16* w_rows[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) w_rows[r] = out.W + static_cast<int64_t>(min(n0 + r, N - 1)) * p.K;
  const bf16* x[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) x[m] = p.x + static_cast<int64_t>(min(m, p.M - 1)) * p.K;
  float acc[ROWS][MT];
  warp_dot<ROWS, MT>(w_rows, x, p.M, p.K, acc);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (n0 + r >= N) continue;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m >= p.M) continue;
      const int64_t at = static_cast<int64_t>(m) * N + n0 + r;
      if (out.y16) {
        out.y16[at] = __float2bfloat16(relu2(acc[r][m]));
      } else {
        float* y = out.y + at;
        *y = p.beta != 0.f ? acc[r][m] + p.beta * *y : acc[r][m];
      }
    }
  }
}

bool skinny_gemm_supported(int64_t M, int64_t K, const void* x, const void* W) {
  return M >= 1 && M <= SKINNY_MAX_M && K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(W) & 15) == 0;
}

void skinny_gemm_multi(const bf16* x, int M, int K, const SkinnyOut* outs, int n, float beta, cudaStream_t s) {
  if (M == 0) return;
  if (n < 1 || n > SKINNY_MAX_OUTS) throw Error("skinny_gemm_multi: 1 to " + std::to_string(SKINNY_MAX_OUTS) + " projections, got " + std::to_string(n));
  if (!skinny_gemm_supported(M, K, x, x)) throw Error("skinny_gemm_multi: needs 1 <= M <= " + std::to_string(SKINNY_MAX_M) + ", K % 8 == 0 and a 16-byte aligned x");
  MultiParams p{x, M, K, beta, n, {}, {}};
  int blocks = 0;
  for (int i = 0; i < n; ++i) {
    if ((outs[i].y == nullptr) == (outs[i].y16 == nullptr)) throw Error("skinny_gemm_multi: exactly one of y and y16 per projection");
    if ((reinterpret_cast<uintptr_t>(outs[i].W) & 15) != 0) throw Error("skinny_gemm_multi: weights must be 16-byte aligned");
    p.out[i] = outs[i];
    p.block0[i] = blocks;
    blocks += ceil_div(outs[i].N, ROWS_PER_BLOCK);
  }
  p.block0[n] = blocks;
  if (blocks == 0) return;
  const dim3 grid(blocks), block(WARPS * 32);
  if (M <= 1) launch("skinny_gemm", skinny_gemm_kernel<1>, grid, block, 0, s, p);
  else if (M <= 2) launch("skinny_gemm", skinny_gemm_kernel<2>, grid, block, 0, s, p);
  else if (M <= 4) launch("skinny_gemm", skinny_gemm_kernel<4>, grid, block, 0, s, p);
  else if (M <= 8) launch("skinny_gemm", skinny_gemm_kernel<8>, grid, block, 0, s, p);
  else launch("skinny_gemm", skinny_gemm_kernel<16>, grid, block, 0, s, p);
}

void skinny_gemm(const bf16* x, int M, int K, const bf16* W, int N, float* y, float beta, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  const SkinnyOut out{W, N, y, nullptr};
  skinny_gemm_multi(x, M, K, &out, 1, beta, s);
}

}  // namespace lm::cuda
