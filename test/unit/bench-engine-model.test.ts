import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseModelConfig } from "../../contracts/model-config.js";
import { decodeBytes, modelCosts } from "../../bench/engine-model.js";
import { FIXTURES } from "../support/paths.js";

// Reference figures stated in the performance issue for Nemotron 3 Nano 30B-A3B on 3.0 TB/s:
// 1.85 B non-routed parameters, 9.98 M per routed expert, ~98 MB of Mamba state read + written per
// sequence per step, 2.18 ms at batch 1, 17.7 ms at batch 32, 29.2 ms at batch 256 (context 1K),
// 6.46 GFLOP per prefill token in projections and experts.
const nano = parseModelConfig(JSON.parse(readFileSync(join(FIXTURES, "configs", "nemotron-3-nano-30b-a3b.config.json"), "utf8")));
const TBps = 3.0e12;

describe("engine cost model (Nano 30B-A3B)", () => {
  const c = modelCosts(nano);
  it("counts 1.85 B dense parameters and 9.98 M per routed expert", () => {
    assert.ok(Math.abs(c.denseParams / 1e9 - 1.85) < 0.01, String(c.denseParams));
    assert.ok(Math.abs(c.expertParams / 1e6 - 9.98) < 0.01, String(c.expertParams));
  });
  it("moves ~98 MB of state per sequence per step and 6 KiB of KV per token", () => {
    assert.ok(Math.abs((2 * c.stateBytesPerSeq) / 1e6 - 98) < 1.5, String(c.stateBytesPerSeq));
    assert.equal(c.kvBytesPerToken, 6 * 1024);
  });
  for (const [batch, ms] of [[1, 2.18], [32, 17.7], [256, 29.2]] as const) {
    it(`decode roofline at batch ${batch}, context 1K: ${ms} ms at 3.0 TB/s`, () => {
      const got = (decodeBytes(nano, batch, 1024) / TBps) * 1e3;
      assert.ok(Math.abs(got - ms) / ms < 0.02, `${got.toFixed(2)} ms`);
    });
  }
  it("does 6.46 GFLOP per prefill token", () => {
    assert.ok(Math.abs(c.flopsPerToken / 1e9 - 6.46) < 0.01, String(c.flopsPerToken));
  });
});
