import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { kernelCeilings, kernelMetrics, rooflineMs } from "../../bench/kernels.js";
import { parseBenchLines } from "../../bench/results-json.js";

const CEIL = { copyGBps: 3000, matmulTflops: 800 };
const close = (got: number | null | undefined, want: number, what: string) => assert.ok(got !== null && got !== undefined && Math.abs(got - want) <= 1e-3 * Math.abs(want), `${what}: ${got} vs ${want}`);

function metrics(lines: string[]) {
  const rows = kernelMetrics(parseBenchLines(lines.map((l) => `BENCH ${l}`).join("\n")).byKey, CEIL);
  return Object.fromEntries(rows.map((r) => [r.key, r.metric]));
}

describe("kernel benchmark ratios", () => {
  it("SSD scan against issue 9's 3e7 tokens/s, state update against copy bandwidth", () => {
    const m = metrics([
      '{"key": "ssd_scan_8k", "value": 1.5e7, "unit": "tokens/s", "ms": 0.546}',
      // 32 slots × 2 MiB read + written in 0.05 ms = 2684 GB/s of 3000
      '{"key": "ssu_b32", "value": 2684, "unit": "GB/s", "ms": 0.05, "bytes": 134217728}',
    ]);
    close(m.ssd_scan_8k?.ratio, 0.5, "ssd");
    close(m.ssu_b32?.ratio, 134217728 / 0.05e-3 / 1e9 / 3000, "ssu");
  });

  it("grouped expert GEMM: roofline is the larger of weight bytes ÷ bandwidth and FLOPs ÷ rate; torch._grouped_mm beside it", () => {
    // Nano up projection: 128 × 1856 × 2688 bf16 weights = 1.277 GB → 0.4257 ms at 3 TB/s;
    // 8192 slots: 8.17e10 FLOP → 0.102 ms at 800 TFLOP/s, so memory-bound.
    const bytes = 2 * 128 * 1856 * 2688;
    const flops8k = 2 * 8192 * 1856 * 2688;
    const flops64k = 2 * 65536 * 1856 * 2688;
    const m = metrics([
      `{"key": "moe_gemm_8k", "value": 163, "unit": "TFLOP/s", "ms": 0.5, "bytes": ${bytes}, "flops": ${flops8k}}`,
      `{"key": "baseline_grouped_mm_8k", "value": 159, "unit": "TFLOP/s", "ms": 0.513, "bytes": ${bytes}, "flops": ${flops8k}}`,
      `{"key": "moe_gemm_64k", "value": 400, "unit": "TFLOP/s", "ms": 1.6, "bytes": ${bytes}, "flops": ${flops64k}}`,
    ]);
    close(m.moe_gemm_8k?.ratio, 0.42566 / 0.5, "8k vs roofline");
    close(m.moe_gemm_8k?.vs_grouped_mm as number, 0.513 / 0.5, "8k vs torch");
    // 6.54e11 FLOP at 800 TFLOP/s = 0.8174 ms > 0.4257 ms: compute-bound, ratio = achieved rate / matmul rate
    close(m.moe_gemm_64k?.ratio, 0.81744 / 1.6, "64k");
    assert.equal(m.moe_gemm_64k?.vs_grouped_mm, undefined, "no 64k baseline in this run");
    close(rooflineMs({ bytes, flops: flops8k }, 3000, 800), 0.42566, "rooflineMs");
    assert.equal(rooflineMs({}, 3000, 800), null);
  });

  it("attention prefill against torch SDPA's best backend, decode attention against copy bandwidth", () => {
    const m = metrics([
      '{"key": "attn_prefill_8k", "value": 500, "unit": "TFLOP/s", "ms": 1.1, "flops": 5.5e11}',
      '{"key": "baseline_sdpa_8k", "value": 552, "unit": "TFLOP/s", "ms": 0.996, "flops": 5.5e11, "backend": "CUDNN_ATTENTION"}',
      '{"key": "attn_decode_b64_8k", "value": 2100, "unit": "GB/s", "ms": 0.3, "bytes": 6.4e8}',
    ]);
    close(m.attn_prefill_8k?.ratio, 0.996 / 1.1, "prefill vs SDPA");
    assert.match(String(m.attn_prefill_8k?.against), /CUDNN/);
    close(m.attn_decode_b64_8k?.ratio, 6.4e8 / 0.3e-3 / 1e9 / 3000, "decode vs copy");
    const alone = metrics(['{"key": "attn_prefill_8k", "value": 500, "unit": "TFLOP/s", "ms": 1.1, "flops": 5.5e11}']);
    close(alone.attn_prefill_8k?.ratio, 5.5e11 / 1.1e-3 / 1e12 / 800, "prefill vs matmul without a baseline");
  });

  it("ceilings come from bench-kernels, else from torch; none is an error for the caller", () => {
    const both = parseBenchLines(['BENCH {"key": "ceiling_copy", "value": 3026, "unit": "GB/s"}', 'BENCH {"key": "ceiling_matmul", "value": 869, "unit": "TFLOP/s"}', 'BENCH {"key": "baseline_copy", "value": 2900, "unit": "GB/s"}', 'BENCH {"key": "baseline_matmul", "value": 780, "unit": "TFLOP/s"}'].join("\n")).byKey;
    assert.deepEqual({ ...kernelCeilings(both), source: "" }, { copyGBps: 3026, matmulTflops: 869, source: "" });
    const torchOnly = parseBenchLines(['BENCH {"key": "baseline_copy", "value": 2900, "unit": "GB/s"}', 'BENCH {"key": "baseline_matmul", "value": 780, "unit": "TFLOP/s"}'].join("\n")).byKey;
    assert.equal(kernelCeilings(torchOnly)?.source, "torch");
    assert.equal(kernelCeilings(new Map()), null);
    const rows = kernelMetrics(both, { copyGBps: 3026, matmulTflops: 869 });
    assert.deepEqual(rows.map((r) => r.key), ["baseline_copy", "baseline_matmul"], "ceiling lines are not metrics");
    close(rows[0]?.metric.ratio, 2900 / 3026, "torch copy vs ours");
  });
});
