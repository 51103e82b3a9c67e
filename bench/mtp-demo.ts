/**
 * MTP speculation on the trained demo model (issue 7): tokens per verify step and wall-clock speedup
 * vs MTP off, through the worker's own loop and scheduler (continuous batching, chunked prefill,
 * stop at end-of-sequence), on real chat prompts.
 *
 * A dozen user messages are rendered with the checkpoint's chat template. For each batch size B the
 * scheduler runs at most B sequences at once; B = 1 serves each prompt alone, larger B serve
 * max(12, 3B) sequences (the prompts repeated) so the batch stays full but for the tail. Each mode
 * serves the same sequences with greedy sampling and the same max tokens:
 *   off       an engine loaded without MTP (the baseline)
 *   k = K     the MTP engine verifying K drafts per sequence every step (worker/speculation.ts, fixed)
 *   adaptive  the worker's chooser (auto up to max K): k per step from the batch size, measured step
 *             times and running acceptance; its policy stays warm across repetitions as in a worker
 * and every sequence's tokens must equal those of `off` (the bench fails otherwise). One untimed
 * pass warms each mode; then `reps` repetitions each serve every mode once, interleaved in a shuffled
 * order (this shared machine's speed drifts, and a pass is slower right after one on the other engine),
 * and the speedup is the median of the per-repetition ratios to `off`.
 *
 * Run: node dist/bench/mtp-demo.js [--model DIR] [--batches 1,8,32] [--ks 0,1,2,3] [--max-tokens 64] [--reps 5] [--threads N] [--verbose]
 * (k = 0: the MTP engine with speculation off, to separate the cost of having the head loaded).
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { createLogger } from "../core/log.js";
import { repoRoot } from "../core/paths.js";
import { TextCodec } from "../router/tokenizer.js";
import { Engine } from "../worker/engine.js";
import type { StepEngine } from "../worker/engine-port.js";
import { EngineLoop } from "../worker/loop.js";
import type { NativeStepResult, NativeStepSequence } from "../worker/native.js";
import { Scheduler, type StepOutcome } from "../worker/scheduler.js";
import { Sequence } from "../worker/sequence.js";
import { KvBlockPool, SlotPool } from "../worker/slots.js";
import { SpeculationPolicy, type SpeculativeTokens } from "../worker/speculation.js";

export interface MtpDemoBenchOptions {
  readonly modelDir: string;
  readonly batches: readonly number[];
  readonly ks: readonly number[];
  readonly maxTokens: number;
  readonly reps: number;
  readonly threads: number;
  /** Progress lines also list every pass's wall time. */
  readonly verbose?: boolean;
  readonly progress: (line: string) => void;
}

/** Varied user turns the demo model was trained to answer (chat, arithmetic, JSON, man pages, licences, packages). */
export const DEMO_PROMPTS: readonly string[] = [
  "hello",
  "Who are you?",
  "What does the gzip command do?",
  "What is 12 * 7?",
  "Create a JSON object for a person named Maya, aged 31, who lives in Lisbon.",
  "What does the ls command do?",
  "What is 345 + 678?",
  "Which licence does the bash package use?",
  "What does the grep command do?",
  "Tom has 15 apples and gives 4 to Ana. How many apples does he have left?",
  "List three colours as a JSON array.",
  "What can you do?",
];

const KV_BLOCK = 16;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 } as const;

interface Mode {
  readonly name: string;
  readonly mtp: boolean;
  readonly setting: SpeculativeTokens | null;
}

interface Pass {
  readonly wallMs: number;
  readonly outputs: number[][];
  /** Sequence-steps that verified drafts, and the tokens they emitted (accepted drafts + 1 each). */
  readonly verifySteps: number;
  readonly verifyTokens: number;
  /** Sequence-steps after the first token (decode), and the tokens they emitted. */
  readonly decodeSteps: number;
  readonly decodeTokens: number;
  /** Engine steps that fed only decode tokens, and their mean batch size. */
  readonly engineSteps: number;
  readonly meanBatch: number;
}

interface ModeResult {
  readonly wallMs: number;
  readonly tokensPerVerifyStep: number;
  readonly tokensPerDecodeStep: number;
  readonly meanBatch: number;
  /** The loop's step-time curve after the last pass (what its load reports would carry). */
  readonly curve: readonly { batch: number; draftTokens: number; stepMs: number }[];
  /** Median engine time of decode steps at the full batch with this mode's fixed depth in steady state (off: plain; NaN for adaptive). */
  readonly fullBatchStepMs: number;
}

/** One engine step as the bench saw it. */
interface StepSample {
  readonly batch: number;
  /** Every sequence fed exactly one own token (no prefill chunk). */
  readonly decodeOnly: boolean;
  /** Drafts verified per sequence, when all sequences verified the same number and ask that many again; else -1. */
  readonly depth: number;
  readonly ms: number;
}

/** Times every engine step (the loop's own timing feeds its policy; this one feeds the cost table). */
class TimedEngine implements StepEngine {
  samples: StepSample[] = [];
  constructor(private readonly inner: StepEngine) {}
  get mtpCatchesUp(): boolean | undefined {
    return this.inner.mtpCatchesUp;
  }
  async step(seqs: NativeStepSequence[]): Promise<NativeStepResult> {
    const t0 = performance.now();
    const r = await this.inner.step(seqs);
    const ms = performance.now() - t0;
    const fed = seqs.map((s) => s.numDrafts ?? 0);
    const same = fed.every((k, i) => k === fed[0] && (seqs[i]?.draftTokens ?? 0) === k);
    this.samples.push({ batch: seqs.length, decodeOnly: seqs.every((s) => s.position > 0 && s.tokens.length - (s.numDrafts ?? 0) === 1), depth: same ? (fed[0] ?? 0) : -1, ms });
    return r;
  }
}

/** `xs` in an order fixed by `seed` (Fisher-Yates with a small LCG). */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let state = (seed * 2654435761 + 12345) >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    state = (state * 1664525 + 1013904223) >>> 0;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** Serves `prompts` through a fresh scheduler at batch `batch`; `policy` persists across passes. */
async function servePass(engine: StepEngine, eosTokenIds: readonly number[], prompts: readonly number[][], batch: number, maxTokens: number, policy: SpeculationPolicy | null, numKvBlocks: number, stats?: { loop?: EngineLoop }): Promise<Pass> {
  const scheduler = new Scheduler({ maxRunning: batch, stepTokenBudget: Math.max(512, batch * 8) }, new SlotPool(batch), new KvBlockPool(numKvBlocks, KV_BLOCK));
  const outputs = prompts.map((): number[] => []);
  const index = new Map<Sequence, number>();
  let verifySteps = 0, verifyTokens = 0, decodeSteps = 0, decodeTokens = 0, engineSteps = 0, batchSum = 0;
  const sink = {
    onStep(outcomes: readonly StepOutcome[]): void {
      let decoding = 0;
      for (const o of outcomes) {
        const i = index.get(o.seq) as number;
        const out = outputs[i] as number[];
        if (out.length > 0) {
          decodeSteps++;
          decodeTokens += o.tokens.length;
          decoding++;
        }
        if (o.verified) {
          verifySteps++;
          verifyTokens += 1 + o.verified.numAccepted;
        }
        out.push(...o.tokens);
      }
      if (decoding === outcomes.length && decoding > 0) {
        engineSteps++;
        batchSum += decoding;
      }
    },
    onCancelled(): void {},
    onFailed(_seqs: readonly Sequence[], error: Error): void {
      throw error;
    },
  };
  const log = createLogger({ name: "bench", level: "warn", format: "json" });
  const loop = new EngineLoop(engine, scheduler, sink, log, undefined, null, policy);
  if (stats) stats.loop = loop;
  const eos = new Set(eosTokenIds);
  const t0 = performance.now();
  loop.start();
  prompts.forEach((promptTokens, i) => {
    const seq = new Sequence({ requestId: `s${i}`, attempt: 0, promptTokens, maxTokens, sampling: GREEDY, ignoreEos: false, stopTokenIds: eos, arrivalMs: t0 });
    index.set(seq, i);
    loop.submit(seq);
  });
  await loop.whenIdle();
  const wallMs = performance.now() - t0;
  await loop.stop();
  return { wallMs, outputs, verifySteps, verifyTokens, decodeSteps, decodeTokens, engineSteps, meanBatch: engineSteps > 0 ? batchSum / engineSteps : 0 };
}

/** Runs the benchmark and returns the report (markdown tables). Throws when any output differs from MTP off. */
export async function runMtpDemoBench(o: MtpDemoBenchOptions): Promise<string> {
  const codec = TextCodec.load(o.modelDir);
  const rendered = DEMO_PROMPTS.map((content) => codec.encode(codec.applyChatTemplate([{ role: "user", content }]), false));
  const maxK = Math.max(...o.ks);
  const maxB = Math.max(...o.batches);
  const longest = Math.max(...rendered.map((p) => p.length));
  const perSeq = Math.ceil((longest + o.maxTokens + 2 * maxK + 2) / KV_BLOCK);
  const numKvBlocks = maxB * perSeq;
  const modes: Mode[] = [
    { name: "off", mtp: false, setting: null },
    ...o.ks.map((k): Mode => ({ name: `k=${k}`, mtp: true, setting: { mode: "fixed", k } })),
    { name: "adaptive", mtp: true, setting: { mode: "auto", max: maxK } },
  ];
  const load = (mtp: boolean) => Engine.load({ modelDir: o.modelDir, loadFormat: "auto", backend: "cpu", maxSlots: maxB, kvBlockSize: KV_BLOCK, numKvBlocks, threads: o.threads, mtp });
  const plain = await load(false);
  const spec = await load(true).catch((e: unknown) => {
    plain.close();
    throw e;
  });
  // one adaptive policy for the whole run, as one worker's: its cost model keys by batch bucket
  const adaptive = new SpeculationPolicy({ mode: "auto", max: maxK });
  const results = new Map<string, ModeResult>();
  const speedups = new Map<string, number>();
  const baseline = new Map<number, number[][]>();
  try {
    for (const B of o.batches) {
      const n = B === 1 ? rendered.length : Math.max(rendered.length, 3 * B);
      const prompts = Array.from({ length: n }, (_, i) => rendered[i % rendered.length] as number[]);
      const policies = new Map(modes.map((m) => [m.name, m.setting?.mode === "auto" ? adaptive : m.setting ? new SpeculationPolicy(m.setting) : null]));
      const passes = new Map<string, Pass[]>(modes.map((m) => [m.name, []]));
      const holders = new Map<string, { loop?: EngineLoop }>(modes.map((m) => [m.name, {}]));
      const timers = new Map(modes.map((m) => [m.name, new TimedEngine(m.mtp ? spec : plain)]));
      const serve = (m: Mode, timed: boolean) => servePass(timers.get(m.name) as TimedEngine, plain.eosTokenIds, prompts, B, o.maxTokens, policies.get(m.name) ?? null, numKvBlocks, timed ? holders.get(m.name) : undefined);
      for (const m of modes) await serve(m, false); // warm-up (and a warm adaptive policy)
      for (const t of timers.values()) t.samples = [];
      // modes interleave within each repetition, so drift in this machine's speed hits them alike, in a
      // shuffled order: a pass runs measurably slower right after one on the other engine or one that
      // speculated hard (caches), and a fixed order would charge that to the same mode every time
      for (let r = 0; r < o.reps; r++) for (const m of shuffled(modes, r)) passes.get(m.name)?.push(await serve(m, true));
      const off = passes.get("off") as Pass[];
      baseline.set(B, (off[0] as Pass).outputs);
      for (const m of modes) {
        const ps = passes.get(m.name) as Pass[];
        for (const p of ps)
          p.outputs.forEach((out, i) => {
            const ref = (off[0] as Pass).outputs[i] as number[];
            if (out.length !== ref.length || out.some((t, j) => t !== ref[j])) {
              throw new Error(`batch ${B}, ${m.name}: sequence ${i} (${JSON.stringify(DEMO_PROMPTS[i % DEMO_PROMPTS.length])}) differs from MTP off at token ${out.findIndex((t, j) => t !== ref[j])}`);
            }
          });
        const sum = (f: (p: Pass) => number) => ps.reduce((a, p) => a + f(p), 0);
        const r: ModeResult = {
          wallMs: median(ps.map((p) => p.wallMs)),
          tokensPerVerifyStep: sum((p) => p.verifySteps) > 0 ? sum((p) => p.verifyTokens) / sum((p) => p.verifySteps) : 1,
          tokensPerDecodeStep: sum((p) => p.decodeTokens) / Math.max(1, sum((p) => p.decodeSteps)),
          meanBatch: sum((p) => p.meanBatch) / ps.length,
          curve: holders.get(m.name)?.loop?.stats.stepCurve ?? [],
          fullBatchStepMs: median((timers.get(m.name) as TimedEngine).samples.filter((x) => x.decodeOnly && x.batch === B && x.depth === (m.setting?.mode === "fixed" ? m.setting.k : 0)).map((x) => x.ms)),
        };
        results.set(`${B}:${m.name}`, r);
        // paired: each repetition's off time over this mode's in the same repetition
        speedups.set(`${B}:${m.name}`, median(ps.map((p, i) => (off[i] as Pass).wallMs / p.wallMs)));
        if (o.verbose) o.progress(`  ${m.name} passes (ms): ${ps.map((p) => p.wallMs.toFixed(0)).join(" ")}`);
        o.progress(`batch ${B}, ${m.name}: ${r.wallMs.toFixed(1)} ms, ${r.tokensPerVerifyStep.toFixed(2)} tokens/verify step, ${(speedups.get(`${B}:${m.name}`) as number).toFixed(2)}× vs off, mean decode batch ${r.meanBatch.toFixed(1)}`);
      }
    }
  } finally {
    plain.close();
    spec.close();
  }
  const tokens = (B: number) => (baseline.get(B) ?? []).reduce((a, s) => a + s.length, 0);
  const lines = [
    `demo model ${o.modelDir}, CPU backend, ${o.threads} threads; ${DEMO_PROMPTS.length} chat prompts (template-rendered), greedy, max tokens ${o.maxTokens}, stop at eos; ${o.reps} repetitions after a warm-up, modes interleaved in shuffled order; every mode's tokens equal MTP off's (asserted)`,
    "",
    "Tokens per verify step (1 + mean accepted drafts) · speedup vs MTP off (median over repetitions of off's wall time ÷ the mode's, same sequences).",
    "k=0: the MTP engine with speculation off (the head skipped by prompts and decodes alike).",
    "",
    `| batch | sequences | tokens | off ms | ${modes.slice(1).map((m) => m.name).join(" | ")} |`,
    `|---|---|---|---|${modes.slice(1).map(() => "---").join("|")}|`,
  ];
  for (const B of o.batches) {
    const off = results.get(`${B}:off`) as ModeResult;
    const cells = modes.slice(1).map((m) => `${(results.get(`${B}:${m.name}`) as ModeResult).tokensPerVerifyStep.toFixed(2)} · ${(speedups.get(`${B}:${m.name}`) as number).toFixed(2)}×`);
    lines.push(`| ${B} | ${(baseline.get(B) ?? []).length} | ${tokens(B)} | ${off.wallMs.toFixed(0)} | ${cells.join(" | ")} |`);
  }
  lines.push("", "Adaptive: tokens per decode step over all its steps (speculating or not), and its curve (depth and step time per measured batch bucket).", "");
  for (const B of o.batches) {
    const r = results.get(`${B}:adaptive`) as ModeResult;
    lines.push(`- batch ${B}: ${r.tokensPerDecodeStep.toFixed(2)} tokens/decode step; curve ${r.curve.map((p) => `B=${p.batch}: k=${p.draftTokens} ${p.stepMs.toFixed(2)} ms`).join(", ")}`);
  }
  lines.push("", "Cost of a decode step at the full batch (median engine time of steady steps: every sequence verifies k drafts and proposes k), and its ratio to a plain step:", "");
  const fixed = modes.filter((m) => m.setting?.mode !== "auto");
  lines.push(`| batch | ${fixed.map((m) => `${m.name} ms (ratio)`).join(" | ")} |`, `|---|${fixed.map(() => "---").join("|")}|`);
  for (const B of o.batches) {
    const off = (results.get(`${B}:off`) as ModeResult).fullBatchStepMs;
    lines.push(`| ${B} | ${fixed.map((m) => { const ms = (results.get(`${B}:${m.name}`) as ModeResult).fullBatchStepMs; return `${ms.toFixed(2)} (${(ms / off).toFixed(2)})`; }).join(" | ")} |`);
  }
  return lines.join("\n");
}

function intList(v: string, flag: string, min: number): number[] {
  const xs = v.split(",").map((s) => s.trim());
  if (xs.length === 0 || xs.some((s) => !/^\d+$/.test(s) || Number(s) < min)) throw new Error(`--${flag}: expected a comma-separated list of integers >= ${min}, got '${v}'`);
  return xs.map(Number);
}

function int(v: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new Error(`--${flag}: expected an integer ${min}..${max}, got '${v}'`);
  return Number(v);
}

/** Command-line entry: prints the report; bad flags exit 2 with one line, a failed check exits 1. */
export async function main(argv: readonly string[]): Promise<number> {
  let opts: MtpDemoBenchOptions;
  try {
    const { values } = parseArgs({
      args: [...argv],
      options: {
        model: { type: "string", default: resolve(repoRoot(), "test", "fixtures", "demo-chat") },
        batches: { type: "string", default: "1,8,32" },
        ks: { type: "string", default: "0,1,2,3" },
        "max-tokens": { type: "string", default: "64" },
        reps: { type: "string", default: "5" },
        threads: { type: "string", default: String(availableParallelism()) },
        verbose: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
    opts = {
      modelDir: resolve(values.model),
      batches: intList(values.batches, "batches", 1),
      ks: intList(values.ks, "ks", 0).filter((k) => k <= 16),
      maxTokens: int(values["max-tokens"], "max-tokens", 1, 4096),
      reps: int(values.reps, "reps", 1, 100),
      threads: int(values.threads, "threads", 1, 1024),
      verbose: values.verbose,
      progress: (line) => process.stderr.write(`${line}\n`),
    };
    if (opts.ks.length === 0 || Math.max(...opts.ks) === 0) throw new Error("--ks: at least one depth in 1..16");
    if (!existsSync(join(opts.modelDir, "config.json")) || !existsSync(join(opts.modelDir, "tokenizer.json"))) throw new Error(`--model: ${opts.modelDir} has no config.json and tokenizer.json`);
  } catch (e) {
    process.stderr.write(`mtp-demo: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  try {
    process.stdout.write(`${await runMtpDemoBench(opts)}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`mtp-demo: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
