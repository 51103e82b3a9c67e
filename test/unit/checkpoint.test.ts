import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LatentMeshError } from "../../contracts/errors.js";
import { readCheckpoint } from "../../worker/checkpoint.js";
import { writeSafetensors, type TensorSpec } from "../support/safetensors.js";

// A two-layer model, Mamba then MoE, with shapes written out by hand from the config below.
const CONFIG = {
  vocab_size: 10, hidden_size: 4, hybrid_override_pattern: "ME",
  mamba_num_heads: 2, mamba_head_dim: 2, ssm_state_size: 3, n_groups: 1, conv_kernel: 2,
  n_routed_experts: 2, num_experts_per_tok: 1, moe_intermediate_size: 3, moe_shared_expert_intermediate_size: 5,
};
// in_proj rows: z (4) + xBC (4 + 2*3) + dt (2) = 16; conv dim 10.
function tensors(): Record<string, TensorSpec> {
  const t = (shape: number[]): TensorSpec => ({ dtype: "F32", shape });
  return {
    "backbone.embeddings.weight": t([10, 4]),
    "backbone.norm_f.weight": t([4]),
    "lm_head.weight": t([10, 4]),
    "backbone.layers.0.norm.weight": t([4]),
    "backbone.layers.0.mixer.in_proj.weight": t([16, 4]),
    "backbone.layers.0.mixer.conv1d.weight": t([10, 1, 2]),
    "backbone.layers.0.mixer.conv1d.bias": t([10]),
    "backbone.layers.0.mixer.dt_bias": t([2]),
    "backbone.layers.0.mixer.A_log": t([2]),
    "backbone.layers.0.mixer.D": t([2]),
    "backbone.layers.0.mixer.norm.weight": t([4]),
    "backbone.layers.0.mixer.out_proj.weight": t([4, 4]),
    "backbone.layers.1.norm.weight": t([4]),
    "backbone.layers.1.mixer.gate.weight": t([2, 4]),
    "backbone.layers.1.mixer.gate.e_score_correction_bias": t([2]),
    "backbone.layers.1.mixer.experts.0.up_proj.weight": t([3, 4]),
    "backbone.layers.1.mixer.experts.0.down_proj.weight": t([4, 3]),
    "backbone.layers.1.mixer.experts.1.up_proj.weight": t([3, 4]),
    "backbone.layers.1.mixer.experts.1.down_proj.weight": t([4, 3]),
    "backbone.layers.1.mixer.shared_experts.up_proj.weight": t([5, 4]),
    "backbone.layers.1.mixer.shared_experts.down_proj.weight": t([4, 5]),
  };
}

function checkpoint(mutate: (t: Record<string, TensorSpec>) => void = () => {}): string {
  const dir = mkdtempSync(join(tmpdir(), "lm-ckpt-"));
  writeFileSync(join(dir, "config.json"), JSON.stringify(CONFIG));
  const t = tensors();
  mutate(t);
  writeSafetensors(join(dir, "model.safetensors"), t);
  return dir;
}

function rejects(dir: string, re: RegExp) {
  assert.throws(() => readCheckpoint(dir), (e: unknown) => e instanceof LatentMeshError && re.test(e.message) && !e.message.includes("\n"), `expected ${re}`);
}

describe("checkpoint loading", () => {
  it("accepts a complete checkpoint and locates every tensor's bytes", () => {
    const ck = readCheckpoint(checkpoint());
    assert.equal(ck.tensors.length, 21);
    const emb = ck.tensors.find((t) => t.name === "backbone.embeddings.weight");
    assert.equal(emb?.nbytes, 10 * 4 * 4);
    assert.ok((emb?.offset ?? 0) > 8);
  });

  it("names a missing tensor and its expected shape", () => {
    rejects(checkpoint((t) => delete t["backbone.layers.0.mixer.D"]), /missing tensor backbone\.layers\.0\.mixer\.D \(expected shape \[2\]\)/);
  });

  it("names a mis-shaped tensor with both shapes", () => {
    rejects(checkpoint((t) => (t["backbone.layers.0.mixer.in_proj.weight"] = { dtype: "F32", shape: [15, 4] })), /in_proj\.weight has shape \[15, 4\], expected \[16, 4\]/);
  });

  it("rejects an unknown tensor but ignores mtp.* tensors", () => {
    rejects(checkpoint((t) => (t["backbone.layers.0.mixer.extra"] = { dtype: "F32", shape: [1] })), /unexpected tensor backbone\.layers\.0\.mixer\.extra/);
    const ck = readCheckpoint(checkpoint((t) => (t["mtp.layers.0.enorm.weight"] = { dtype: "F32", shape: [4] })));
    assert.ok(ck.tensors.some((t) => t.name === "mtp.layers.0.enorm.weight"));
  });

  it("rejects unsupported dtypes and truncated files", () => {
    const dir = checkpoint();
    writeSafetensors(join(dir, "model.safetensors"), tensors(), { headerOverride: JSON.stringify({ x: { dtype: "I8", shape: [1], data_offsets: [0, 1] } }) });
    rejects(dir, /tensor x has dtype I8/);
    writeFileSync(join(dir, "model.safetensors"), Buffer.from([1, 2, 3]));
    rejects(dir, /not a safetensors file/);
    writeFileSync(join(dir, "config.json"), "{ not json");
    rejects(dir, /config\.json: not valid JSON/);
  });

  it("reads sharded checkpoints through model.safetensors.index.json", () => {
    const dir = mkdtempSync(join(tmpdir(), "lm-shard-"));
    writeFileSync(join(dir, "config.json"), JSON.stringify(CONFIG));
    const all = Object.entries(tensors());
    const a = Object.fromEntries(all.slice(0, 10)), b = Object.fromEntries(all.slice(10));
    writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), a);
    writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), b);
    const map = Object.fromEntries([...Object.keys(a).map((k) => [k, "model-00001-of-00002.safetensors"]), ...Object.keys(b).map((k) => [k, "model-00002-of-00002.safetensors"])]);
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: map }));
    const ck = readCheckpoint(dir);
    assert.equal(ck.tensors.length, 21);
    assert.equal(new Set(ck.tensors.map((t) => t.file)).size, 2);
  });

  it("accepts transformers' in-memory spellings: model. prefix and stacked 3-D experts", () => {
    const ck = readCheckpoint(
      checkpoint((t) => {
        for (const k of Object.keys(t)) {
          if (k.includes(".experts.")) delete t[k];
          else if (k.startsWith("backbone.")) {
            t[k.replace(/^backbone\./, "model.")] = t[k] as TensorSpec;
            delete t[k];
          }
        }
        t["model.layers.1.mixer.experts.up_proj"] = { dtype: "BF16", shape: [2, 3, 4] };
        t["model.layers.1.mixer.experts.down_proj"] = { dtype: "BF16", shape: [2, 4, 3] };
      }),
    );
    const up1 = ck.tensors.find((t) => t.name === "backbone.layers.1.mixer.experts.1.up_proj.weight");
    const up0 = ck.tensors.find((t) => t.name === "backbone.layers.1.mixer.experts.0.up_proj.weight");
    assert.deepEqual(up1?.shape, [3, 4]);
    assert.equal((up1?.offset ?? 0) - (up0?.offset ?? 0), 3 * 4 * 2, "expert 1 starts one expert (12 bf16 values) after expert 0");
  });

  it("takes eos ids from generation_config.json, a list like [2, 11]", () => {
    const dir = checkpoint();
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [2, 11] }));
    assert.deepEqual(readCheckpoint(dir).eosTokenIds, [2, 11]);
  });
});
