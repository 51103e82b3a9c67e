// Paged attention timings for issue 9 (run on the GPU machine; see README.md for the BENCH lines):
//   attn_prefill_8k      one sequence of 8192 tokens from position 0, GQA 32/2, head 128, causal;
//                        flops = 4·8192²·128·32 / 2, TFLOP/s
//   attn_decode_b64_8k   64 decode rows at context 8192, same heads; bytes = K+V read =
//                        64·8192·2·2·128·2, GB/s
// plus extra rows: the simple kernel on both (…_naive; the 8K prefill is extrapolated from a 2048-token
// prefill when it would take too long), the mma.sync prefill at head dim 128, decode at batch 8, and the
// device-to-device copy bandwidth (bytes read + written) as the ceiling for decode. Also prints the
// largest difference between the fast paths and the simple kernel on the same inputs, every head-dim-128
// prefill variant's time (twice, for the spread), and the warp-specialized kernel's cycles per phase.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace lm::cuda {
namespace attn {
// attention_prefill_sm90.cu: the cycle counters of the counting builds (see attention_mma.cuh).
void flash_prefill_sm90_profile(unsigned long long (&cycles)[8]);
}  // namespace attn
// attention.cu, for benchmarks: 0 = paged_attention, 1 = the simple kernel, 2 = the mma.sync prefill at head dim 128,
// 3 = the wgmma kernel without warp roles, 4 + c = the warp-specialized kernel's config c (attention_mma.cuh).
void paged_attention_variant(int variant, const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s);
}  // namespace lm::cuda

namespace {

using lm::cuda::bf16;
using lm::cuda::check;

constexpr int NQ = 32, NKV = 2, HD = 128, BLOCK = 16, CTX = 8192;

template <class T>
T* dev(const std::vector<T>& h) {
  T* p = nullptr;
  check(cudaMalloc(&p, std::max<size_t>(1, h.size()) * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

/** A step of nseq sequences of len rows each, every one at position pos, with its own shuffled blocks. */
struct Step {
  lm::cuda::BatchView view;
  int blocks = 0;
  std::vector<void*> owned;
  Step(int nseq, int len, int pos, std::mt19937& g) {
    std::vector<int> slot, row0, lens, pos0, bt0, tables, row_seq;
    const int per_seq = (pos + len + BLOCK - 1) / BLOCK;
    for (int i = 0; i < nseq; ++i) {
      slot.push_back(i);
      row0.push_back(i * len);
      lens.push_back(len);
      pos0.push_back(pos);
      bt0.push_back(i * per_seq);
      for (int t = 0; t < len; ++t) row_seq.push_back(i);
    }
    blocks = nseq * per_seq;
    tables.resize(blocks);
    std::iota(tables.begin(), tables.end(), 0);
    std::shuffle(tables.begin(), tables.end(), g);
    view.nseq = nseq;
    view.rows = nseq * len;
    view.seq_slot = keep(dev(slot));
    view.seq_row0 = keep(dev(row0));
    view.seq_len = keep(dev(lens));
    view.seq_pos0 = keep(dev(pos0));
    view.seq_bt0 = keep(dev(bt0));
    view.block_tables = keep(dev(tables));
    view.block_size = BLOCK;
    view.row_seq = keep(dev(row_seq));
    view.max_len = len;
  }
  template <class T>
  T* keep(T* p) {
    owned.push_back(p);
    return p;
  }
  ~Step() {
    for (void* p : owned) cudaFree(p);
  }
};

/** Device buffers for one step: random q, K/V caches over the step's blocks, output, workspace. */
struct Buffers {
  float* q = nullptr;
  bf16 *k = nullptr, *v = nullptr, *out = nullptr, *out_ref = nullptr;
  float* ws = nullptr;
  int64_t q_elems = 0;
  explicit Buffers(const Step& s) {
    q_elems = int64_t(s.view.rows) * NQ * HD;
    const int64_t cache = int64_t(s.blocks) * BLOCK * NKV * HD;
    check(cudaMalloc(&q, q_elems * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(&k, cache * sizeof(bf16)), "cudaMalloc");
    check(cudaMalloc(&v, cache * sizeof(bf16)), "cudaMalloc");
    check(cudaMalloc(&out, q_elems * sizeof(bf16)), "cudaMalloc");
    check(cudaMalloc(&out_ref, q_elems * sizeof(bf16)), "cudaMalloc");
    check(cudaMalloc(&ws, lm::cuda::paged_attention_workspace_floats(s.view.rows, NQ, HD) * sizeof(float)), "cudaMalloc");
    lm::cuda::fill_dummy_f32(q, q_elems, 11, -2.f, 2.f, 0, nullptr);
    lm::cuda::fill_dummy_bf16(k, cache, 12, -2.f, 2.f, nullptr);
    lm::cuda::fill_dummy_bf16(v, cache, 13, -1.f, 1.f, nullptr);
    check(cudaDeviceSynchronize(), "fill");
  }
  ~Buffers() {
    for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(out), static_cast<void*>(out_ref), static_cast<void*>(ws)}) cudaFree(p);
  }
  void run(int variant, const Step& s, bf16* dst) { lm::cuda::paged_attention_variant(variant, s.view, q, NQ, NKV, HD, k, v, dst, ws, nullptr); }
};

/** Median milliseconds of reps calls after warmup calls, each between its own pair of events. */
double time_ms(int warmup, int reps, const std::function<void()>& fn) {
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<float> t(reps);
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(e0), "cudaEventRecord");
    fn();
    check(cudaEventRecord(e1), "cudaEventRecord");
    check(cudaEventSynchronize(e1), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&t[i], e0, e1), "cudaEventElapsedTime");
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

/** Largest |a − b| over the two bf16 outputs, relative to max |b|. */
double max_rel_diff(const bf16* a, const bf16* b, int64_t n) {
  std::vector<bf16> ha(n), hb(n);
  check(cudaMemcpy(ha.data(), a, n * sizeof(bf16), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check(cudaMemcpy(hb.data(), b, n * sizeof(bf16), cudaMemcpyDeviceToHost), "cudaMemcpy");
  double scale = 1e-6, d = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(__bfloat162float(hb[i]))));
  for (int64_t i = 0; i < n; ++i) {
    const double x = std::fabs(double(__bfloat162float(ha[i])) - __bfloat162float(hb[i]));
    d = std::isnan(x) ? INFINITY : std::max(d, x);
  }
  return d / scale;
}

void bench_line(const char* key, double value, const char* unit, double ms, const char* what, double amount, const std::string& extra = "") {
  std::printf("BENCH {\"key\": \"%s\", \"value\": %.4g, \"unit\": \"%s\", \"ms\": %.5g, \"%s\": %.6g%s}\n", key, value, unit, ms, what, amount, extra.c_str());
}

void bench_prefill(std::mt19937& g) {
  const double flops = 4.0 * CTX * double(CTX) * HD * NQ / 2;
  Step s(1, CTX, 0, g);
  Buffers buf(s);
  const double ms = time_ms(3, 20, [&] { buf.run(0, s, buf.out); });
  const double ms_mma = time_ms(3, 20, [&] { buf.run(2, s, buf.out_ref); });
  std::printf("prefill 8192 tok, GQA 32/2, hd 128: default %.3f ms = %.1f TFLOP/s; mma.sync %.3f ms = %.1f TFLOP/s; the two differ by %.2e of max |out|\n", ms, flops / ms / 1e9, ms_mma,
              flops / ms_mma / 1e9, max_rel_diff(buf.out_ref, buf.out, buf.q_elems));
  bench_line("attn_prefill_8k", flops / ms / 1e9, "TFLOP/s", ms, "flops", flops);
  bench_line("attn_prefill_8k_mma_sync", flops / ms_mma / 1e9, "TFLOP/s", ms_mma, "flops", flops);
  // Every head-dim-128 prefill variant (see attention_mma.cuh), twice each for the spread.
  const char* names[] = {"wgmma, no warp roles", "sm90 2 stages", "sm90 3 stages", "sm90 2 stages ping-pong", "sm90 2 stages persistent (default)"};
  const int variants[] = {3, 4, 5, 6, 8};
  for (int i = 0; i < 5; ++i) {
    const double a = time_ms(3, 20, [&] { buf.run(variants[i], s, buf.out_ref); });
    const double b = time_ms(3, 20, [&] { buf.run(variants[i], s, buf.out_ref); });
    std::printf("prefill 8192 variant %d (%s): %.3f / %.3f ms = %.1f TFLOP/s; differs from the default by %.2e of max |out|\n", variants[i], names[i], a, b, flops / std::min(a, b) / 1e9,
                max_rel_diff(buf.out_ref, buf.out, buf.q_elems));
  }
  // Where the cycles go (the sm90 kernel's counting builds, one launch each): per block-step of
  // 128 query rows × 128 keys, averaged over both consumer warpgroups.
  int clock_khz = 0;
  check(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0), "cudaDeviceGetAttribute");
  const double steps = 32.0 * (CTX / 128) * (CTX / 128 + 1) / 2;  // Σ over row tiles of the key tiles each reads, × heads
  for (int v : {7, 9}) {
    unsigned long long c[8];
    lm::cuda::attn::flash_prefill_sm90_profile(c);  // reset
    const double ms_p = time_ms(0, 1, [&] { buf.run(v, s, buf.out_ref); });
    lm::cuda::attn::flash_prefill_sm90_profile(c);
    const double per = 2 * steps;
    std::printf("profile variant %d (%.3f ms, max clock %d MHz): per block-step %.0f cycles = wait K/V %.0f + QK issue/wait %.0f + softmax %.0f + wait PV %.0f + rescale/loop %.0f; "
                "producer waits for free stages %.0f%% of its %.0f cycles per step\n",
                v, ms_p, clock_khz / 1000, c[5] / per, c[0] / per, c[1] / per, c[2] / per, c[3] / per, c[4] / per, 100.0 * c[6] / std::max(1ull, c[7]), c[7] / steps);
  }
  // The simple kernel: first a 2048-token prefill (1/16 of the work), compared with the wgmma path.
  const int SHORT = 2048;
  const double flops_short = 4.0 * SHORT * double(SHORT) * HD * NQ / 2;
  Step s2(1, SHORT, 0, g);
  Buffers b2(s2);
  b2.run(0, s2, b2.out);
  const double ms_short = time_ms(0, 1, [&] { b2.run(1, s2, b2.out_ref); });
  std::printf("prefill 2048 tok: simple kernel %.2f ms = %.2f TFLOP/s; wgmma vs simple differ by %.2e of max |out|\n", ms_short, flops_short / ms_short / 1e9,
              max_rel_diff(b2.out, b2.out_ref, b2.q_elems));
  if (ms_short * 16 < 20000) {
    const double ms_naive = time_ms(0, 1, [&] { buf.run(1, s, buf.out_ref); });
    std::printf("prefill 8192 tok: simple kernel %.1f ms = %.2f TFLOP/s; wgmma vs simple differ by %.2e of max |out|\n", ms_naive, flops / ms_naive / 1e9, max_rel_diff(buf.out, buf.out_ref, buf.q_elems));
    bench_line("attn_prefill_8k_naive", flops / ms_naive / 1e9, "TFLOP/s", ms_naive, "flops", flops);
  } else {
    const double ms_naive = ms_short * 16;  // causal work grows with the square of the length
    bench_line("attn_prefill_8k_naive", flops / ms_naive / 1e9, "TFLOP/s", ms_naive, "flops", flops, ", \"extrapolated_from_tokens\": 2048");
  }
  check(cudaDeviceSynchronize(), "prefill");
}

void bench_decode(std::mt19937& g, int batch, bool naive) {
  const double bytes = double(batch) * CTX * NKV * 2 * HD * 2;
  Step s(batch, 1, CTX - 1, g);
  Buffers buf(s);
  const double ms = time_ms(3, 20, [&] { buf.run(0, s, buf.out); });
  const std::string key = "attn_decode_b" + std::to_string(batch) + "_8k";
  std::printf("decode b%d at context 8192, GQA 32/2, hd 128: split-K %.4f ms = %.0f GB/s of K+V", batch, ms, bytes / ms / 1e6);
  if (naive) {
    const double ms_naive = time_ms(1, 5, [&] { buf.run(1, s, buf.out_ref); });
    std::printf("; simple kernel %.4f ms = %.0f GB/s; differ by %.2e of max |out|\n", ms_naive, bytes / ms_naive / 1e6, max_rel_diff(buf.out, buf.out_ref, buf.q_elems));
    bench_line(key.c_str(), bytes / ms / 1e6, "GB/s", ms, "bytes", bytes);
    bench_line((key + "_naive").c_str(), bytes / ms_naive / 1e6, "GB/s", ms_naive, "bytes", bytes);
  } else {
    std::printf("\n");
    bench_line(key.c_str(), bytes / ms / 1e6, "GB/s", ms, "bytes", bytes);
  }
}

void bench_copy() {
  const size_t n = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, n), "cudaMalloc");
  check(cudaMalloc(&b, n), "cudaMalloc");
  check(cudaMemset(a, 1, n), "cudaMemset");
  const double ms = time_ms(2, 10, [&] { check(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, nullptr), "cudaMemcpyAsync"); });
  std::printf("device copy 1 GiB: %.3f ms = %.0f GB/s (read + write)\n", ms, 2.0 * n / ms / 1e6);
  bench_line("attn_copy_ceiling", 2.0 * n / ms / 1e6, "GB/s", ms, "bytes", 2.0 * n);
  cudaFree(a);
  cudaFree(b);
}

}  // namespace

int main() {
  try {
    std::mt19937 g(7);
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    bench_copy();
    bench_decode(g, 64, true);
    bench_decode(g, 8, false);
    bench_prefill(g);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
