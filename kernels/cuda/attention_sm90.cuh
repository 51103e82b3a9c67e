// Internal to attention_prefill_sm90.cu: the Hopper building blocks of the warp-specialized flash
// prefill (mbarriers, register reallocation, named barriers, wgmma m64n128k16 from 128-byte
// swizzled shared-memory tiles). Device code only; the wgmma and setmaxnreg wrappers need sm_90a.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sm90.cuh"

namespace lm::cuda::attn::sm90 {

using namespace ::lm::cuda::sm90;
using ::lm::cuda::sm90::fence_regs;  // overloaded below

/** fence_regs for mma fragments held as 4-register groups. */
template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(d[i][e])::"memory");
}

/**
 * Shared-memory matrix descriptor in the 128-byte swizzle (16-byte chunk c of 128-byte row r at
 * chunk c ^ (r % 8), atoms of 8 rows = 1024 bytes, 1024-byte aligned). K-major (Q, K): rows of 64
 * values along K, 8-row groups sbo = 1024 bytes apart, lbo unused. MN-major (V read as B of P·V):
 * 128-byte rows hold 64 consecutive N values of one k, 8 k rows per atom, lbo = the step between
 * 64-wide N blocks, sbo = the step between 8-row k groups.
 */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr >> 4) & 0x3FFF) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) | (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

#define LM_A_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define LM_A_D16(i) LM_A_D4(i), LM_A_D4(i + 4), LM_A_D4(i + 8), LM_A_D4(i + 12)
#define LM_A_D64 LM_A_D16(0), LM_A_D16(16), LM_A_D16(32), LM_A_D16(48)
#define LM_A_REGS64                                                                                                                                                               \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, " \
  "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

/**
 * d (64×128 fp32, this warpgroup) = (accumulate ? d : 0) + A (64×16) · B (128×16)ᵀ, A and B K-major
 * in shared memory. Thread 32·warp + lane holds rows 16·warp + lane/4 (d[4j], d[4j+1]) and +8
 * (d[4j+2], d[4j+3]), columns 8·j + 2·(lane%4) and +1.
 */
__device__ __forceinline__ void wgmma_ss_m64n128(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " LM_A_REGS64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
      : LM_A_D64
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

/**
 * d (64×128 fp32) += A (64×16 bf16) · B (16×128): A in registers (per warp the mma.sync m16n8k16 A
 * fragment of its 16 rows), B MN-major (transposed) in shared memory.
 */
__device__ __forceinline__ void wgmma_rs_m64n128_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " LM_A_REGS64 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : LM_A_D64
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
#undef LM_A_D4
#undef LM_A_D16
#undef LM_A_D64
#undef LM_A_REGS64

}  // namespace lm::cuda::attn::sm90
