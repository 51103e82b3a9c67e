// Mamba-2 SSM scan, fp32 state. Per head h (group g = h / (nheads/ngroups)), state S (P, N):
//   S_t = exp(dt_t·A) · S_{t-1} + dt_t · x_t ⊗ B_t ;   y_t = S_t · C_t + D · x_t
// ssd_chunked_scan computes the same by the chunked SSD algorithm: within a chunk of L tokens,
// with cum_l = Σ_{j≤l} dt_j·A,
//   y_l = Σ_{s≤l} (C_l·B_s) e^{cum_l − cum_s} dt_s x_s  +  e^{cum_l} C_l·S_in  +  D x_l
//   S_out = e^{cum_{L−1}} S_in + Σ_s e^{cum_{L−1} − cum_s} dt_s x_s ⊗ B_s
// which turns the scan into small matrix products (prefill), while the recurrence serves decode.
#include <vector>

#include "cpu/ops.h"

namespace lm::cpu {

void ssm_recurrent_scan(const SsmArgs& a) {
  const int64_t P = a.head_dim, N = a.dstate, heads_per_group = a.nheads / a.ngroups;
  for (int64_t h = 0; h < a.nheads; ++h) {
    const int64_t g = h / heads_per_group;
    float* S = a.state + h * P * N;
    for (int64_t t = 0; t < a.T; ++t) {
      const float dt = a.dt[t * a.nheads + h];
      const float decay = std::exp(dt * a.A[h]);
      const float* x = a.x + t * a.x_stride + h * P;
      const float* B = a.B + t * a.bc_stride + g * N;
      const float* C = a.C + t * a.bc_stride + g * N;
      float* y = a.y + t * a.nheads * P + h * P;
      for (int64_t p = 0; p < P; ++p) {
        float* Sp = S + p * N;
        const float dx = dt * x[p];
        // y_p = S_p · C in 8 interleaved partial sums (one scalar chain is latency-bound)
        float acc8[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        int64_t n = 0;
        for (; n + 8 <= N; n += 8)
          for (int64_t j = 0; j < 8; ++j) {
            Sp[n + j] = decay * Sp[n + j] + dx * B[n + j];
            acc8[j] += Sp[n + j] * C[n + j];
          }
        float acc = ((acc8[0] + acc8[4]) + (acc8[1] + acc8[5])) + ((acc8[2] + acc8[6]) + (acc8[3] + acc8[7]));
        for (; n < N; ++n) {
          Sp[n] = decay * Sp[n] + dx * B[n];
          acc += Sp[n] * C[n];
        }
        y[p] = acc + a.D[h] * x[p];
      }
    }
  }
}

void ssd_chunked_scan(const SsmArgs& a, int64_t chunk_size) {
  const int64_t P = a.head_dim, N = a.dstate, heads_per_group = a.nheads / a.ngroups;
  const int64_t L = std::max<int64_t>(1, chunk_size);
  std::vector<float> CB(static_cast<size_t>(L * L));  // (L, L): C_l · B_s for one group
  std::vector<float> cum(static_cast<size_t>(L));
  std::vector<float> Snew(static_cast<size_t>(P * N));
  for (int64_t t0 = 0; t0 < a.T; t0 += L) {
    const int64_t len = std::min(L, a.T - t0);
    for (int64_t g = 0; g < a.ngroups; ++g) {
      for (int64_t l = 0; l < len; ++l) {
        const float* C = a.C + (t0 + l) * a.bc_stride + g * N;
        for (int64_t s = 0; s <= l; ++s) {
          const float* B = a.B + (t0 + s) * a.bc_stride + g * N;
          float acc = 0.f;
          for (int64_t n = 0; n < N; ++n) acc += C[n] * B[n];
          CB[l * L + s] = acc;
        }
      }
      for (int64_t h = g * heads_per_group; h < (g + 1) * heads_per_group; ++h) {
        float* S = a.state + h * P * N;
        float run = 0.f;
        for (int64_t l = 0; l < len; ++l) {
          run += a.dt[(t0 + l) * a.nheads + h] * a.A[h];
          cum[l] = run;
        }
        for (int64_t l = 0; l < len; ++l) {
          const float* C = a.C + (t0 + l) * a.bc_stride + g * N;
          const float* xl = a.x + (t0 + l) * a.x_stride + h * P;
          float* y = a.y + (t0 + l) * a.nheads * P + h * P;
          const float e_l = std::exp(cum[l]);
          for (int64_t p = 0; p < P; ++p) {  // inter-chunk: the state entering the chunk
            const float* Sp = S + p * N;
            float acc = 0.f;
            for (int64_t n = 0; n < N; ++n) acc += C[n] * Sp[n];
            y[p] = e_l * acc + a.D[h] * xl[p];
          }
          for (int64_t s = 0; s <= l; ++s) {  // intra-chunk: the diagonal block
            const float w = CB[l * L + s] * std::exp(cum[l] - cum[s]) * a.dt[(t0 + s) * a.nheads + h];
            const float* xs = a.x + (t0 + s) * a.x_stride + h * P;
            for (int64_t p = 0; p < P; ++p) y[p] += w * xs[p];
          }
        }
        const float e_last = std::exp(cum[len - 1]);
        for (int64_t i = 0; i < P * N; ++i) Snew[i] = e_last * S[i];
        for (int64_t s = 0; s < len; ++s) {
          const float w = std::exp(cum[len - 1] - cum[s]) * a.dt[(t0 + s) * a.nheads + h];
          const float* xs = a.x + (t0 + s) * a.x_stride + h * P;
          const float* B = a.B + (t0 + s) * a.bc_stride + g * N;
          for (int64_t p = 0; p < P; ++p) {
            const float wx = w * xs[p];
            float* Sp = Snew.data() + p * N;
            for (int64_t n = 0; n < N; ++n) Sp[n] += wx * B[n];
          }
        }
        std::copy(Snew.begin(), Snew.end(), S);
      }
    }
  }
}

}  // namespace lm::cpu
