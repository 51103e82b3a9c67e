// 8-lane float vectors for the CPU kernels (GCC/Clang vector extensions), with the multiply-add
// spelled out: the engine builds with -ffp-contract=off, so a result never depends on whether the
// compiler chose to fuse a multiply and an add in one loop and not in another (it did differently
// across GCC versions and -march levels, which broke bitwise row independence). Where the target has
// FMA, fma8 is one fused instruction everywhere it is used; elsewhere a multiply then an add.
#pragma once

#include <cstring>
#if defined(__FMA__)
#include <immintrin.h>
#endif

namespace lm::cpu {

typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/** a·b + c per lane, fused where the target has FMA. */
inline v8 fma8(v8 a, v8 b, v8 c) {
#if defined(__FMA__)
  __m256 r = _mm256_fmadd_ps(reinterpret_cast<__m256&>(a), reinterpret_cast<__m256&>(b), reinterpret_cast<__m256&>(c));
  return reinterpret_cast<v8&>(r);
#else
  return a * b + c;
#endif
}

/** The lanes' sum in a fixed order. */
inline float lanes_sum(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

}  // namespace lm::cpu
