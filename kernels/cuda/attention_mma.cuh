// Internal to the attention kernels (attention.cu, attention_prefill.cu, attention_decode.cu): the
// shared constants, the tensor-core building blocks (cp.async, ldmatrix, mma.sync m16n8k16), the paged
// K/V tile loader and the online softmax, and the two flash launchers each file exports.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda::attn {


/** Sequences with at most this many rows take the decode path, one block per row. */
constexpr int DECODE_MAX_LEN = 8;
/** Keys per K/V tile in shared memory (both paths). */
constexpr int BN = 64;
/** Decode: warps per block (16 keys of each tile each) and cp.async pipeline depth. */
constexpr int DECODE_WARPS = 4;
constexpr int DECODE_STAGES = 3;
/** Decode: splits so that rows × splits reaches about this many blocks per KV head, at most MAX_SPLITS. */
constexpr int DECODE_TARGET = 512;
constexpr int MAX_SPLITS = 64;
constexpr float LOG2E = 1.4426950408889634f;

/** Splits of a decode launch: a function of the row count alone (the workspace is sized by it). */
inline int decode_splits(int rows) { return std::clamp(ceil_div(DECODE_TARGET, std::max(rows, 1)), 1, MAX_SPLITS); }

/** Raises a kernel's dynamic shared-memory limit once per process (never while a graph is captured). */
template <class Kernel>
inline void allow_smem(Kernel k, int bytes, bool& done) {
  if (done) return;
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "paged_attention: cudaFuncSetAttribute");
  done = true;
}

#ifdef __CUDACC__
// ---- tensor-core building blocks ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/** Four 8×8 bf16 matrices from shared memory; lane t gives the row address of matrix t/8, row t%8. */
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
/** The same, each matrix transposed. */
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

/** d (16×8 fp32) += a (16×16 bf16, row) · b (16×8 bf16, col). */
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/** Two floats as bf16x2: lo in the low half (the lower column). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/**
 * Issues cp.async copies of keys [key0, key0 + BN) of one KV head into K and V tiles (BN rows of
 * HD + 8 bf16: the padding keeps ldmatrix rows on distinct banks); keys at or past key_end are
 * zero-filled and never read from the cache.
 */
template <int HD, int NT>
__device__ __forceinline__ void load_kv_tile(uint32_t sk, uint32_t sv, const bf16* kc, const bf16* vc, const int* bt, int block_size, int nkv, int kvh, int key0, int key_end, int tid) {
  constexpr int CH = HD / 8, LDS = HD + 8;
  static_assert(BN * CH % NT == 0, "whole 16-byte chunks per thread");
#pragma unroll
  for (int j = 0; j < BN * CH / NT; ++j) {
    const int i = tid + j * NT, key = i / CH, ch = i % CH, pos = key0 + key;
    const bool valid = pos < key_end;
    int64_t off = 0;
    if (valid) {
      const int blk = bt[pos / block_size];
      off = ((static_cast<int64_t>(blk) * block_size + pos % block_size) * nkv + kvh) * HD + ch * 8;
    }
    const uint32_t so = (key * LDS + ch * 8) * 2;
    cp_async16(sk + so, kc + off, valid);
    cp_async16(sv + so, vc + off, valid);
  }
}

/**
 * Online softmax over one key tile for MT m-tiles of 16 rows: s holds raw scores (−inf where
 * masked) and becomes the unnormalized probabilities; m (raw running max), l (this lane's partial
 * running sum) and the accumulators o are rescaled. Lanes of a quad share rows.
 */
template <int MT, int NTILES, int DTILES>
__device__ __forceinline__ void online_softmax(float (&s)[MT][NTILES][4], float (&m)[MT][2], float (&l)[MT][2], float (&o)[MT][DTILES][4], float sl2) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = m[mt][hf];
#pragma unroll
      for (int nt = 0; nt < NTILES; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row with no unmasked key yet keeps max −inf: exponents then use 0 so that nothing is NaN.
      const float mb = (mx == -INFINITY ? 0.f : mx) * sl2;
      const float corr = exp2_approx(m[mt][hf] * sl2 - mb);
      m[mt][hf] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < NTILES; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2_approx(fmaf(s[mt][nt][2 * hf + e], sl2, -mb));
          s[mt][nt][2 * hf + e] = p;
          sum += p;
        }
      l[mt][hf] = l[mt][hf] * corr + sum;
#pragma unroll
      for (int dt = 0; dt < DTILES; ++dt) {
        o[mt][dt][2 * hf] *= corr;
        o[mt][dt][2 * hf + 1] *= corr;
      }
    }
}
#endif  // __CUDACC__

/**
 * Flash prefill of every sequence longer than DECODE_MAX_LEN rows (attention_prefill.cu). Head dim
 * 128 by variant: 0 = the warp-specialized sm_90a kernel (mma.sync on other devices), 2 = mma.sync,
 * 3 = the earlier wgmma kernel without warp roles, 4 + c = the warp-specialized kernel's config c.
 */
void flash_prefill(int hd, int variant, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s);
/**
 * The warp-specialized head-dim-128 prefill (attention_prefill_sm90.cu, sm_90a only). Config: 0 = 2
 * K/V stages, 1 = 3 stages, 2 = 2 stages with the consumer warpgroups taking turns, 3 = config 0
 * counting cycles per phase (see flash_prefill_sm90_profile), 4 = config 0 on a persistent grid
 * (one block per SM walking the items), 5 = config 4 counting cycles.
 */
void flash_prefill_sm90(int config, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s);
/**
 * Cycles summed over the config-3 and config-5 launches since the last call, then reset: consumer warpgroups'
 * thread 0 waiting for K/V [0], issuing and waiting for S [1], softmax [2], waiting for P·V [3],
 * rescaling and loop [4], whole loop [5]; producer thread 0 waiting for free stages [6], whole loop [7].
 */
void flash_prefill_sm90_profile(unsigned long long (&cycles)[8]);
/** Split-K decode of every sequence of at most DECODE_MAX_LEN rows (attention_decode.cu). */
void flash_decode(int hd, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float* ws, float sl2, cudaStream_t s);

}  // namespace lm::cuda::attn
