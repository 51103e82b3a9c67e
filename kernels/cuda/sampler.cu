// Token sampling on the device, the same function as engine/sampler.cc (lm::sample_token):
//   greedy (temperature ≤ 0 or top_k = 1): the argmax, ties to the lower index;
//   otherwise, in rank order (logit descending, ties to the lower index), keep the top k, then the
//   shortest prefix whose softmax mass reaches top_p, and walk that prefix with
//   u = keyed_uniform(seed, position) · Σ kept p_i,  p_i = exp((l_i − max) / T)  (double),
//   returning the first token whose inclusive mass exceeds u.
// One block per sampled row. Nothing is sorted: each cut of the rank order ("the first token whose
// inclusive count / mass reaches a target") is found by a radix select over the logits' ordered
// 32-bit keys, four 8-bit passes each histogramming count or mass in shared memory, then ties on
// the exact key resolved by index. Masses are summed per bucket rather than one by one, so a draw
// that lands within rounding of a boundary may differ from the CPU's; well-separated logits give
// the same tokens.
#include <climits>

#include "cuda/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/ops.h"

namespace lm::cuda {

namespace {

constexpr int SAMPLE_THREADS = 512;
constexpr unsigned FULL_MASK = 0xffffffffu;

/** A cut of the rank order: the tokens up to and including (key, idx). */
struct Cut {
  uint32_t key;
  int idx;
};

__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
__device__ __forceinline__ bool in_cut(uint32_t k, int i, Cut c) { return k > c.key || (k == c.key && i <= c.idx); }

__device__ double keyed_uniform_dev(uint64_t seed, int64_t position) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(position) * 0xd1b54a32d192ed03ull + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

struct Shared {
  double hist[256];
  double wsum[32];
  double dscratch[32];
  float fscratch[32];
  int iscratch[32];
  int digit;
  double rest;
  int found;
  int idx;
};

/** Row statistics over the tokens of cut `member`: Σ p (mass) and the count. */
struct Ctx {
  const float* x;
  int V;
  double mx, temp;
  __device__ double mass(float l) const { return exp((static_cast<double>(l) - mx) / temp); }
};

/** Sum over the block, every thread gets the result; `scratch` holds one value per warp. */
template <class T>
__device__ T block_sum_t(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : T(0);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ double block_sum_d(double v, Shared& sh) { return block_sum_t(v, sh.dscratch); }
__device__ int block_sum_i(int v, Shared& sh) { return block_sum_t(v, sh.iscratch); }

/**
 * Argmax, ties to the lower index. Each thread visits its tokens in ascending order (16-byte loads,
 * ARGMAX_UNROLL of them in flight, where the row allows), so the result is the lowest index of the
 * maximum whatever the split.
 */
constexpr int ARGMAX_UNROLL = 8;
__device__ int block_argmax(const float* x, int V, Shared& sh) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  auto take = [&](float v, int j) {
    if (v > bv || bi == INT_MAX) {
      bv = v;
      bi = j;
    }
  };
  if ((V & 3) == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int V4 = V / 4, step = blockDim.x;
    int j = threadIdx.x;
    for (; j + (ARGMAX_UNROLL - 1) * step < V4; j += ARGMAX_UNROLL * step) {
      float4 v[ARGMAX_UNROLL];
#pragma unroll
      for (int u = 0; u < ARGMAX_UNROLL; ++u) v[u] = x4[j + u * step];
#pragma unroll
      for (int u = 0; u < ARGMAX_UNROLL; ++u) {
        const int at = 4 * (j + u * step);
        take(v[u].x, at);
        take(v[u].y, at + 1);
        take(v[u].z, at + 2);
        take(v[u].w, at + 3);
      }
    }
    for (; j < V4; j += step) {
      const float4 v = x4[j];
      take(v.x, 4 * j);
      take(v.y, 4 * j + 1);
      take(v.z, 4 * j + 2);
      take(v.w, 4 * j + 3);
    }
  } else {
    for (int j = threadIdx.x; j < V; j += blockDim.x) take(x[j], j);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
    const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
  __syncthreads();
  if (lane == 0) {
    sh.fscratch[warp] = bv;
    sh.iscratch[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const bool live = lane < static_cast<int>(blockDim.x >> 5);
    bv = live ? sh.fscratch[lane] : -INFINITY;
    bi = live ? sh.iscratch[lane] : INT_MAX;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
      const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) sh.idx = bi;
  }
  __syncthreads();
  return sh.idx;
}

/** The `nth` (1-based) token of cut `member` with key exactly `key`, in index order. */
__device__ int nth_with_key(const Ctx& c, Cut member, uint32_t key, int nth, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  int remaining = nth;
  for (int base = 0; base < c.V; base += blockDim.x) {
    const int j = base + threadIdx.x;
    const bool f = j < c.V && order_key(c.x[j]) == key && in_cut(key, j, member);
    const unsigned bal = __ballot_sync(FULL_MASK, f);
    __syncthreads();
    if (lane == 0) sh.iscratch[warp] = __popc(bal);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < nwarps; ++w) {
      if (w < warp) before += sh.iscratch[w];
      total += sh.iscratch[w];
    }
    if (f && before + __popc(bal & ((1u << lane) - 1u)) + 1 == remaining) sh.idx = j;
    if (total >= remaining) break;
    remaining -= total;
  }
  __syncthreads();
  return sh.idx;
}

/**
 * The first token of cut `member`, in rank order, whose inclusive count (by_mass false) or mass
 * reaches `target` (≥ when at_least, > otherwise). found = false when the whole cut falls short.
 */
__device__ bool block_select(const Ctx& c, Cut member, bool by_mass, double target, bool at_least, Cut* out, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    __syncthreads();
    for (int d = threadIdx.x; d < 256; d += blockDim.x) sh.hist[d] = 0.0;
    __syncthreads();
    // Runs of one digit are summed in a register first: logits share their high bits, and
    // per-token atomics on a few buckets would serialise.
    int run_digit = -1;
    double run = 0.0;
    for (int j = threadIdx.x; j < c.V; j += blockDim.x) {
      const float l = c.x[j];
      const uint32_t k = order_key(l);
      if ((k & mask) != prefix || !in_cut(k, j, member)) continue;
      const int d = static_cast<int>((k >> shift) & 255u);
      if (d != run_digit) {
        if (run_digit >= 0) atomicAdd(&sh.hist[run_digit], run);
        run_digit = d;
        run = 0.0;
      }
      run += by_mass ? c.mass(l) : 1.0;
    }
    if (run_digit >= 0) atomicAdd(&sh.hist[run_digit], run);
    __syncthreads();
    if (warp == 0) {  // lane i scans digits 255−8i down to 248−8i; exclusive prefix over lanes
      double own = 0.0;
      for (int d = 255 - 8 * lane; d > 247 - 8 * lane; --d) own += sh.hist[d];
      double incl = own;
      for (int o = 1; o < 32; o <<= 1) {
        const double u = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += u;
      }
      double before = incl - own;
      int digit = -1;
      double rest = 0.0;
      for (int d = 255 - 8 * lane; d > 247 - 8 * lane; --d) {
        const double cum = before + sh.hist[d];
        if (at_least ? cum >= target : cum > target) {
          digit = d;
          rest = target - before;
          break;
        }
        before = cum;
      }
      const unsigned hit = __ballot_sync(FULL_MASK, digit >= 0);
      if (lane == 0) sh.found = hit != 0;
      if (hit != 0 && lane == __ffs(hit) - 1) {
        sh.digit = digit;
        sh.rest = rest;
      }
    }
    __syncthreads();
    if (!sh.found) return false;
    prefix |= static_cast<uint32_t>(sh.digit) << shift;
    mask |= 255u << shift;
    target = sh.rest;
  }
  // Ties on the exact key go in index order, each weighing the same.
  const double w = by_mass ? c.mass(key_value(prefix)) : 1.0;
  int ties = 0;
  for (int j = threadIdx.x; j < c.V; j += blockDim.x) ties += order_key(c.x[j]) == prefix && in_cut(prefix, j, member);
  ties = block_sum_i(ties, sh);
  double want = at_least ? ceil(target / w) : floor(target / w) + 1.0;
  const int nth = static_cast<int>(fmin(fmax(want, 1.0), static_cast<double>(ties)));
  *out = Cut{prefix, nth_with_key(c, member, prefix, nth, sh)};
  return true;
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(const float* logits, int V, const SampleRow* rows, int32_t* out) {
  __shared__ Shared sh;
  pdl_wait();
  pdl_trigger();
  const SampleRow r = rows[blockIdx.x];
  const float* x = logits + static_cast<int64_t>(r.row) * V;
  const int best = block_argmax(x, V, sh);
  if (r.temperature <= 0.f || r.top_k == 1) {
    if (threadIdx.x == 0) out[blockIdx.x] = best;
    return;
  }
  const Ctx c{x, V, static_cast<double>(x[best]), static_cast<double>(r.temperature)};
  Cut kept{0u, INT_MAX};  // every token
  const int k = r.top_k > 0 ? min(r.top_k, V) : V;
  if (k < V) block_select(c, kept, false, k, true, &kept, sh);
  auto kept_mass = [&](Cut cut) {
    double m = 0.0;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
      if (in_cut(order_key(x[j]), j, cut)) m += c.mass(x[j]);
    return block_sum_d(m, sh);
  };
  if (r.top_p < 1.f) {
    Cut nucleus;
    if (block_select(c, kept, true, static_cast<double>(r.top_p) * kept_mass(kept), true, &nucleus, sh)) kept = nucleus;
  }
  const double total = kept_mass(kept);
  Cut pick;
  if (!block_select(c, kept, true, keyed_uniform_dev(r.seed, r.position) * total, false, &pick, sh)) {
    int n = 0;  // rounding left u past the end: the last kept token
    for (int j = threadIdx.x; j < V; j += blockDim.x) n += in_cut(order_key(x[j]), j, kept);
    n = block_sum_i(n, sh);
    block_select(c, kept, false, n, true, &pick, sh);
  }
  if (threadIdx.x == 0) out[blockIdx.x] = pick.idx;
}

}  // namespace

void sample_tokens(const float* logits, int vocab, const SampleRow* rows, int n, int32_t* tokens, cudaStream_t s) {
  if (n == 0) return;
  if (vocab < 1) throw Error("sample_tokens: vocab must be >= 1");
  launch("sample_tokens", sample_kernel, dim3(n), dim3(SAMPLE_THREADS), 0, s, logits, vocab, rows, tokens);
}

}  // namespace lm::cuda
