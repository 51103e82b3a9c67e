// Mamba-2 SSM over a mixed batch, fp32 state (see cpu/ssd.cc for the math):
//   S_t = exp(dt_t·A) · S_{t-1} + dt_t · x_t ⊗ B_t ;   y_t = S_t · C_t + D · x_t
// One block per (sequence, head) keeps the head's state (P × N) in shared memory across the
// sequence's tokens; each warp owns rows p and its lanes stride over the state dimension n.
// This recurrent form serves decode and short sequences (≤ SSM_RECURRENT_MAX_LEN rows: MTP verify
// steps); longer prefill goes through the chunked SSD kernel (ssd_chunked.cu) where the shape
// allows, with the same results to rounding.
#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

__global__ void ssm_scan_kernel(BatchView b, SsmParams p, bool short_only) {
  extern __shared__ float smem[];
  const int seq = blockIdx.x, h = blockIdx.y;
  if (short_only && b.seq_len[seq] > SSM_RECURRENT_MAX_LEN) return;
  const int P = p.head_dim, N = p.dstate;
  const int g = h / (p.nheads / p.ngroups);
  float* S = smem;              // (P, N)
  float* xs = S + P * N;        // (P)
  float* Bs = xs + P;           // (N)
  float* Cs = Bs + N;           // (N)
  __shared__ float dt_s;
  const int slot = b.seq_slot[seq], row0 = b.seq_row0[seq], len = b.seq_len[seq];
  float* gstate = p.state + (static_cast<int64_t>(slot) * p.nheads + h) * P * N;
  for (int i = threadIdx.x; i < P * N; i += blockDim.x) S[i] = gstate[i];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int I = p.nheads * P;
  for (int t = 0; t < len; ++t) {
    const int64_t r = row0 + t;
    const float* row = p.xbc + r * p.xbc_stride;
    __syncthreads();
    for (int i = threadIdx.x; i < P; i += blockDim.x) xs[i] = row[h * P + i];
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
      Bs[i] = row[I + g * N + i];
      Cs[i] = row[I + p.ngroups * N + g * N + i];
    }
    if (threadIdx.x == 0) {
      const float d = softplus(p.dt_raw[r * p.dt_stride + h] + p.dt_bias[h]);
      dt_s = fminf(fmaxf(d, p.dt_min), p.dt_max);
    }
    __syncthreads();
    const float dt = dt_s, decay = __expf(dt * p.A[h]);
    for (int pp = warp; pp < P; pp += nwarps) {
      const float dx = dt * xs[pp];
      float acc = 0.f;
      for (int n = lane; n < N; n += 32) {
        const float v = decay * S[pp * N + n] + dx * Bs[n];
        S[pp * N + n] = v;
        acc += v * Cs[n];
      }
      acc = warp_sum(acc);
      if (lane == 0) p.y[r * I + h * P + pp] = acc + p.D[h] * xs[pp];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < P * N; i += blockDim.x) gstate[i] = S[i];
}

// The selective state update for short sequences (decode, MTP verify and its replay): each warp
// owns ROWS consecutive state rows p of one (sequence, head), each row's N values in registers
// across the sequence's tokens (lane-strided float4s, CHUNKS per lane per row). All of a warp's
// state loads are issued before the first use, so each thread keeps ROWS·CHUNKS 16-byte loads in
// flight: a streaming kernel that reads and writes the state once (evict-first, it is not reread
// this step) and whose x/B/C/dt loads are shared by the warp's rows. The state update is the same
// elementwise arithmetic as above; y sums its N products in another order (lanes own 4
// consecutive n).
// Row blocks of one (sequence, head) go to consecutive blocks (ROWS_FAST), so the resident blocks
// stream contiguous state. H100, Nano heads, two harness runs (fraction of copy at b32 / b256):
//   sequences fastest, 4 warps × 4 rows  0.73-0.83 / 0.88
//   rows fastest,      4 warps × 4 rows  0.80-0.86 / 0.95
//   rows fastest,      8 warps × 4 rows  0.84-0.86 / 0.94-0.95
//   rows fastest,      8 warps × 2 rows  0.867-0.873 / 0.93-0.94   (taken: steadiest at b32)
constexpr int UPDATE_WARPS = 8;
constexpr int UPDATE_ROWS = 2;
constexpr int UPDATE_MAX_CHUNKS = 4;  // N ≤ 512
constexpr bool UPDATE_ROWS_FAST = true;

template <int CHUNKS, int ROWS, int WARPS, bool ROWS_FAST>
__global__ void __launch_bounds__(WARPS * 32) ssm_update_kernel(BatchView b, SsmParams p, int max_len) {
  // ROWS_FAST: consecutive blocks take consecutive row blocks of one (sequence, head), so the
  // blocks resident at once stream contiguous state; else consecutive sequences.
  const int seq = ROWS_FAST ? blockIdx.z : blockIdx.x, h = blockIdx.y, zb = ROWS_FAST ? blockIdx.x : blockIdx.z;
  const int lane = threadIdx.x & 31, p0 = (zb * WARPS + (threadIdx.x >> 5)) * ROWS;
  const int P = p.head_dim, N = p.dstate, N4 = N / 4;
  // The state rows and per-head constants load before waiting for the kernel before (programmatic
  // dependent launch): no kernel of this step writes them before this one (the batch description
  // and the slot's state come from earlier steps, or from copies and kernels at least two launches
  // back, complete once the kernel before has passed its own wait).
  const int len = b.seq_len[seq];
  const bool active = p0 < P && len <= max_len && len > 0;
  const int g = h / (p.nheads / p.ngroups), row0 = b.seq_row0[seq], I = p.nheads * P;
  float4* st = reinterpret_cast<float4*>(p.state + ((static_cast<int64_t>(b.seq_slot[seq]) * p.nheads + h) * P + p0) * N);
  float4 S[ROWS][CHUNKS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
      if (active && p0 + r < P && c * 32 + lane < N4) S[r][c] = __ldcs(st + r * N4 + c * 32 + lane);
  const float A = p.A[h], Dh = p.D[h], bias = p.dt_bias[h];
  pdl_wait();
  pdl_trigger();
  if (!active) return;
  for (int t = 0; t < len; ++t) {
    const int64_t r = row0 + t;
    const float* row = p.xbc + r * p.xbc_stride;
    const float dt = fminf(fmaxf(softplus(p.dt_raw[r * p.dt_stride + h] + bias), p.dt_min), p.dt_max);
    const float decay = __expf(dt * A);
    const float4* B4 = reinterpret_cast<const float4*>(row + I + g * N);
    const float4* C4 = reinterpret_cast<const float4*>(row + I + p.ngroups * N + g * N);
    float4 Bv[CHUNKS], Cv[CHUNKS];
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
      if (c * 32 + lane < N4) {
        Bv[c] = B4[c * 32 + lane];
        Cv[c] = C4[c * 32 + lane];
      }
    float x[ROWS], acc[ROWS];
#pragma unroll
    for (int rr = 0; rr < ROWS; ++rr) {
      x[rr] = p0 + rr < P ? row[h * P + p0 + rr] : 0.f;
      const float dx = dt * x[rr];
      acc[rr] = 0.f;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) {
        if (c * 32 + lane >= N4) continue;
        float4& v = S[rr][c];
        v.x = decay * v.x + dx * Bv[c].x;
        v.y = decay * v.y + dx * Bv[c].y;
        v.z = decay * v.z + dx * Bv[c].z;
        v.w = decay * v.w + dx * Bv[c].w;
        acc[rr] += v.x * Cv[c].x + v.y * Cv[c].y + v.z * Cv[c].z + v.w * Cv[c].w;
      }
    }
#pragma unroll
    for (int rr = 0; rr < ROWS; ++rr) {
      const float sum = warp_sum(acc[rr]);
      if (lane == rr && p0 + rr < P) p.y[r * I + h * P + p0 + rr] = sum + Dh * x[rr];
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
      if (p0 + r < P && c * 32 + lane < N4) __stcs(st + r * N4 + c * 32 + lane, S[r][c]);
}

static bool update_kernel_fits(const SsmParams& p) {
  // 16-byte rows: N and the offsets of B, C within a row (I, ngroups·N) and the row stride in float4s
  return p.dstate % 4 == 0 && p.dstate <= 128 * UPDATE_MAX_CHUNKS && (p.nheads * p.head_dim) % 4 == 0 && p.xbc_stride % 4 == 0 &&
         (reinterpret_cast<uintptr_t>(p.xbc) & 15) == 0 && (reinterpret_cast<uintptr_t>(p.state) & 15) == 0;
}

template <int ROWS, int WARPS = UPDATE_WARPS, bool ROWS_FAST = UPDATE_ROWS_FAST>
static void launch_update(const BatchView& b, const SsmParams& p, cudaStream_t s) {
  const int zb = (p.head_dim + WARPS * ROWS - 1) / (WARPS * ROWS);
  if (ROWS_FAST && b.nseq > 65535) {  // grid z limit: sequences go on x
    launch_update<ROWS, WARPS, false>(b, p, s);
    return;
  }
  const dim3 grid = ROWS_FAST ? dim3(zb, p.nheads, b.nseq) : dim3(b.nseq, p.nheads, zb);
  const dim3 block(WARPS * 32);
  const int max_len = SSM_RECURRENT_MAX_LEN;
  switch ((p.dstate + 127) / 128) {
    case 1: launch("ssm_scan (update)", ssm_update_kernel<1, ROWS, WARPS, ROWS_FAST>, grid, block, 0, s, b, p, max_len); break;
    case 2: launch("ssm_scan (update)", ssm_update_kernel<2, ROWS, WARPS, ROWS_FAST>, grid, block, 0, s, b, p, max_len); break;
    case 3: launch("ssm_scan (update)", ssm_update_kernel<3, ROWS, WARPS, ROWS_FAST>, grid, block, 0, s, b, p, max_len); break;
    default: launch("ssm_scan (update)", ssm_update_kernel<4, ROWS, WARPS, ROWS_FAST>, grid, block, 0, s, b, p, max_len); break;
  }
}

void ssm_scan(const BatchView& b, const SsmParams& p, cudaStream_t s, bool short_only) {
  if (b.nseq == 0) return;
  if ((short_only || b.max_len <= SSM_RECURRENT_MAX_LEN) && update_kernel_fits(p)) {
    launch_update<UPDATE_ROWS>(b, p, s);
    return;
  }
  const size_t smem = static_cast<size_t>(p.head_dim * p.dstate + p.head_dim + 2 * p.dstate) * sizeof(float);
  if (smem > 200 * 1024) throw Error("ssm_scan: head_dim x ssm_state_size too large for shared memory");
  // Raised once, to the largest size seen: no attribute call while a decode graph is being captured.
  static size_t configured = 48 * 1024;
  if (smem > configured) {
    LM_CUDA_CHECK(cudaFuncSetAttribute(ssm_scan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    configured = smem;
  }
  dim3 grid(b.nseq, p.nheads);
  ssm_scan_kernel<<<grid, 256, smem, s>>>(b, p, short_only);
  LM_LAUNCH_CHECK("ssm_scan");
}

}  // namespace lm::cuda
