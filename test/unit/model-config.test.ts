import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LatentMeshError } from "../../contracts/errors.js";
import { parseGenerationConfig, parseModelConfig } from "../../contracts/model-config.js";
import { FIXTURES } from "../support/paths.js";

const released = (name: string) => JSON.parse(readFileSync(join(FIXTURES, "configs", name), "utf8")) as Record<string, unknown>;

describe("model config", () => {
  it("parses the released Nano config (hybrid_override_pattern spelling)", () => {
    const c = parseModelConfig(released("nemotron-3-nano-30b-a3b.config.json"));
    assert.equal(c.pattern.length, 52);
    assert.deepEqual([...c.pattern].filter((x) => x === "M").length, 23);
    assert.equal(c.nRoutedExperts, 128);
    assert.equal(c.numExpertsPerTok, 6);
    assert.equal(c.moeLatentSize, 0);
    assert.equal(c.headDim, 128);
    assert.equal(c.nGroups, 8);
    assert.equal(c.mtpPattern, "");
    assert.equal(c.timeStepMin, 0, "time_step_min is an init value, not the kernels' dt limit");
  });

  it("parses the released Super config with LatentMoE and an MTP pattern", () => {
    const c = parseModelConfig(released("nemotron-3-super-120b-a12b.config.json"));
    assert.equal(c.pattern.length, 88);
    assert.equal(c.moeLatentSize, 1024);
    assert.equal(c.mtpPattern, "*E");
    assert.equal(c.numNextnPredictLayers, 1);
  });

  it("reads transformers-5 layers_block_type lists and the older mamba/attention names alike", () => {
    const base = { hidden_size: 64, vocab_size: 100 };
    const a = parseModelConfig({ ...base, layers_block_type: ["linear_attention", "moe", "full_attention", "mlp"] });
    const b = parseModelConfig({ ...base, layers_block_type: ["mamba", "moe", "attention", "mlp"] });
    const c = parseModelConfig({ ...base, hybrid_override_pattern: "ME*-" });
    const d = parseModelConfig({ ...base, layer_types: ["mamba", "moe", "attention", "mlp"], mtp_layers_block_type: ["attention", "moe"] });
    assert.equal(a.pattern, "ME*-");
    assert.equal(b.pattern, "ME*-");
    assert.equal(c.pattern, "ME*-");
    assert.equal(d.pattern, "ME*-");
    assert.equal(d.mtpPattern, "*E");
  });

  it("maps legacy aliases and eos lists", () => {
    const c = parseModelConfig({ hybrid_override_pattern: "M", mamba_n_groups: 4, mamba_d_conv: 3, mamba_chunk_size: 32, eos_token_id: [2, 11], time_step_limit: [0.001, 0.5] });
    assert.equal(c.nGroups, 4);
    assert.equal(c.convKernel, 3);
    assert.equal(c.chunkSize, 32);
    assert.deepEqual(c.eosTokenIds, [2, 11]);
    assert.equal(c.timeStepMin, 0.001);
    assert.equal(c.timeStepMax, 0.5);
    assert.deepEqual(parseGenerationConfig({ eos_token_id: [2, 11] }).eosTokenIds, [2, 11]);
    const inf = parseModelConfig({ hybrid_override_pattern: "M", time_step_limit: [0.0, { __float__: "Infinity" }] });
    assert.equal(inf.timeStepMin, 0);
    assert.ok(inf.timeStepMax > 3e38, "transformers 5 writes +inf as {__float__: Infinity}: no upper clamp");
    assert.deepEqual(parseGenerationConfig({ eos_token_id: 7 }).eosTokenIds, [7]);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["no layout", { hidden_size: 8 }, /cfg\.json: layers_block_type: missing/],
    ["unknown block letter", { hybrid_override_pattern: "MX" }, /cfg\.json: hybrid_override_pattern: may contain only/],
    ["unknown block name", { layers_block_type: ["mamba", "conv"] }, /cfg\.json: layers_block_type\.1: unknown block type "conv"/],
    ["a string where a number belongs", { hybrid_override_pattern: "M", hidden_size: "big" }, /cfg\.json: hidden_size:/],
    ["heads not divisible by groups", { hybrid_override_pattern: "M", mamba_num_heads: 6, n_groups: 4 }, /cfg\.json: n_groups: mamba_num_heads \(6\)/],
    ["GQA heads not divisible", { hybrid_override_pattern: "*", num_attention_heads: 6, num_key_value_heads: 4 }, /cfg\.json: num_key_value_heads/],
    ["top-k above the expert count", { hybrid_override_pattern: "E", n_routed_experts: 4, num_experts_per_tok: 5 }, /cfg\.json: num_experts_per_tok/],
    ["groups not dividing experts", { hybrid_override_pattern: "E", n_routed_experts: 6, n_group: 4 }, /cfg\.json: n_group/],
  ];
  for (const [what, json, re] of bad) {
    it(`rejects ${what}, naming the file and the field`, () => {
      assert.throws(() => parseModelConfig(json, "cfg.json"), (e: unknown) => e instanceof LatentMeshError && e.code === "invalid_config" && re.test(e.message));
    });
  }
});
