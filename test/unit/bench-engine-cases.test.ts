import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseModelConfig } from "../../contracts/model-config.js";
import { caseKey, parseCase, profileHeading, profileRows } from "../../bench/engine.js";
import { componentBytes, modelCosts } from "../../bench/engine-model.js";
import { CLI, FIXTURES } from "../support/paths.js";

const nano = parseModelConfig(JSON.parse(readFileSync(join(FIXTURES, "configs", "nemotron-3-nano-30b-a3b.config.json"), "utf8")));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, "bench", ...args], { encoding: "utf8" });
  return { code: r.status, stderr: r.stderr };
}

describe("bench engine cases", () => {
  it("parses the issue's case names and sizes with or without k", () => {
    assert.deepEqual(parseCase("decode_b64_ctx8k"), { kind: "decode", batch: 64, context: 8192 });
    assert.deepEqual(parseCase("mixed_b64_2k"), { kind: "mixed", batch: 64, chunk: 2048 });
    assert.deepEqual(parseCase("decode_b3_ctx300"), { kind: "decode", batch: 3, context: 300 });
    for (const bad of ["decode_b0_ctx8k", "mixed_b64_0", "decode_64_8k", "prefill_8k", "decode_b64_ctx8K", ""]) assert.equal(parseCase(bad), null, bad);
  });

  it("keys cases as the JSON does (mixed at another decode context says so)", () => {
    assert.equal(caseKey({ kind: "decode", batch: 64, context: 8192 }, 1024), "decode_b64_ctx8k");
    assert.equal(caseKey({ kind: "mixed", batch: 64, chunk: 2048 }, 1024), "mixed_b64_2k");
    assert.equal(caseKey({ kind: "mixed", batch: 4, chunk: 256 }, 64), "mixed_b4_256_ctx64");
  });

  it("profile headings name decode batches, prefill lengths and mixed steps", () => {
    assert.equal(profileHeading("decode_b1_ctx1k"), "decode b1_ctx1k");
    assert.equal(profileHeading("prefill_8k"), "prefill 8k tokens (one sequence)");
    assert.equal(profileHeading("mixed_b64_2k"), "mixed step b64_2k (decode batch + one prefill chunk)");
    assert.equal(profileHeading("something_else"), "something_else");
  });

  it("profile rows: per-step ms, shares summing to 1, GB/s where bytes are counted", () => {
    const rows = profileRows([{ name: "lm_head", ms: 8 }, { name: "sampling", ms: 2 }], 4, { lm_head: 704e6 });
    assert.deepEqual(rows.map((r) => [r.name, r.ms, r.share]), [["lm_head", 2, 0.8], ["sampling", 0.5, 0.2]]);
    assert.ok(Math.abs((rows[0]?.gbps ?? 0) - 352) < 1e-9, String(rows[0]?.gbps));
    assert.equal(rows[1]?.gbps, undefined);
  });

  it("component bytes of a Nano decode step add up to the issue's figures", () => {
    const b = componentBytes(nano, 1, 1024);
    // every non-routed weight streamed once: ~1.85 B bf16 parameters (norms, conv, dt, A, D are the rest)
    const weights = Object.entries(b).filter(([k]) => !["moe.experts", "mamba.ssm", "attn.core"].includes(k)).reduce((a, [, v]) => a + v, 0);
    assert.ok(Math.abs(weights / 2 / 1e9 - 1.85) < 0.01, `${weights / 2e9} B params`);
    assert.ok(weights / 2 <= modelCosts(nano).denseParams);
    // lm_head 131072 × 2688 bf16; SSM state 23 layers × 64 × 64 × 128 fp32, read and written
    assert.equal(b.lm_head, 131072 * 2688 * 2);
    assert.equal(b["mamba.ssm"], 23 * 2 * 64 * 64 * 128 * 4);
    assert.equal(b["attn.core"], 1024 * 6 * 1024);
    // one token touches 6 experts of 9.98 M parameters in each of 23 layers
    assert.ok(Math.abs((b["moe.experts"] as number) / (23 * 6 * 9.98e6 * 2) - 1) < 0.01);
  });
});

describe("bench flags", () => {
  for (const [args, re] of [
    [["engine", "--model", "x", "--cases", "decode_b64"], /--cases/],
    [["engine", "--model", "x", "--cases", "decode_b0_ctx1k"], /--cases/],
    [["engine", "--model", "test/fixtures/tiny-chat", "--route-skew", "1"], /--route-skew needs dummy weights/],
    [["engine", "--model", "x", "--route-skew", "-1"], /--route-skew/],
    [["engine", "--model", "test/fixtures/tiny-chat", "--cuda-graphs", "off"], /cuda backend/],
    [["engine", "--model", "x", "--cuda-graphs", "sometimes"], /--cuda-graphs/],
    [["engine", "--model", "test/fixtures/tiny-chat", "--transformers"], /--backend cuda/],
    [["engine", "--model", "x", "--fill", "slow"], /--fill/],
    [["nosuch"], /unknown benchmark/],
  ] as const) {
    it(`bench ${args.join(" ")} exits 2 with one line`, () => {
      const r = cli(...args);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, re);
    });
  }
});
