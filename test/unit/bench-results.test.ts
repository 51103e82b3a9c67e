import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  BenchResultsSchema,
  ENGINE_KEYS,
  KERNEL_KEYS,
  decodeKey,
  deviceSlug,
  mixedKey,
  parseBenchLines,
  prefillKey,
  ratioOf,
  resultFileName,
  writeResults,
  type BenchResults,
} from "../../bench/results-json.js";

const RUN: BenchResults = {
  device: "NVIDIA H100 80GB HBM3",
  date: "2026-11-24T10:15:09.123Z",
  commit: "da4f663",
  ceilings: { copy_tbps: 3.03, bf16_tflops: 869 },
  metrics: { decode_b1_ctx1k: { value: 6.71, unit: "ms/step", ratio: 0.323 }, prefill_8k: { value: null, unit: "tok/s", ratio: null, oom: true } },
};

describe("bench results JSON", () => {
  it("names the issue's metric keys from batch, context and token counts", () => {
    assert.equal(decodeKey(1, 1024), "decode_b1_ctx1k");
    assert.equal(decodeKey(64, 8192), "decode_b64_ctx8k");
    assert.equal(decodeKey(2, 300), "decode_b2_ctx300");
    assert.equal(prefillKey(8192), "prefill_8k");
    assert.equal(prefillKey(512), "prefill_512");
    assert.equal(mixedKey(64, 2048), "mixed_b64_2k");
    for (const k of [decodeKey(1, 1024), decodeKey(32, 1024), decodeKey(256, 1024), decodeKey(64, 8192), prefillKey(8192), mixedKey(64, 2048)]) assert.ok((ENGINE_KEYS as readonly string[]).includes(k), k);
    assert.equal(KERNEL_KEYS.length, 6);
  });

  it("file names are <date>-<kind>-<device slug>-<commit>.json", () => {
    assert.equal(deviceSlug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
    assert.equal(deviceSlug("  Intel(R) Xeon(R)  "), "intel-r-xeon-r");
    assert.equal(deviceSlug("***"), "unknown-device");
    assert.equal(resultFileName("engine", RUN), "2026-11-24T101509Z-engine-nvidia-h100-80gb-hbm3-da4f663.json");
    assert.equal(resultFileName("kernels", { ...RUN, commit: "a/b c" }), "2026-11-24T101509Z-kernels-nvidia-h100-80gb-hbm3-abc.json");
    assert.throws(() => resultFileName("engine", { ...RUN, date: "yesterday" }), /ISO/);
  });

  it("ratio is null when either side is missing or zero", () => {
    assert.equal(ratioOf(2, 4), 0.5);
    assert.equal(ratioOf(null, 4), null);
    assert.equal(ratioOf(2, undefined), null);
    assert.equal(ratioOf(2, 0), null);
  });

  it("the schema accepts the issue's shape (null values for out-of-memory rows) and rejects a run without ceilings", () => {
    assert.ok(BenchResultsSchema.safeParse(RUN).success);
    const { ceilings: _c, ...noCeilings } = RUN;
    assert.equal(BenchResultsSchema.safeParse(noCeilings).success, false);
    assert.equal(BenchResultsSchema.safeParse({ ...RUN, metrics: { x: { value: 1, unit: "ms" } } }).success, false, "ratio is required");
  });

  it("writeResults writes one parseable file under its name", () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-results-"));
    const path = writeResults(join(dir, "sub"), "engine", RUN);
    assert.deepEqual(readdirSync(join(dir, "sub")), ["2026-11-24T101509Z-engine-nvidia-h100-80gb-hbm3-da4f663.json"]);
    const back = JSON.parse(readFileSync(path, "utf8"));
    assert.deepEqual(back, RUN);
    assert.throws(() => writeResults(dir, "engine", { ...RUN, ceilings: { copy_tbps: 0, bf16_tflops: 1 } }));
  });
});

describe("BENCH line parsing", () => {
  it("reads BENCH lines among human output, later keys win, extra fields kept", () => {
    const text = [
      "device: NVIDIA H100, 132 SMs",
      'BENCH {"key": "ssu_b32", "value": 2400, "unit": "GB/s", "ms": 0.056, "bytes": 134217728}',
      "  BENCH {\"key\": \"baseline_sdpa_8k\", \"value\": 552, \"unit\": \"TFLOP/s\", \"ms\": 0.996, \"backend\": \"CUDNN_ATTENTION\"}",
      'BENCH {"key": "ssu_b32", "value": 2500, "unit": "GB/s", "ms": 0.054}',
      'BENCH {"key": "transformers_prefill_2k", "value": null, "unit": "tok/s", "oom": true}',
      "not a BENCH line {}",
    ].join("\n");
    const { lines, byKey, errors } = parseBenchLines(text);
    assert.deepEqual(errors, []);
    assert.equal(lines.length, 4);
    assert.equal(byKey.get("ssu_b32")?.value, 2500);
    assert.equal(byKey.get("baseline_sdpa_8k")?.backend, "CUDNN_ATTENTION");
    assert.equal(byKey.get("transformers_prefill_2k")?.oom, true);
    assert.equal(byKey.get("transformers_prefill_2k")?.value, null);
  });

  it("reports malformed BENCH lines with their line number and skips them", () => {
    const text = ["BENCH {not json", 'BENCH {"value": 1, "unit": "x"}', 'BENCH {"key": "a b", "value": 1, "unit": "x"}', 'BENCH {"key": "k", "value": "1", "unit": "x"}', 'BENCH {"key": "ok", "value": 1, "unit": "x"}'].join("\n");
    const { lines, errors } = parseBenchLines(text);
    assert.deepEqual(lines.map((l) => l.key), ["ok"]);
    assert.equal(errors.length, 4);
    assert.match(errors[0] as string, /^line 1: .*not JSON/);
    assert.match(errors[1] as string, /^line 2: .*key/);
    assert.match(errors[3] as string, /^line 4: .*value/);
  });
});

describe("commit of a run", () => {
  it("an explicit commit (LATENTMESH_COMMIT) wins over git; outside a repository without one it is unknown", async () => {
    const { resolveCommit } = await import("../../bench/results-json.js");
    assert.equal(resolveCommit(".", " 89be083-dirty "), "89be083-dirty");
    assert.equal(resolveCommit(mkdtempSync(join(tmpdir(), "no-git-")), undefined), "unknown");
    assert.match(resolveCommit(".", undefined), /^([0-9a-f]{7,40}(-dirty)?|unknown)$/);
  });
});
