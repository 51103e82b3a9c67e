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
  SkinnyConv conv;                  // CONV instances: the conv1d epilogue of out[0]
};
constexpr int CONV_MAX_WINDOW = 3;  // conv_kernel ≤ 4 in the conv epilogue
}  // namespace

/**
 * The conv1d epilogue (CONV, skinny_gemm_conv): lane l < ROWS·MT of a warp owns output (l / MT,
 * l % MT), so the conv state, taps and bias of those outputs load before pdl_wait (weights are
 * constants; the state and the batch description come from earlier steps or earlier launches).
 */
template <int MT>
struct ConvLane {
  bool on = false;  // this lane's output is a conv input column of a real row
  int c = 0, m = 0;
  float* st = nullptr;
  float win[CONV_MAX_WINDOW], w[CONV_MAX_WINDOW + 1], bias = 0.f;

  __device__ __forceinline__ void load(const SkinnyConv& cv, int n, int m_, int M) {
    m = m_;
    c = n - cv.col0;
    on = m < M && c >= 0 && c < cv.C;
    if (!on) return;
    const int W = cv.K - 1;
    st = cv.state + static_cast<int64_t>(cv.seq_slot[m]) * W * cv.C + c;
#pragma unroll
    for (int j = 0; j < CONV_MAX_WINDOW; ++j) win[j] = j < W ? st[static_cast<int64_t>(j) * cv.C] : 0.f;
#pragma unroll
    for (int j = 0; j <= CONV_MAX_WINDOW; ++j) w[j] = j < cv.K ? cv.w[static_cast<int64_t>(c) * cv.K + j] : 0.f;
    bias = cv.bias ? cv.bias[c] : 0.f;
  }

  /** conv1d_silu_step's arithmetic on the projection's value v: the output, then the state shift. */
  __device__ __forceinline__ void finish(const SkinnyConv& cv, float v) {
    const int W = cv.K - 1;
    float acc = bias;
#pragma unroll
    for (int j = 0; j < CONV_MAX_WINDOW; ++j)
      if (j < W) acc += w[j] * win[j];
#pragma unroll
    for (int j = 0; j <= CONV_MAX_WINDOW; ++j)
      if (j == W) acc += w[j] * v;
    cv.xbc[static_cast<int64_t>(m) * cv.C + c] = silu(acc);
#pragma unroll
    for (int j = 0; j + 1 < CONV_MAX_WINDOW; ++j)
      if (j + 1 < W) st[static_cast<int64_t>(j) * cv.C] = win[j + 1];
    if (W > 0) st[static_cast<int64_t>(W - 1) * cv.C] = v;
  }
};

template <int ROWS, int MT, bool CONV>
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
  ConvLane<MT> cl;
  if (CONV && active && lane < ROWS * MT) cl.load(p.conv, n0 + lane / MT, lane % MT, p.M);
  pdl_wait();
  pdl_trigger();
  if (active) {
    const bf16* x[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) x[m] = p.x + static_cast<int64_t>(min(m, p.M - 1)) * p.K;
    float acc[ROWS][MT];
    ws.dot(w_rows, x, p.M, p.K, acc);
    if (CONV) {  // every lane holds the sums: lane l writes output (l / MT, l % MT)
      if (lane >= ROWS * MT) return;
      const int r = lane / MT, m = lane % MT;
      if (n0 + r >= N || m >= p.M) return;
      float v = 0.f;
#pragma unroll
      for (int rr = 0; rr < ROWS; ++rr)
#pragma unroll
        for (int mm = 0; mm < MT; ++mm)
          if (rr * MT + mm == lane) v = acc[rr][mm];
      if (cl.on) cl.finish(p.conv, v);
      else out.y[static_cast<int64_t>(m) * N + n0 + r] = v;
      return;
    }
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
template <int ROWS, bool CONV = false>
void launch_rows(const MultiParams& p, int blocks, cudaStream_t s) {
  const dim3 grid(blocks), block(WARPS * 32);
  const int M = p.M;
  const char* what = CONV ? "skinny_gemm_conv" : "skinny_gemm";
  if (M <= 1) launch(what, skinny_gemm_kernel<ROWS, 1, CONV>, grid, block, 0, s, p);
  else if (M <= 2) launch(what, skinny_gemm_kernel<ROWS, 2, CONV>, grid, block, 0, s, p);
  else if (M <= 4) launch(what, skinny_gemm_kernel<ROWS, 4, CONV>, grid, block, 0, s, p);
  else if (M <= 8) launch(what, skinny_gemm_kernel<ROWS, 8, CONV>, grid, block, 0, s, p);
  else launch(what, skinny_gemm_kernel<ROWS, 16, CONV>, grid, block, 0, s, p);
}
}  // namespace

bool skinny_gemm_supported(int64_t M, int64_t K, const void* x, const void* W) {
  return M >= 1 && M <= SKINNY_MAX_M && K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(W) & 15) == 0;
}

void skinny_gemm_multi(const bf16* x, int M, int K, const SkinnyOut* outs, int n, float beta, cudaStream_t s) {
  if (M == 0) return;
  if (n < 1 || n > SKINNY_MAX_OUTS) throw Error("skinny_gemm_multi: 1 to " + std::to_string(SKINNY_MAX_OUTS) + " projections, got " + std::to_string(n));
  if (!skinny_gemm_supported(M, K, x, x)) throw Error("skinny_gemm_multi: needs 1 <= M <= " + std::to_string(SKINNY_MAX_M) + ", K % 8 == 0 and a 16-byte aligned x");
  MultiParams p{x, M, K, beta, n, {}, {}, {}};
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

void skinny_gemm_conv(const bf16* x, int M, int K, const bf16* W, int N, float* y, const SkinnyConv& conv, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (!skinny_gemm_supported(M, K, x, W)) throw Error("skinny_gemm_conv: needs 1 <= M <= " + std::to_string(SKINNY_MAX_M) + ", K % 8 == 0 and 16-byte aligned x and W");
  if (conv.K < 1 || conv.K - 1 > CONV_MAX_WINDOW || conv.col0 < 0 || conv.C < 1 || conv.col0 + conv.C > N || !conv.seq_slot || !conv.xbc || !conv.state || !conv.w)
    throw Error("skinny_gemm_conv: the conv columns must lie inside the projection, conv_kernel in [1, 4], and state, taps, slots and output given");
  MultiParams p{x, M, K, 0.f, 1, {}, {}, conv};
  p.out[0] = {W, N, y, nullptr};
  p.block0[0] = 0;
  p.block0[1] = ceil_div(N, ROWS_PER_WARP * WARPS);
  launch_rows<ROWS_PER_WARP, true>(p, p.block0[1], s);
}

void skinny_gemm(const bf16* x, int M, int K, const bf16* W, int N, float* y, float beta, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  const SkinnyOut out{W, N, y, nullptr};
  skinny_gemm_multi(x, M, K, &out, 1, beta, s);
}

}  // namespace lm::cuda
