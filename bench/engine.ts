/**
 * Engine benchmark: decode ms/step at several batch sizes (after prefilling each sequence to the
 * context length) and prefill tokens/s at several prompt lengths, each beside its roofline from the
 * same run — bytes moved ÷ measured copy bandwidth for decode, FLOPs ÷ measured GEMM rate for
 * prefill (bench/engine-model.ts counts both from the config). Prints a markdown table.
 */
import { performance } from "node:perf_hooks";
import type { ModelConfig } from "../contracts/model-config.js";
import { Engine, measureRoofline, type StepSequence } from "../worker/engine.js";
import { decodeBytes, modelCosts } from "./engine-model.js";

export interface EngineBenchOptions {
  readonly modelDir: string;
  readonly loadFormat: "auto" | "dummy";
  readonly backend: "cpu" | "cuda";
  readonly batches: readonly number[];
  readonly context: number;
  readonly prefill: readonly number[];
  readonly steps: number;
  readonly threads: number;
  readonly progress: (line: string) => void;
}

const KV_BLOCK = 16;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
/** Prefill several sequences per step up to this many tokens. */
const PREFILL_STEP_TOKENS = 8192;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

function promptTokens(cfg: ModelConfig, n: number, salt: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 13) % cfg.vocabSize);
}

export async function runEngineBench(o: EngineBenchOptions): Promise<string> {
  const roof = await measureRoofline(o.backend, o.threads);
  o.progress(`measured ceilings: copy ${roof.copyGBps.toFixed(1)} GB/s, GEMM ${roof.matmulTflops.toFixed(2)} TFLOP/s`);
  const maxBatch = Math.max(1, ...o.batches);
  const maxPrefill = Math.max(0, ...o.prefill);
  const perSeqBlocks = Math.ceil((o.context + o.steps + 4) / KV_BLOCK);
  const prefillBlocks = Math.ceil((maxPrefill + 2) / KV_BLOCK);
  const engine = await Engine.load({
    modelDir: o.modelDir,
    loadFormat: o.loadFormat,
    backend: o.backend,
    maxSlots: maxBatch,
    kvBlockSize: KV_BLOCK,
    numKvBlocks: Math.max(maxBatch * perSeqBlocks, prefillBlocks),
    threads: o.threads,
    onProgress: o.progress,
  });
  const cfg = engine.config;
  const costs = modelCosts(cfg);
  const rows: string[] = [];
  try {
    for (const B of o.batches) {
      const tables = Array.from({ length: B }, (_, s) => Int32Array.from({ length: perSeqBlocks }, (_, i) => s * perSeqBlocks + i));
      const last = new Int32Array(B);
      const perStep = Math.max(1, Math.floor(PREFILL_STEP_TOKENS / o.context));
      for (let s0 = 0; s0 < B; s0 += perStep) {
        const seqs: StepSequence[] = [];
        for (let s = s0; s < Math.min(B, s0 + perStep); s++) {
          seqs.push({ slotId: s, tokens: promptTokens(cfg, o.context, s), position: 0, blockTable: tables[s] as Int32Array, sample: true, logits: "none", sampling: GREEDY });
        }
        const r = await engine.step(seqs);
        seqs.forEach((_, i) => (last[s0 + i] = r.tokens[i] ?? 0));
      }
      o.progress(`batch ${B}: prefilled ${B} × ${o.context} tokens`);
      const times: number[] = [];
      for (let step = 0; step < o.steps + 2; step++) {
        const seqs: StepSequence[] = Array.from({ length: B }, (_, s) => ({
          slotId: s, tokens: Int32Array.of(last[s] ?? 0), position: o.context + step, blockTable: tables[s] as Int32Array, sample: true, logits: "none", sampling: GREEDY,
        }));
        const t0 = performance.now();
        const r = await engine.step(seqs);
        if (step >= 2) times.push(performance.now() - t0);
        for (let s = 0; s < B; s++) last[s] = r.tokens[s] ?? 0;
      }
      const ms = median(times);
      // the cpu backend keeps fp32 weights, the cuda backend bf16
      const roofMs = (decodeBytes(cfg, B, o.context, o.backend === "cpu" ? 4 : 2) / (roof.copyGBps * 1e9)) * 1e3;
      rows.push(`| decode, batch ${B}, context ${o.context} | ${ms.toFixed(2)} ms/step (${((B * 1e3) / ms).toFixed(0)} tok/s) | ${roofMs.toFixed(2)} ms | ${(roofMs / ms).toFixed(3)} |`);
      o.progress(rows[rows.length - 1] as string);
    }
    for (const T of o.prefill) {
      const table = Int32Array.from({ length: prefillBlocks }, (_, i) => i);
      const times: number[] = [];
      for (let rep = 0; rep < 2; rep++) {
        const t0 = performance.now();
        await engine.step([{ slotId: 0, tokens: promptTokens(cfg, T, 99), position: 0, blockTable: table, sample: true, logits: "none", sampling: GREEDY }]);
        times.push(performance.now() - t0);
      }
      const ms = Math.min(...times);
      const roofMs = ((T * costs.flopsPerToken) / (roof.matmulTflops * 1e12)) * 1e3;
      rows.push(`| prefill ${T} tokens, one sequence | ${((T * 1e3) / ms).toFixed(0)} tok/s (${ms.toFixed(1)} ms) | ${roofMs.toFixed(1)} ms | ${(roofMs / ms).toFixed(3)} |`);
      o.progress(rows[rows.length - 1] as string);
    }
  } finally {
    engine.close();
  }
  return [
    `backend ${o.backend}, ${o.loadFormat} weights of ${o.modelDir} (${(engine.info.numParameters / 1e6).toFixed(1)} M parameters)`,
    `ceilings measured in this run: copy ${roof.copyGBps.toFixed(1)} GB/s, GEMM ${roof.matmulTflops.toFixed(2)} TFLOP/s`,
    "",
    "| what | measured | roofline | ratio (roofline / measured) |",
    "|---|---|---|---|",
    ...rows,
  ].join("\n");
}
