// Kernel benchmarks of issue 9 on the Nemotron 3 Nano shapes, one `BENCH {json}` line per case
// (format: kernels/bench/README.md) for bench/kernels.ts, which computes the ratios:
//   ceiling_copy, ceiling_matmul  the ceilings as the engine benchmark measures them (lm::measure_roofline)
//   ssd_scan_8k   chunked SSD scan, 64 heads × 64 head_dim × 128 state, 8 groups, chunk 128, one
//                 8192-token sequence: tokens/s per layer (target 3e7)
//   ssu_b32, ssu_b256  selective state update (ssm_scan over B single-token sequences): bytes = the
//                 fp32 state read + written; GB/s (target 80 % of copy bandwidth)
//   moe_gemm_8k, moe_gemm_64k  grouped expert up projection with relu² (2688 → 1856, 128 experts)
//                 over 8,192 / 65,536 routed token-slots, every expert holding the same number
//                 (the shape torch._grouped_mm is timed on); bytes = all expert weights, flops = 2·M·N·K
// Inputs are random (never zeros) and rotate among several buffers where one set would sit in L2.
// Each time is the median of per-call cudaEvent timings after two warm-up calls.
#include <algorithm>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "engine.h"

namespace {

using lm::cuda::bf16;
using lm::cuda::check;

template <class T>
T* dev_alloc(int64_t n) {
  T* p = nullptr;
  check(cudaMalloc(&p, std::max<int64_t>(1, n) * sizeof(T)), "cudaMalloc");
  return p;
}
template <class T>
T* dev_copy(const std::vector<T>& h) {
  T* p = dev_alloc<T>(static_cast<int64_t>(h.size()));
  check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}
float* dev_uniform(int64_t n, uint64_t seed, float lo, float hi) {
  float* p = dev_alloc<float>(n);
  lm::cuda::fill_dummy_f32(p, n, seed, lo, hi, 0, nullptr);
  return p;
}

/** Median milliseconds of `reps` calls of fn(rep), each between two events, after two warm-up calls. */
template <class F>
double median_ms(int reps, F&& fn, const std::function<void(int, double)>& each = {}) {
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  fn(0);
  fn(1);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(e0), "cudaEventRecord");
    fn(i);
    check(cudaEventRecord(e1), "cudaEventRecord");
    check(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float t = 0.f;
    check(cudaEventElapsedTime(&t, e0, e1), "cudaEventElapsedTime");
    ms.push_back(t);
    if (each) each(i, t);
  }
  check(cudaGetLastError(), "benchmark launches");
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

/** One `BENCH {json}` line; bytes / flops are left out when zero. */
void bench_line(const std::string& key, double value, const char* unit, double ms, double bytes, double flops, const std::string& extra = "") {
  std::printf("BENCH {\"key\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", \"ms\": %.6g", key.c_str(), value, unit, ms);
  if (bytes > 0) std::printf(", \"bytes\": %.6g", bytes);
  if (flops > 0) std::printf(", \"flops\": %.6g", flops);
  if (!extra.empty()) std::printf(", %s", extra.c_str());
  std::printf("}\n");
  std::fflush(stdout);
}

/** A batch of sequences on the device: lengths, positions and slots given per sequence. */
struct DeviceBatch {
  lm::cuda::BatchView view;
  DeviceBatch(const std::vector<int>& lens, const std::vector<int>& pos, const std::vector<int>& slots) {
    std::vector<int> row0, bt0, tables, row_seq;
    int r = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      row0.push_back(r);
      bt0.push_back(static_cast<int>(tables.size()));
      const int blocks = (pos[i] + lens[i] + 15) / 16;
      for (int b = 0; b < blocks; ++b) tables.push_back(static_cast<int>(i) * blocks + b);
      for (int t = 0; t < lens[i]; ++t) row_seq.push_back(static_cast<int>(i));
      r += lens[i];
    }
    view.nseq = static_cast<int>(lens.size());
    view.rows = r;
    view.seq_slot = dev_copy(slots);
    view.seq_row0 = dev_copy(row0);
    view.seq_len = dev_copy(lens);
    view.seq_pos0 = dev_copy(pos);
    view.seq_bt0 = dev_copy(bt0);
    view.block_tables = dev_copy(tables);
    view.block_size = 16;
    view.row_seq = dev_copy(row_seq);
    view.max_len = *std::max_element(lens.begin(), lens.end());
  }
};

// Nano Mamba-2 mixer shape.
constexpr int NH = 64, HEAD_DIM = 64, NGROUPS = 8, DSTATE = 128, CHUNK = 128;
constexpr int INNER = NH * HEAD_DIM, CONV_DIM = INNER + 2 * NGROUPS * DSTATE;
constexpr int64_t STATE_FLOATS = int64_t(NH) * HEAD_DIM * DSTATE;  // one slot, one layer

lm::cuda::SsmParams nano_ssm(const float* xbc, const float* dt_raw, float* state, float* y) {
  static const std::vector<float> dt_bias(NH, -3.f), A(NH, -1.f), D(NH, 1.f);
  static const float *d_dt_bias = dev_copy(dt_bias), *d_A = dev_copy(A), *d_D = dev_copy(D);
  return lm::cuda::SsmParams{NH, HEAD_DIM, NGROUPS, DSTATE, xbc, CONV_DIM, dt_raw, NH, d_dt_bias, d_A, d_D, 0.f, 3.4e38f, state, y};
}

void bench_ssd_scan() {
  const int T = 8192;
  if (!lm::cuda::ssd_chunked_supported(HEAD_DIM, DSTATE, CHUNK)) throw lm::Error("ssd_chunked_supported refused the Nano shape");
  DeviceBatch b({T}, {0}, {0});
  float* xbc = dev_uniform(int64_t(T) * CONV_DIM, 11, -1.f, 1.f);
  float* dt_raw = dev_uniform(int64_t(T) * NH, 12, -1.f, 1.f);
  float* state = dev_uniform(STATE_FLOATS, 13, -0.1f, 0.1f);
  float* y = dev_alloc<float>(int64_t(T) * INNER);
  float* ws = dev_alloc<float>(lm::cuda::ssd_chunked_workspace_floats(T, NGROUPS, CHUNK));
  const auto p = nano_ssm(xbc, dt_raw, state, y);
  const double ms = median_ms(20, [&](int) { lm::cuda::ssd_chunked_scan(b.view, p, CHUNK, ws, nullptr); });
  // Fewest bytes: x|B|C and dt read, y written (fp32), the state read and written once.
  const double bytes = 4.0 * (double(T) * (CONV_DIM + NH) + double(T) * INNER + 2.0 * STATE_FLOATS);
  std::printf("ssd chunked scan, Nano heads, one 8192-token sequence: %.3f ms = %.3g tokens/s per layer (target 3e7)\n", ms, T / (ms * 1e-3));
  bench_line("ssd_scan_8k", T / (ms * 1e-3), "tokens/s", ms, bytes, 0);
  for (float* q : {xbc, dt_raw, state, y, ws}) cudaFree(q);
}

void bench_ssu(int B) {
  const int sets = 4;  // disjoint slot sets, so the states of one call are not in L2 from the last
  float* state = dev_uniform(STATE_FLOATS * sets * B, 21, -0.1f, 0.1f);
  float* xbc = dev_uniform(int64_t(B) * CONV_DIM, 22, -1.f, 1.f);
  float* dt_raw = dev_uniform(int64_t(B) * NH, 23, -1.f, 1.f);
  float* y = dev_alloc<float>(int64_t(B) * INNER);
  std::vector<DeviceBatch> batches;
  for (int s = 0; s < sets; ++s) {
    std::vector<int> slots(B);
    for (int i = 0; i < B; ++i) slots[i] = s * B + i;
    batches.emplace_back(std::vector<int>(B, 1), std::vector<int>(B, 100), slots);
  }
  const auto p = nano_ssm(xbc, dt_raw, state, y);
  const double ms = median_ms(40, [&](int i) { lm::cuda::ssm_scan(batches[i % sets].view, p, nullptr); });
  const double bytes = 2.0 * 4.0 * STATE_FLOATS * B;
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  std::printf("selective state update, %d sequences: %.4f ms, %.0f GB/s of state\n", B, ms, gbps);
  bench_line("ssu_b" + std::to_string(B), gbps, "GB/s", ms, bytes, 0);
  for (float* q : {state, xbc, dt_raw, y}) cudaFree(q);
}

void bench_moe_gemm(int slots, const char* key) {
  const int E = 128, K = 2688, N = 1856, k = 8, R = slots / k;
  const int64_t wsize = int64_t(N) * K;
  bf16* w = dev_alloc<bf16>(E * wsize);
  lm::cuda::fill_dummy_bf16(w, E * wsize, 31, -0.02f, 0.02f, nullptr);
  std::vector<const bf16*> ptrs(E);
  for (int e = 0; e < E; ++e) ptrs[e] = w + e * wsize;
  const bf16* const* d_ptrs = dev_copy(ptrs);
  // Token r picks experts 8r .. 8r+7 (mod 128): distinct per token, slots / 128 per expert.
  std::vector<int32_t> ids(slots);
  for (int i = 0; i < slots; ++i) ids[i] = i % E;
  const int M = slots, tile_rows = lm::cuda::moe_tile_rows(M, E), max_tiles = lm::cuda::moe_plan_max_tiles(M, E, tile_rows);
  lm::cuda::MoePlan plan{dev_alloc<int32_t>(M), dev_alloc<int32_t>(M), dev_alloc<int32_t>(E + 1), dev_alloc<int4>(max_tiles), dev_alloc<int32_t>(1)};
  int32_t* d_ids = dev_copy(ids);
  lm::cuda::moe_plan(d_ids, R, k, E, tile_rows, plan, nullptr);
  bf16* x = dev_alloc<bf16>(int64_t(R) * K);
  lm::cuda::fill_dummy_bf16(x, int64_t(R) * K, 32, -1.f, 1.f, nullptr);
  bf16* act = dev_alloc<bf16>(int64_t(M) * N);
  lm::cuda::GroupedGemmParams up{x, K, plan.src_row, d_ptrs, N, K, plan.tiles, plan.num_tiles, max_tiles, tile_rows, act, nullptr};
  // As the engine runs it (the last round's items split along K), and without the split for comparison.
  float* split_ws = dev_alloc<float>(lm::cuda::grouped_gemm_split_floats());
  unsigned* split_counters = dev_alloc<unsigned>(lm::cuda::grouped_gemm_split_counters());
  check(cudaMemset(split_counters, 0, sizeof(unsigned) * lm::cuda::grouped_gemm_split_counters()), "cudaMemset");
  // As the engine runs it (weight tiles by tensor copies from one (E, N, K) array, the last round
  // split along K), and without each of the two, interleaved so that all see the same clocks.
  lm::cuda::GroupedGemmParams plain = up;  // no split; weights by per-thread copies through the pointer table
  up.split_ws = split_ws;
  up.split_counters = split_counters;
  lm::cuda::GroupedGemmParams no_tma = up;
  up.w_base = w;
  up.w_stride = wsize;
  up.w_experts = E;
  lm::cuda::GroupedGemmParams no_split = up;
  no_split.split_ws = nullptr;
  no_split.split_counters = nullptr;
  // The figure: 20 launches as before (the GPU still cool); then the four interleaved, 20 each, for
  // the comparison (the GPU warms: all four slower by about the same factor).
  const double ms = median_ms(20, [&](int) { lm::cuda::grouped_gemm(up, nullptr); });
  // Sorted times of each variant, launched in turn (reps each).
  auto interleaved = [&](std::vector<const lm::cuda::GroupedGemmParams*> variants, int reps) {
    const int n = static_cast<int>(variants.size());
    std::vector<std::vector<double>> times(static_cast<size_t>(n));
    median_ms(n * reps, [&](int i) { lm::cuda::grouped_gemm(*variants[static_cast<size_t>(i % n)], nullptr); }, [&](int i, double t) { times[static_cast<size_t>(i % n)].push_back(t); });
    for (auto& t : times) std::sort(t.begin(), t.end());
    return times;
  };
  auto median = [](const std::vector<double>& t) { return t[t.size() / 2]; };
  const auto times = interleaved({&up, &no_tma, &no_split, &plain}, 20);
  const double warm_ms = median(times[0]), no_tma_ms = median(times[1]), nosplit_ms = median(times[2]), plain_ms = median(times[3]);
  if (std::getenv("LM_BENCH_SPLIT_SWEEP")) {  // dev: the split tail with at most 2, 4, 8 parts, interleaved with unsplit
    for (const char* cap : {"2", "4", "8"}) {
      setenv("LM_CUDA_MOE_SPLIT_MAX", cap, 1);
      const auto t2 = interleaved({&up, &no_split}, 20);  // both with TMA weights
      std::printf("split sweep %s: at most %s parts %.3f ms, unsplit %.3f ms (min %.3f / %.3f)\n", key, cap, median(t2[0]), median(t2[1]), t2[0][0], t2[1][0]);
    }
    unsetenv("LM_CUDA_MOE_SPLIT_MAX");
  }
  const double plan_ms = median_ms(20, [&](int) { lm::cuda::moe_plan(d_ids, R, k, E, tile_rows, plan, nullptr); });
  const double bytes = 2.0 * E * wsize, flops = 2.0 * M * wsize;
  const double tflops = flops / (ms * 1e-3) / 1e12;
  std::printf("grouped expert GEMM %s: %d slots (%d per expert), tile %d rows: %.3f ms, %.0f TFLOP/s, %.0f GB/s of weights (plan %.3f ms, not included); interleaved, warm: %.3f ms, "
              "%.3f ms with per-thread weight copies, %.3f ms without the split tail, %.3f ms without either\n",
              key, M, M / E, tile_rows, ms, tflops, bytes / (ms * 1e-3) / 1e9, plan_ms, warm_ms, no_tma_ms, nosplit_ms, plain_ms);
  bench_line(key, tflops, "TFLOP/s", ms, bytes, flops,
             "\"tile_rows\": " + std::to_string(tile_rows) + ", \"plan_ms\": " + std::to_string(plan_ms) + ", \"warm_ms\": " + std::to_string(warm_ms) + ", \"no_tma_warm_ms\": " + std::to_string(no_tma_ms) +
                 ", \"nosplit_warm_ms\": " + std::to_string(nosplit_ms) + ", \"plain_warm_ms\": " + std::to_string(plain_ms));
  cudaFree(split_ws);
  cudaFree(split_counters);
  cudaFree(w);
  cudaFree(x);
  cudaFree(act);
  cudaFree(d_ids);
}

}  // namespace

int main() {
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    std::printf("BENCH {\"key\": \"device\", \"value\": %d, \"unit\": \"SMs\", \"name\": \"%s\"}\n", prop.multiProcessorCount, prop.name);
    const lm::Roofline roof = lm::measure_roofline("cuda", 0);
    std::printf("ceilings: copy %.1f GB/s, bf16 GEMM %.1f TFLOP/s\n", roof.copy_gbps, roof.matmul_tflops);
    bench_line("ceiling_copy", roof.copy_gbps, "GB/s", 0, 0, 0);
    bench_line("ceiling_matmul", roof.matmul_tflops, "TFLOP/s", 0, 0, 0);
    bench_ssd_scan();
    bench_ssu(32);
    bench_ssu(256);
    bench_moe_gemm(8192, "moe_gemm_8k");
    bench_moe_gemm(65536, "moe_gemm_64k");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
