/**
 * MTP speculative decoding is exact (issue 7): on random MTP checkpoints (an `*E` LatentMoE MTP
 * block, real safetensors with the released `mtp.*` names, and --load-format dummy), greedy output
 * and logits with --speculative-tokens 1, 2, 3 and auto equal those with speculation off; with
 * sampling, the tokens keep their distribution (a two-sample chi-square over many seeds) and, the
 * acceptance rule being a coupling with the plain sampler, equal the plain tokens seed by seed.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseModelConfig } from "../../contracts/model-config.js";
import { expectedMtpTensors, expectedTensors } from "../../worker/checkpoint.js";
import { Engine } from "../../worker/engine.js";
import type { NativeSampling } from "../../worker/native.js";
import { writeSafetensors, type TensorSpec } from "../support/safetensors.js";
import { CLI } from "../support/paths.js";

/** A tiny hybrid model with one MTP layer of pattern `*E` (attention, then LatentMoE). */
function mtpConfig(vocab: number): Record<string, unknown> {
  return {
    model_type: "nemotron_h", vocab_size: vocab, hidden_size: 32, hybrid_override_pattern: "M*EM",
    mtp_hybrid_override_pattern: "*E", num_nextn_predict_layers: 1,
    mamba_num_heads: 4, mamba_head_dim: 8, ssm_state_size: 8, n_groups: 2, conv_kernel: 4, chunk_size: 8,
    num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8,
    moe_intermediate_size: 16, moe_shared_expert_intermediate_size: 24, n_routed_experts: 8, num_experts_per_tok: 2,
    n_group: 2, topk_group: 1, moe_latent_size: 12, routed_scaling_factor: 1.5, eos_token_id: vocab - 1, tie_word_embeddings: false,
  };
}

function dir(config: Record<string, unknown>): string {
  const d = mkdtempSync(join(tmpdir(), "lm-mtp-"));
  writeFileSync(join(d, "config.json"), JSON.stringify(config));
  return d;
}

/**
 * A safetensors checkpoint of random weights with every main and MTP tensor under its released
 * name. lm_head equals the embeddings and the MTP head nearly passes the next token's embedding
 * through (eh_proj = [I | 0], its blocks' output projections scaled down), so its drafts mostly
 * repeat the last token — often right for a small random model — and acceptance happens.
 */
function safetensorsCheckpoint(config: Record<string, unknown>): string {
  const d = dir(config);
  const cfg = parseModelConfig(config);
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const tensors: Record<string, TensorSpec> = {};
  for (const [name, t] of [...expectedTensors(cfg), ...expectedMtpTensors(cfg)]) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const fanIn = t.shape.length >= 2 ? (t.shape[t.shape.length - 1] as number) : 1;
    const H = cfg.hiddenSize;
    const init = (_: unknown, i: number): number => {
      if (name === "mtp.layers.0.eh_proj.weight") return i % (2 * H) === Math.floor(i / (2 * H)) ? 1 : 0;
      if (name.startsWith("mtp.") && /(o_proj|down_proj)\.weight$/.test(name)) return (0.05 * rand()) / Math.sqrt(fanIn);
      if (/norm\.weight$|final_layernorm|enorm|hnorm|\.D$/.test(name)) return 1 + 0.1 * rand();
      if (name.endsWith("A_log")) return 0.5 + 0.5 * rand();
      if (name.endsWith("dt_bias")) return -2 + rand();
      if (name.includes("embeddings")) return rand();
      return rand() / Math.sqrt(fanIn);
    };
    tensors[name] = { dtype: "F32", shape: [...t.shape], data: Array.from({ length: n }, init) };
  }
  tensors["lm_head.weight"] = { ...(tensors["lm_head.weight"] as TensorSpec), data: (tensors["backbone.embeddings.weight"] as TensorSpec).data as number[] };
  writeSafetensors(join(d, "model.safetensors"), tensors);
  return d;
}

interface LogitsRun {
  generated: number[];
  decode: Buffer;
  speculative?: { tokens_per_step: number; accepted_tokens: number };
}

function logits(model: string, extra: string[], k: string): LogitsRun {
  const out = mkdtempSync(join(tmpdir(), "lm-mtp-out-"));
  const r = spawnSync(process.execPath, [CLI, "logits", "--log-level", "warn", "--model", model, ...extra, "--prompt-ids", "1,5,3,4,2,0", "--decode", "40", "--speculative-tokens", k, "--out", out], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const result = JSON.parse(readFileSync(join(out, "result.json"), "utf8")) as { generated_ids: number[]; speculative?: LogitsRun["speculative"] };
  return { generated: result.generated_ids, decode: readFileSync(join(out, "decode_logits.f32")), ...(result.speculative ? { speculative: result.speculative } : {}) };
}

describe("MTP speculative decoding is exact", () => {
  const cases = [
    { name: "safetensors checkpoint with the released mtp.* names", model: () => safetensorsCheckpoint(mtpConfig(6)), extra: [] as string[], accepts: true },
    { name: "--load-format dummy", model: () => dir(mtpConfig(6)), extra: ["--load-format", "dummy"], accepts: false },
  ];
  for (const c of cases) {
    it(`${c.name}: greedy tokens and logits with --speculative-tokens 1, 2, 3, auto equal speculation off`, () => {
      const model = c.model();
      const off = logits(model, c.extra, "0");
      let accepted = 0;
      for (const k of ["1", "2", "3", "auto"]) {
        const on = logits(model, c.extra, k);
        assert.deepEqual(on.generated, off.generated, `k=${k}: generated ids differ`);
        assert.ok(on.decode.equals(off.decode), `k=${k}: decode logits differ`);
        assert.ok(on.speculative && on.speculative.tokens_per_step >= 1, `k=${k}: result.json reports tokens per step`);
        accepted += on.speculative.accepted_tokens;
      }
      if (c.accepts) assert.ok(accepted > 0, "some drafts were accepted (the acceptance path ran)");
    });
  }

  it("sampling: tokens keep their distribution (chi-square over seeds) and equal the plain tokens seed by seed", async () => {
    const model = safetensorsCheckpoint(mtpConfig(6));
    const load = (mtp: boolean) => Engine.load({ modelDir: model, loadFormat: "auto", backend: "cpu", maxSlots: 1, kvBlockSize: 8, numKvBlocks: 4, threads: 1, mtp });
    const [plain, spec] = await Promise.all([load(false), load(true)]);
    const V = 6, GEN = 5, SEEDS = 300, blockTable = Int32Array.of(0, 1, 2, 3);
    const prompt = Int32Array.of(1, 4, 2);
    let accepted = 0;
    const run = async (e: Engine, seed: number, k: number): Promise<number[]> => {
      const sampling: NativeSampling = { temperature: 1, topK: 0, topP: 1, seed };
      let r = await e.step([{ slotId: 0, tokens: prompt, position: 0, blockTable, sample: true, logits: "none", sampling, ...(k ? { draftTokens: k } : {}) }]);
      const out = [r.tokens[0] as number];
      let position = prompt.length;
      let drafts = Array.from(r.drafts);
      while (out.length < GEN) {
        const fed = [out[out.length - 1] as number, ...drafts];
        r = await e.step([{ slotId: 0, tokens: Int32Array.from(fed), position, blockTable, sample: true, logits: "none", sampling, ...(k ? { numDrafts: drafts.length, draftTokens: k } : {}) }]);
        const a = r.numAccepted[0] as number;
        accepted += a;
        out.push(...drafts.slice(0, a), r.tokens[0] as number);
        position += 1 + a;
        drafts = Array.from(r.drafts);
      }
      return out.slice(0, GEN);
    };
    const hist = () => Array.from({ length: GEN }, () => new Array<number>(V).fill(0));
    const withMtp = hist(), without = hist();
    let sameSeedEqual = 0;
    try {
      for (let s = 0; s < SEEDS; s++) {
        const a = await run(spec, s, 2);
        const b = await run(plain, SEEDS + s, 0); // independent seeds: a real two-sample test
        const c = await run(plain, s, 0);
        if (a.join() === c.join()) sameSeedEqual++;
        const count = (h: number[][], i: number, t: number) => ((h[i] as number[])[t] = ((h[i] as number[])[t] ?? 0) + 1);
        a.forEach((t, i) => count(withMtp, i, t));
        b.forEach((t, i) => count(without, i, t));
      }
    } finally {
      plain.close();
      spec.close();
    }
    assert.equal(sameSeedEqual, SEEDS, "speculative sampling gives the plain tokens for the same seed");
    assert.ok(accepted > 0, "some drafts were accepted");
    // two-sample chi-square per generated position, df ≤ V-1 = 5: p = 0.001 critical value 20.5
    for (let i = 1; i < GEN; i++) {
      let chi = 0;
      for (let t = 0; t < V; t++) {
        const x = (withMtp[i] as number[])[t] as number, y = (without[i] as number[])[t] as number;
        if (x + y > 0) chi += (x - y) ** 2 / (x + y);
      }
      assert.ok(chi < 20.5, `position ${i}: chi-square ${chi.toFixed(2)} (histograms ${withMtp[i]} vs ${without[i]})`);
    }
  });
});

describe("MTP in the worker loop", () => {
  it("batched greedy decoding with adaptive depth emits the plain tokens and reports acceptance", async () => {
    const { EngineLoop } = await import("../../worker/loop.js");
    const { Scheduler } = await import("../../worker/scheduler.js");
    const { Sequence } = await import("../../worker/sequence.js");
    const { KvBlockPool, SlotPool } = await import("../../worker/slots.js");
    const { SpeculationPolicy } = await import("../../worker/speculation.js");
    const { createLogger } = await import("../../core/log.js");
    const model = safetensorsCheckpoint(mtpConfig(6));
    const prompts = [[1, 2, 3], [4, 0, 1, 5, 2], [3], [5, 5, 1, 0]];
    const run = async (mtp: boolean) => {
      const engine = await Engine.load({ modelDir: model, loadFormat: "auto", backend: "cpu", maxSlots: 4, kvBlockSize: 4, numKvBlocks: 64, threads: 1, mtp });
      const scheduler = new Scheduler({ maxRunning: 4, stepTokenBudget: 64 }, new SlotPool(4), new KvBlockPool(64, 4));
      const out = new Map<string, number[]>();
      const log = createLogger({ name: "test", level: "warn", format: "json" });
      const policy = mtp ? new SpeculationPolicy({ mode: "auto", max: 3 }) : null;
      const loop = new EngineLoop(engine, scheduler, { onStep: (os) => os.forEach((o) => out.set(o.seq.requestId, [...(out.get(o.seq.requestId) ?? []), ...o.tokens])), onCancelled: () => {}, onFailed: (_, e) => assert.fail(e) }, log, undefined, null, policy);
      loop.start();
      prompts.forEach((p, i) => loop.submit(new Sequence({ requestId: `r${i}`, attempt: 0, promptTokens: p, maxTokens: 30, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, ignoreEos: true, stopTokenIds: new Set(), arrivalMs: 0 })));
      await loop.whenIdle();
      await loop.stop();
      engine.close();
      return { out, stats: loop.stats, policy };
    };
    const plain = await run(false);
    const spec = await run(true);
    for (let i = 0; i < prompts.length; i++) assert.deepEqual(spec.out.get(`r${i}`), plain.out.get(`r${i}`), `r${i}`);
    assert.equal(plain.out.get("r0")?.length, 30);
    assert.ok((spec.policy?.acceptance.numAcceptedTokens ?? 0) > 0, "drafts were accepted");
    assert.ok(spec.stats.mtpAcceptance > 1, `load reports carry acceptance > 1 (${spec.stats.mtpAcceptance})`);
  });
});
