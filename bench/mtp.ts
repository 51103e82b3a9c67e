/**
 * MTP speculation benchmark (issue 7): the verify/decode cost ratio by batch size and depth k, and
 * what it buys at given acceptance.
 *
 * For each batch size B: B sequences are prefilled to `context` tokens, then timed decode steps run
 * (a) on an engine loaded without MTP (plain decode, the baseline), (b) on one with MTP verifying k
 * drafts per sequence (the engine's own drafts, proposing k for the next step) for each k. Random
 * weights accept almost nothing, but a verify step costs the same whatever is accepted (k+1
 * positions, per-position Mamba states, the MTP head's rows and k draft passes), so
 * ratio(B, k) = t_mtp(B, k) / t_plain(B) is the true cost. Acceptance is then injected: a mean
 * accepted length L (tokens per step at k = 3, e.g. Super's reported 2.0, 2.8, 3.45) fixes a constant
 * per-position rate α with 1 + α + α² + α³ = L, depth k emits E(k) = Σ_{j≤k} α^j tokens per step, and
 * speedup(B, k) = E(k) / ratio(B, k). Adaptive k (worker/speculation.ts) picks the k maximising
 * E(k) / t(B, k) — the table shows it next to the best fixed k.
 */
import { performance } from "node:perf_hooks";
import { Engine, type StepSequence } from "../worker/engine.js";
import { AcceptanceStats, chooseDraftTokens, StepCostModel } from "../worker/speculation.js";

export interface MtpBenchOptions {
  readonly modelDir: string;
  readonly loadFormat: "auto" | "dummy";
  readonly backend: "cpu" | "cuda";
  readonly batches: readonly number[];
  readonly ks: readonly number[];
  readonly context: number;
  readonly steps: number;
  /** Plain and MTP engines loaded in turn this many times; each cell keeps its fastest round (default 1). */
  readonly rounds?: number;
  readonly threads: number;
  /** Mean accepted lengths (tokens per verify step at k = 3) to project speedups for. */
  readonly acceptance: readonly number[];
  readonly progress: (line: string) => void;
}

const KV_BLOCK = 16;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** α with 1 + α + α² + α³ = L (bisection; L in [1, 4]). */
export function rateForLength(L: number): number {
  let lo = 0, hi = 1;
  for (let i = 0; i < 60; i++) {
    const a = (lo + hi) / 2;
    if (1 + a + a * a + a * a * a < L) lo = a;
    else hi = a;
  }
  return (lo + hi) / 2;
}

/** An AcceptanceStats whose per-position rates are α (many synthetic steps). */
function injected(alpha: number, maxK: number): AcceptanceStats {
  const a = new AcceptanceStats();
  const N = 100_000;
  // counts so that rate(j) ≈ α exactly: of the drafts reaching position j, α accepted
  let reach = N;
  for (let j = 0; j < maxK; j++) {
    const acc = Math.round(reach * alpha);
    a.draftedPerPos[j] = j === 0 ? N : (a.acceptedPerPos[j - 1] as number);
    a.acceptedPerPos[j] = acc;
    reach = acc;
  }
  return a;
}

async function decodeTimes(engine: Engine, B: number, context: number, steps: number, k: number, vocab: number, mtp: boolean): Promise<number> {
  const perSeq = Math.ceil((context + steps * (2 * k + 2) + 8) / KV_BLOCK);
  const tables = Array.from({ length: B }, (_, s) => Int32Array.from({ length: perSeq }, (_, i) => s * perSeq + i));
  const prompt = (s: number) => Int32Array.from({ length: context }, (_, i) => (i * 7919 + s * 104729 + 13) % vocab);
  const last = new Int32Array(B);
  const drafts: number[][] = Array.from({ length: B }, () => []);
  const position = new Array<number>(B).fill(context);
  const r0 = await engine.step(Array.from({ length: B }, (_, s): StepSequence => ({ slotId: s, tokens: prompt(s), position: 0, blockTable: tables[s] as Int32Array, sample: true, logits: "none", sampling: GREEDY, ...(k ? { draftTokens: k } : {}) })));
  for (let s = 0; s < B; s++) {
    last[s] = r0.tokens[s] ?? 0;
    drafts[s] = Array.from(r0.drafts?.subarray(s * k, (s + 1) * k) ?? []);
  }
  const times: number[] = [];
  for (let step = 0; step < steps + 2; step++) {
    const seqs = Array.from({ length: B }, (_, s): StepSequence => ({
      slotId: s, tokens: Int32Array.from([last[s] ?? 0, ...(drafts[s] ?? [])]), position: position[s] as number, blockTable: tables[s] as Int32Array,
      sample: true, logits: "none", sampling: GREEDY, ...(k ? { numDrafts: (drafts[s] ?? []).length, draftTokens: k } : mtp ? { mtpSkip: true } : {}),
    }));
    const t0 = performance.now();
    const r = await engine.step(seqs);
    if (step >= 2) times.push(performance.now() - t0);
    for (let s = 0; s < B; s++) {
      const a = r.numAccepted?.[s] ?? 0;
      position[s] = (position[s] as number) + 1 + a;
      last[s] = r.tokens[s] ?? 0;
      drafts[s] = Array.from(r.drafts?.subarray(s * k, (s + 1) * k) ?? []);
    }
  }
  return median(times);
}

export async function runMtpBench(o: MtpBenchOptions): Promise<string> {
  const maxB = Math.max(...o.batches);
  const maxK = Math.max(...o.ks);
  const perSeq = Math.ceil((o.context + o.steps * (2 * maxK + 2) + 8) / KV_BLOCK);
  const load = (mtp: boolean) =>
    Engine.load({ modelDir: o.modelDir, loadFormat: o.loadFormat, backend: o.backend, maxSlots: maxB, kvBlockSize: KV_BLOCK, numKvBlocks: maxB * perSeq, threads: o.threads, onProgress: o.progress, mtp });
  const plainMs = new Map<number, number>();
  const mtpMs = new Map<string, number>();
  const keep = <K>(m: Map<K, number>, key: K, ms: number) => m.set(key, Math.min(m.get(key) ?? Infinity, ms));
  const rounds = o.rounds ?? 1;
  for (let round = 1; round <= rounds; ++round) {
    const tag = rounds > 1 ? `round ${round}/${rounds}, ` : "";
    const plain = await load(false);
    try {
      for (const B of o.batches) {
        const ms = await decodeTimes(plain, B, o.context, o.steps, 0, plain.config.vocabSize, false);
        keep(plainMs, B, ms);
        o.progress(`${tag}batch ${B}: plain decode ${ms.toFixed(2)} ms/step`);
      }
    } finally {
      plain.close();
    }
    const spec = await load(true);
    try {
      for (const B of o.batches)
        for (const k of o.ks) {
          const ms = await decodeTimes(spec, B, o.context, o.steps, k, spec.config.vocabSize, true);
          keep(mtpMs, `${B}:${k}`, ms);
          o.progress(`${tag}batch ${B}, k ${k}: ${ms.toFixed(2)} ms/step`);
        }
    } finally {
      spec.close();
    }
  }
  const lines = [
    `backend ${o.backend}, ${o.loadFormat} weights of ${o.modelDir}, context ${o.context}, median of ${o.steps} steps${rounds > 1 ? `, fastest of ${rounds} rounds (plain and MTP engines loaded in turn)` : ""}`,
    "",
    "Cost: verify step with k drafts per sequence (MTP engine; k = 0 skips the MTP head) ÷ plain decode step (engine without MTP).",
    "",
    `| batch | plain ms/step | ${o.ks.map((k) => `k=${k} ms (ratio)`).join(" | ")} |`,
    `|---|---|${o.ks.map(() => "---").join("|")}|`,
  ];
  for (const B of o.batches) {
    const p = plainMs.get(B) as number;
    lines.push(`| ${B} | ${p.toFixed(2)} | ${o.ks.map((k) => `${(mtpMs.get(`${B}:${k}`) as number).toFixed(2)} (${((mtpMs.get(`${B}:${k}`) as number) / p).toFixed(2)})`).join(" | ")} |`);
  }
  lines.push("", "Projected speedup vs MTP off = E(k) / ratio(B, k) at injected mean accepted length L (at k = 3); adaptive = worker/speculation.ts's choice from the same measurements.", "");
  lines.push(`| L | batch | ${o.ks.map((k) => `k=${k}`).join(" | ")} | adaptive k (speedup) |`, `|---|---|${o.ks.map(() => "---").join("|")}|---|`);
  for (const L of o.acceptance) {
    const alpha = rateForLength(L);
    const acc = injected(alpha, maxK);
    for (const B of o.batches) {
      const p = plainMs.get(B) as number;
      const cost = new StepCostModel();
      for (const k of o.ks) cost.observe(B, k, mtpMs.get(`${B}:${k}`) as number);
      const speed = (k: number) => acc.expectedTokens(k) / ((mtpMs.get(`${B}:${k}`) as number) / p);
      const chosen = chooseDraftTokens({ batchSize: B, maxDraftTokens: maxK, acceptance: acc, cost });
      const chosenSpeed = o.ks.includes(chosen) ? speed(chosen) : NaN;
      lines.push(`| ${L} | ${B} | ${o.ks.map((k) => `${speed(k).toFixed(2)}×`).join(" | ")} | ${chosen} (${chosenSpeed.toFixed(2)}×) |`);
    }
  }
  return lines.join("\n");
}
