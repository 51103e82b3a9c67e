import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CLI, FIXTURES } from "../support/paths.js";

const CONFIG = {
  vocab_size: 50, hidden_size: 32, hybrid_override_pattern: "M*E-",
  mamba_num_heads: 4, mamba_head_dim: 8, ssm_state_size: 8, n_groups: 2, chunk_size: 4,
  num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, intermediate_size: 24,
  n_routed_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, moe_shared_expert_intermediate_size: 16,
};

function modelDir(config: unknown = CONFIG): string {
  const dir = mkdtempSync(join(tmpdir(), "lm-logits-"));
  writeFileSync(join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
  return dir;
}

function logits(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, "logits", "--log-level", "warn", ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stderr: r.stderr.trim() };
}

describe("latentmesh logits", () => {
  it("writes T×V prefill and N×V decode logits and a result.json (dummy weights)", () => {
    const dir = modelDir();
    const out = join(dir, "out");
    const r = logits("--model", dir, "--load-format", "dummy", "--prompt-ids", "1,2,3,4,5,6,7", "--decode", "3", "--out", out);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(out, "prefill_logits.f32")).length, 7 * 50 * 4);
    assert.equal(readFileSync(join(out, "decode_logits.f32")).length, 3 * 50 * 4);
    const result = JSON.parse(readFileSync(join(out, "result.json"), "utf8")) as { generated_ids: number[]; prefill_shape: number[] };
    assert.equal(result.generated_ids.length, 3);
    assert.deepEqual(result.prefill_shape, [7, 50]);
  });

  const cases: [string, () => string[], RegExp][] = [
    ["a token id beyond the vocabulary", () => ["--model", modelDir(), "--load-format", "dummy", "--prompt-ids", "1,50"], /token id 50 is out of range for vocab_size 50/],
    ["a malformed config.json", () => ["--model", modelDir("{ nope"), "--prompt-ids", "1"], /config\.json: not valid JSON/],
    ["a config with a bad field", () => ["--model", modelDir({ ...CONFIG, n_groups: 3 }), "--load-format", "dummy", "--prompt-ids", "1"], /config\.json: n_groups/],
    ["a missing checkpoint", () => ["--model", modelDir(), "--prompt-ids", "1"], /no model\.safetensors/],
    ["a truncated safetensors file", () => {
      const d = modelDir();
      writeFileSync(join(d, "model.safetensors"), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 123]));
      return ["--model", d, "--prompt-ids", "1"];
    }, /not a safetensors file/],
    ["a model too large for the cpu backend's memory", () => {
      const nano = JSON.parse(readFileSync(join(FIXTURES, "configs", "nemotron-3-nano-30b-a3b.config.json"), "utf8")) as unknown;
      return ["--model", modelDir(nano), "--load-format", "dummy", "--prompt-ids", "1"];
    }, /needs 1\d\d\.\d GiB of fp32 weights on the cpu backend/],
    ["a non-numeric prompt", () => ["--model", modelDir(), "--prompt-ids", "1,x"], /--prompt-ids/],
  ];
  for (const [what, args, re] of cases) {
    it(`exits 2 with one line for ${what}`, () => {
      const r = logits(...args(), "--out", join(tmpdir(), "lm-never"));
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.split("\n").length, 1, r.stderr);
      assert.match(r.stderr, re);
    });
  }
});
