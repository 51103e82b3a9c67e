// The MoE router for one token row, computed by one warp (moe.cu's moe_route and the small-batch
// MoE's fused gate kernel, moe_decode.cu): cpu::moe_route's arithmetic and tie-breaking. Scores are
// sigmoid(logit) in fp32; the correction bias enters the choice only; with n_group > 1 the
// topk_group groups with the largest top-2 sums stay (ties to the lower group), the others are
// masked; then k rounds each take the largest remaining choice (ties to the lower expert). Weights
// are the chosen scores, divided by their sum (summed in pick order) when norm_topk, times scaling.
#pragma once
#include <climits>

#include "cuda/common.cuh"

namespace lm::cuda {

#ifdef __CUDACC__
/** Largest (v, i) over the warp, ties to the lower i; i == INT_MAX marks a lane with no candidate. */
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (oi != INT_MAX && (i == INT_MAX || ov > v || (ov == v && oi < i))) {
      v = ov;
      i = oi;
    }
  }
}

/**
 * Routes one row: logits (E) in global memory (read through L2, so rows other blocks of the same
 * kernel wrote before a fence are seen), s and choice: E floats of shared memory private to the
 * warp; ids and weights: the row's k outputs. n_group ≤ 64 and E a multiple of n_group.
 */
__device__ __forceinline__ void route_row_warp(const float* logits, const float* bias, int E, int n_group, int topk_group, int k, bool norm_topk, float scaling, float* s, float* choice,
                                               int32_t* ids, float* weights) {
  const int lane = threadIdx.x & 31;
  for (int e = lane; e < E; e += 32) {
    const float v = 1.f / (1.f + __expf(-__ldcg(logits + e)));
    s[e] = v;
    choice[e] = v + (bias ? bias[e] : 0.f);
  }
  __syncwarp();
  if (n_group > 1) {
    const int per = E / n_group;
    float gscore[2] = {-INFINITY, -INFINITY};  // groups lane and lane + 32
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int g = lane + 32 * h;
      if (g >= n_group) continue;
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int e = g * per; e < (g + 1) * per; ++e) {
        const float c = choice[e];
        if (c > b1) {
          b2 = b1;
          b1 = c;
        } else if (c > b2) {
          b2 = c;
        }
      }
      gscore[h] = b1 + b2;
    }
    bool kept[2] = {false, false};
    for (int t = 0; t < topk_group; ++t) {
      float bv = -INFINITY;
      int bi = INT_MAX;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int g = lane + 32 * h;
        if (g < n_group && !kept[h] && (bi == INT_MAX || gscore[h] > bv)) {
          bv = gscore[h];
          bi = g;
        }
      }
      warp_argmax(bv, bi);
      if (bi == INT_MAX) break;
      if ((bi & 31) == lane) {
        if (bi < 32) kept[0] = true;
        else kept[1] = true;
      }
    }
    const unsigned keep_lo = __ballot_sync(0xffffffffu, kept[0]), keep_hi = __ballot_sync(0xffffffffu, kept[1]);
    for (int e = lane; e < E; e += 32) {
      const int g = e / per;
      const unsigned bit = g < 32 ? (keep_lo >> g) & 1u : (keep_hi >> (g - 32)) & 1u;
      if (!bit) choice[e] = -INFINITY;
    }
    __syncwarp();
  }
  float sum = 0.f;
  for (int j = 0; j < k; ++j) {
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int e = lane; e < E; e += 32) {
      const float c = choice[e];
      if (c > bv || (c == bv && e < bi)) {
        bv = c;
        bi = e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (bi == 0x7fffffff) bi = 0;  // only NaN choices everywhere: keep the read in bounds
    const float sv = s[bi];
    sum += sv;
    if (lane == 0) {
      ids[j] = bi;
      weights[j] = sv;
    }
    __syncwarp();
    if (lane == 0) choice[bi] = -INFINITY;
    __syncwarp();
  }
  if (lane == 0)
    for (int j = 0; j < k; ++j) weights[j] = (norm_topk ? weights[j] / (sum + 1e-20f) : weights[j]) * scaling;
}
#endif  // __CUDACC__

}  // namespace lm::cuda
