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
// Launched with programmatic dependent launch: each warp issues its first weight loads before
// waiting for the kernel that produces x.
#include "cuda/common.cuh"
#include "cuda/gemv.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {
constexpr int ROWS_PER_WARP = 2;  // output features per warp: 2 beat 1 and 4 at batch 1 and 8 on the H100
constexpr int WARPS = 4;          // per block

struct MultiParams {
  const bf16* x;
  int M, K;
  float beta;
  int n;  // projections
  SkinnyOut out[SKINNY_MAX_OUTS];
  int block0[SKINNY_MAX_OUTS + 1];  // first block of each projection; block0[n] = grid
};
}  // namespace

template <int ROWS, int MT>
__global__ void __launch_bounds__(WARPS * 32) skinny_gemm_kernel(MultiParams p) {
  constexpr int ROWS_PER_BLOCK = ROWS * WARPS;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int o = 0;
  while (o + 1 < p.n && static_cast<int>(blockIdx.x) >= p.block0[o + 1]) ++o;
  const SkinnyOut& out = p.out[o];
  const int N = out.N, n0 = (static_cast<int>(blockIdx.x) - p.block0[o]) * ROWS_PER_BLOCK + warp * ROWS;
  const bool active = n0 < N;
  const bf16* w_rows[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) w_rows[r] = out.W + static_cast<int64_t>(min(n0 + r, N - 1)) * p.K;
  WeightStream<ROWS, MT> ws;
  if (active) ws.preload(w_rows, p.K);
  pdl_wait();
  pdl_trigger();
  if (active) {
    const bf16* x[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) x[m] = p.x + static_cast<int64_t>(min(m, p.M - 1)) * p.K;
    float acc[ROWS][MT];
    ws.dot(w_rows, x, p.M, p.K, acc);
    if (lane == 0) {
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
  }
}

namespace {
template <int ROWS>
void launch_rows(const MultiParams& p, int blocks, cudaStream_t s) {
  const dim3 grid(blocks), block(WARPS * 32);
  const int M = p.M;
  if (M <= 1) launch("skinny_gemm", skinny_gemm_kernel<ROWS, 1>, grid, block, 0, s, p);
  else if (M <= 2) launch("skinny_gemm", skinny_gemm_kernel<ROWS, 2>, grid, block, 0, s, p);
  else if (M <= 4) launch("skinny_gemm", skinny_gemm_kernel<ROWS, 4>, grid, block, 0, s, p);
  else if (M <= 8) launch("skinny_gemm", skinny_gemm_kernel<ROWS, 8>, grid, block, 0, s, p);
  else launch("skinny_gemm", skinny_gemm_kernel<ROWS, 16>, grid, block, 0, s, p);
}
}  // namespace

bool skinny_gemm_supported(int64_t M, int64_t K, const void* x, const void* W) {
  return M >= 1 && M <= SKINNY_MAX_M && K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(W) & 15) == 0;
}

void skinny_gemm_multi(const bf16* x, int M, int K, const SkinnyOut* outs, int n, float beta, cudaStream_t s) {
  if (M == 0) return;
  if (n < 1 || n > SKINNY_MAX_OUTS) throw Error("skinny_gemm_multi: 1 to " + std::to_string(SKINNY_MAX_OUTS) + " projections, got " + std::to_string(n));
  if (!skinny_gemm_supported(M, K, x, x)) throw Error("skinny_gemm_multi: needs 1 <= M <= " + std::to_string(SKINNY_MAX_M) + ", K % 8 == 0 and a 16-byte aligned x");
  MultiParams p{x, M, K, beta, n, {}, {}};
  const int rows = ROWS_PER_WARP;
  int blocks = 0;
  for (int i = 0; i < n; ++i) {
    if ((outs[i].y == nullptr) == (outs[i].y16 == nullptr)) throw Error("skinny_gemm_multi: exactly one of y and y16 per projection");
    if ((reinterpret_cast<uintptr_t>(outs[i].W) & 15) != 0) throw Error("skinny_gemm_multi: weights must be 16-byte aligned");
    p.out[i] = outs[i];
    p.block0[i] = blocks;
    blocks += ceil_div(outs[i].N, rows * WARPS);
  }
  p.block0[n] = blocks;
  if (blocks == 0) return;
  launch_rows<ROWS_PER_WARP>(p, blocks, s);
}

void skinny_gemm(const bf16* x, int M, int K, const bf16* W, int N, float* y, float beta, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  const SkinnyOut out{W, N, y, nullptr};
  skinny_gemm_multi(x, M, K, &out, 1, beta, s);
}

}  // namespace lm::cuda
