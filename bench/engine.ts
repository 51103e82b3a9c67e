/**
 * Engine benchmark (issues 4 and 9): decode ms/step at several batch sizes and prefill tokens/s at
 * several prompt lengths, each beside its roofline from ceilings measured in the same run — bytes
 * moved ÷ measured copy bandwidth for decode, FLOPs ÷ measured GEMM rate for prefill
 * (bench/engine-model.ts counts both from the config) — plus, on request:
 *
 * - extra cases by name: `decode_b64_ctx8k` (decode batch B at another context) and `mixed_b64_2k`
 *   (decode batch B plus one prefill chunk of N tokens in the same step; ratio = decode-alone step
 *   time ÷ mixed step time);
 * - `profile`: an engine loaded with profiling runs the same decode steps, prefills and mixed steps
 *   eagerly and the per-component device time is tabulated (share of the step, GB/s of the
 *   weight-streaming parts of decode steps);
 * - route skews: every case again on dummy weights with Zipf-like expert popularity;
 * - the transformers baseline (bench/transformers-baseline.py) in a separate process after every
 *   engine is closed (both need ~63 GB on the GPU).
 *
 * Each phase loads its own engine sized for it (dummy weights build on the GPU in about a second).
 * Decode sequences are filled to their context either by a real prefill or, "fast", by one decode
 * step at position context - 1 over KV blocks whose earlier positions hold whatever the memory held:
 * a decode step reads and computes exactly the same amount either way; the fast fill's logits are
 * checked finite, else it falls back to prefilling.
 */
import { spawnSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import type { ModelConfig } from "../contracts/model-config.js";
import { Engine, measureRoofline, type StepSequence } from "../worker/engine.js";
import { componentBytes, decodeBytes, modelCosts } from "./engine-model.js";
import { ceilingsOf, decodeKey, mixedKey, parseBenchLines, prefillKey, ratioOf, sizeKey, type Ceilings, type Metric } from "./results-json.js";

/** An extra case selected by name. */
export type EngineCase = { readonly kind: "decode"; readonly batch: number; readonly context: number } | { readonly kind: "mixed"; readonly batch: number; readonly chunk: number };

const SIZE = "(\\d+)(k?)";
const size = (n: string, k: string) => Number(n) * (k ? 1024 : 1);

/** "decode_b64_ctx8k" | "mixed_b64_2k" (sizes N or Nk = N·1024) → the case; null for anything else. */
export function parseCase(name: string): EngineCase | null {
  let m = new RegExp(`^decode_b(\\d+)_ctx${SIZE}$`).exec(name.trim());
  if (m) {
    const c: EngineCase = { kind: "decode", batch: Number(m[1]), context: size(m[2] as string, m[3] as string) };
    return c.batch >= 1 && c.context >= 1 ? c : null;
  }
  m = new RegExp(`^mixed_b(\\d+)_${SIZE}$`).exec(name.trim());
  if (m) {
    const c: EngineCase = { kind: "mixed", batch: Number(m[1]), chunk: size(m[2] as string, m[3] as string) };
    return c.batch >= 1 && c.chunk >= 1 ? c : null;
  }
  return null;
}

/** The metric key of a case (its canonical name). */
export function caseKey(c: EngineCase, context: number): string {
  return c.kind === "decode" ? decodeKey(c.batch, c.context) : mixedKey(c.batch, c.chunk) + (context === 1024 ? "" : `_ctx${sizeKey(context)}`);
}

export interface TransformersBaseline {
  /** Python interpreter with torch and transformers. */
  readonly python: string;
  /** bench/transformers-baseline.py. */
  readonly script: string;
}

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
  /** Extra cases (parseCase); mixed cases decode at `context`. */
  readonly cases: readonly EngineCase[];
  /** cuda decode graphs; absent: the engine's default (replay). */
  readonly cudaGraphs?: "replay" | "padded" | "off";
  /** Also run the decode cases on an engine loaded with profiling and tabulate its components. */
  readonly profile: boolean;
  /** Dummy-weight routing skews to run every case at (0 = uniform); [0] by default. */
  readonly routeSkews: readonly number[];
  /** How decode sequences reach their context: auto = prefill up to 2K tokens, fast beyond. */
  readonly fill: "auto" | "prefill" | "fast";
  /** Run the transformers baseline after the engine work; null: not run. */
  readonly transformers: TransformersBaseline | null;
}

export interface ProfileRow {
  readonly name: string;
  readonly ms: number;
  readonly share: number;
  readonly bytes?: number;
  readonly gbps?: number;
}
export interface EngineProfile {
  readonly steps: number;
  /** Host wall time per eager profiled step. */
  readonly wallMs: number;
  /** Sum of the components' device time per step. */
  readonly deviceMs: number;
  readonly components: readonly ProfileRow[];
}

export interface EngineBenchReport {
  /** The markdown tables and notes. */
  readonly text: string;
  readonly ceilings: Ceilings;
  readonly metrics: Record<string, Metric>;
  readonly profile: Record<string, EngineProfile>;
  readonly numParameters: number;
}

const KV_BLOCK = 16;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
/** Prefill several sequences per step up to this many tokens. */
const PREFILL_STEP_TOKENS = 8192;
/** fill "auto": prefill for real up to this context. */
const AUTO_PREFILL_MAX_CONTEXT = 2048;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

function promptTokens(cfg: ModelConfig, n: number, salt: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 13) % cfg.vocabSize);
}

const blocksFor = (tokens: number) => Math.ceil(tokens / KV_BLOCK);

/** Block tables of B sequences with `perSeq` blocks each, from block `base` on. */
function tablesOf(B: number, perSeq: number, base = 0): Int32Array[] {
  return Array.from({ length: B }, (_, s) => Int32Array.from({ length: perSeq }, (_, i) => base + s * perSeq + i));
}

/** One row of the table, with its metric. */
interface Row {
  readonly key: string;
  readonly what: string;
  readonly measured: string;
  readonly roofline: string;
  readonly metric: Metric;
}

/** The engine's inputs that outlive one phase. */
interface Ctx {
  readonly o: EngineBenchOptions;
  readonly roof: { copyGBps: number; matmulTflops: number };
  cfg?: ModelConfig;
  numParameters: number;
}

async function withEngine<T>(ctx: Ctx, sizing: { slots: number; blocks: number }, extra: { skew: number; profile?: boolean }, fn: (e: Engine) => Promise<T>): Promise<T> {
  const o = ctx.o;
  const engine = await Engine.load({
    modelDir: o.modelDir,
    loadFormat: o.loadFormat,
    backend: o.backend,
    maxSlots: Math.max(1, sizing.slots),
    kvBlockSize: KV_BLOCK,
    numKvBlocks: Math.max(1, sizing.blocks),
    threads: o.threads,
    onProgress: o.progress,
    ...(o.cudaGraphs ? { cudaGraphs: o.cudaGraphs } : {}),
    ...(extra.profile ? { profile: true } : {}),
    ...(extra.skew ? { dummyRouteSkew: extra.skew } : {}),
  });
  ctx.cfg = engine.config;
  ctx.numParameters = engine.info.numParameters;
  try {
    return await fn(engine);
  } finally {
    engine.close();
  }
}

const validToken = (cfg: ModelConfig, t: number | undefined, s: number) => (t !== undefined && t >= 0 && t < cfg.vocabSize ? t : (s * 31 + 7) % cfg.vocabSize);

/**
 * Brings each sequence (slot i, tables[i]) to `context` tokens and returns the tokens to feed next.
 * Fast: one step at position context - 1 (checked finite), else a real prefill.
 */
async function fill(ctx: Ctx, engine: Engine, slots: readonly number[], tables: readonly Int32Array[], context: number): Promise<Int32Array> {
  const cfg = engine.config;
  const mode = ctx.o.fill === "auto" ? (context <= AUTO_PREFILL_MAX_CONTEXT ? "prefill" : "fast") : ctx.o.fill;
  const B = slots.length;
  const next = new Int32Array(B);
  if (mode === "fast" && context > 1) {
    const r = await engine.step(
      slots.map((slotId, s) => ({ slotId, tokens: Int32Array.of(validToken(cfg, undefined, s)), position: context - 1, blockTable: tables[s] as Int32Array, sample: true, logits: "last", sampling: GREEDY })),
    );
    if (r.logits.every(Number.isFinite)) {
      for (let s = 0; s < B; s++) next[s] = validToken(cfg, r.tokens[s], s);
      return next;
    }
    ctx.o.progress(`fast fill at context ${context} gave non-finite logits (stale KV memory): prefilling for real instead`);
  }
  // Real prefill: chunks of at most PREFILL_STEP_TOKENS, several sequences per step.
  const chunks: { s: number; pos: number; len: number }[] = [];
  for (let s = 0; s < B; s++) for (let pos = 0; pos < context; pos += PREFILL_STEP_TOKENS) chunks.push({ s, pos, len: Math.min(PREFILL_STEP_TOKENS, context - pos) });
  for (let i = 0; i < chunks.length; ) {
    const step: typeof chunks = [];
    let tokens = 0;
    while (i < chunks.length && (step.length === 0 || tokens + (chunks[i] as (typeof chunks)[0]).len <= PREFILL_STEP_TOKENS)) {
      const c = chunks[i++] as (typeof chunks)[0];
      step.push(c);
      tokens += c.len;
    }
    const r = await engine.step(
      step.map((c) => ({
        slotId: slots[c.s] as number,
        tokens: promptTokens(cfg, context, c.s).subarray(c.pos, c.pos + c.len),
        position: c.pos,
        blockTable: tables[c.s] as Int32Array,
        sample: c.pos + c.len === context,
        logits: "none",
        sampling: GREEDY,
      })),
    );
    step.forEach((c, j) => {
      if (c.pos + c.len === context) next[c.s] = validToken(cfg, r.tokens[j], c.s);
    });
  }
  return next;
}

/** Decode steps of all sequences one position on from `position`; returns each step's host ms. */
async function decodeSteps(engine: Engine, slots: readonly number[], tables: readonly Int32Array[], last: Int32Array, position: number, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let step = 0; step < n; step++) {
    const seqs: StepSequence[] = slots.map((slotId, s) => ({ slotId, tokens: Int32Array.of(last[s] ?? 0), position: position + step, blockTable: tables[s] as Int32Array, sample: true, logits: "none", sampling: GREEDY }));
    const t0 = performance.now();
    const r = await engine.step(seqs);
    times.push(performance.now() - t0);
    for (let s = 0; s < slots.length; s++) last[s] = validToken(engine.config, r.tokens[s], s);
  }
  return times;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

async function decodeRow(ctx: Ctx, engine: Engine, B: number, context: number, suffix: string, label: string): Promise<Row> {
  const o = ctx.o;
  const cfg = engine.config;
  const tables = tablesOf(B, blocksFor(context + o.steps + 4));
  const last = await fill(ctx, engine, range(B), tables, context);
  o.progress(`batch ${B}: ${B} sequences at context ${context}`);
  const ms = median((await decodeSteps(engine, range(B), tables, last, context, o.steps + 2)).slice(2));
  // the cpu backend keeps fp32 weights, the cuda backend bf16
  const roofMs = (decodeBytes(cfg, B, context, o.backend === "cpu" ? 4 : 2) / (ctx.roof.copyGBps * 1e9)) * 1e3;
  return {
    key: decodeKey(B, context) + suffix,
    what: `decode, batch ${B}, context ${context}${label}`,
    measured: `${ms.toFixed(2)} ms/step (${((B * 1e3) / ms).toFixed(0)} tok/s)`,
    roofline: `${roofMs.toFixed(2)} ms`,
    metric: { value: ms, unit: "ms/step", ratio: ratioOf(roofMs, ms), against: "roofline: bytes moved ÷ measured copy bandwidth", roofline_ms: roofMs, tokens_per_s: (B * 1e3) / ms },
  };
}

async function prefillRow(ctx: Ctx, engine: Engine, T: number, suffix: string, label: string): Promise<Row> {
  const cfg = engine.config;
  const table = Int32Array.from({ length: blocksFor(T + 2) }, (_, i) => i);
  const times: number[] = [];
  for (let rep = 0; rep < 2; rep++) {
    const t0 = performance.now();
    await engine.step([{ slotId: 0, tokens: promptTokens(cfg, T, 99), position: 0, blockTable: table, sample: true, logits: "none", sampling: GREEDY }]);
    times.push(performance.now() - t0);
  }
  const ms = Math.min(...times);
  const roofMs = ((T * modelCosts(cfg).flopsPerToken) / (ctx.roof.matmulTflops * 1e12)) * 1e3;
  return {
    key: prefillKey(T) + suffix,
    what: `prefill ${T} tokens, one sequence${label}`,
    measured: `${((T * 1e3) / ms).toFixed(0)} tok/s (${ms.toFixed(1)} ms)`,
    roofline: `${roofMs.toFixed(1)} ms`,
    metric: { value: (T * 1e3) / ms, unit: "tok/s", ratio: ratioOf(roofMs, ms), against: "projection + expert FLOPs ÷ measured matmul rate", ms, roofline_ms: roofMs },
  };
}

/** Decode batch B alone, then with one chunk-token prefill in the same step, then the prefill alone. */
async function mixedRow(ctx: Ctx, engine: Engine, B: number, chunk: number, suffix: string, label: string): Promise<Row> {
  const o = ctx.o;
  const cfg = engine.config;
  const perSeq = blocksFor(o.context + 3 * o.steps + 16);
  const tables = tablesOf(B, perSeq);
  const prefillTable = Int32Array.from({ length: blocksFor(chunk + 1) }, (_, i) => B * perSeq + i);
  const last = await fill(ctx, engine, range(B), tables, o.context);
  let pos = o.context;
  const alone = median((await decodeSteps(engine, range(B), tables, last, pos, o.steps + 2)).slice(2));
  pos += o.steps + 2;
  const prompt = promptTokens(cfg, chunk, 7);
  const mixed: number[] = [];
  for (let rep = 0; rep < o.steps + 1; rep++, pos++) {
    const seqs: StepSequence[] = range(B).map((s) => ({ slotId: s, tokens: Int32Array.of(last[s] ?? 0), position: pos, blockTable: tables[s] as Int32Array, sample: true, logits: "none", sampling: GREEDY }));
    seqs.push({ slotId: B, tokens: prompt, position: 0, blockTable: prefillTable, sample: true, logits: "none", sampling: GREEDY });
    const t0 = performance.now();
    const r = await engine.step(seqs);
    if (rep > 0) mixed.push(performance.now() - t0);
    for (let s = 0; s < B; s++) last[s] = validToken(cfg, r.tokens[s], s);
  }
  const mixedMs = median(mixed);
  const prefillAlone: number[] = [];
  for (let rep = 0; rep < 2; rep++) {
    const t0 = performance.now();
    await engine.step([{ slotId: B, tokens: prompt, position: 0, blockTable: prefillTable, sample: true, logits: "none", sampling: GREEDY }]);
    prefillAlone.push(performance.now() - t0);
  }
  const pMs = Math.min(...prefillAlone);
  return {
    key: caseKey({ kind: "mixed", batch: B, chunk }, o.context) + suffix,
    what: `mixed step: decode batch ${B} (context ${o.context}) + one ${chunk}-token prefill chunk${label}`,
    measured: `${mixedMs.toFixed(2)} ms/step vs ${alone.toFixed(2)} ms decode alone (${(mixedMs / alone).toFixed(2)}×; prefill alone ${pMs.toFixed(1)} ms)`,
    roofline: "≤ 1.5× decode alone",
    metric: { value: mixedMs, unit: "ms/step", ratio: ratioOf(alone, mixedMs), against: "decode-alone step time (target ≥ 0.667)", decode_alone_ms: alone, prefill_alone_ms: pMs },
  };
}

function logRow(o: EngineBenchOptions, r: Row): Row {
  o.progress(`| ${r.what} | ${r.measured} | ${r.roofline} | ${r.metric.ratio?.toFixed(3) ?? ""} |`);
  return r;
}

/** One engine for the batches at `context` and the prefill lengths, another for the extra cases. */
async function runCases(ctx: Ctx, skew: number): Promise<Row[]> {
  const o = ctx.o;
  const suffix = skew ? `_skew${skew}` : "";
  const label = skew ? ` (route skew ${skew})` : "";
  const rows: Row[] = [];
  const maxBatch = Math.max(1, ...o.batches);
  const standardBlocks = Math.max(maxBatch * blocksFor(o.context + o.steps + 4), blocksFor(Math.max(0, ...o.prefill) + 2));
  if (o.batches.length || o.prefill.length) {
    await withEngine(ctx, { slots: maxBatch, blocks: standardBlocks }, { skew }, async (engine) => {
      for (const B of o.batches) rows.push(logRow(o, await decodeRow(ctx, engine, B, o.context, suffix, label)));
      for (const T of o.prefill) rows.push(logRow(o, await prefillRow(ctx, engine, T, suffix, label)));
    });
  }
  if (o.cases.length) {
    const slots = Math.max(...o.cases.map((c) => (c.kind === "decode" ? c.batch : c.batch + 1)));
    const blocks = Math.max(
      ...o.cases.map((c) => (c.kind === "decode" ? c.batch * blocksFor(c.context + o.steps + 4) : c.batch * blocksFor(o.context + 3 * o.steps + 16) + blocksFor(c.chunk + 1))),
    );
    await withEngine(ctx, { slots, blocks }, { skew }, async (engine) => {
      for (const c of o.cases) {
        rows.push(logRow(o, c.kind === "decode" ? await decodeRow(ctx, engine, c.batch, c.context, suffix, label) : await mixedRow(ctx, engine, c.batch, c.chunk, suffix, label)));
      }
    });
  }
  return rows;
}

/** Components of profiled decode steps → rows with shares and, where bytes are counted, GB/s. */
export function profileRows(components: readonly { name: string; ms: number }[], steps: number, bytes: Record<string, number>): ProfileRow[] {
  const per = components.map((c) => ({ name: c.name, ms: c.ms / Math.max(1, steps) }));
  const total = per.reduce((a, c) => a + c.ms, 0);
  return per.map((c) => {
    const b = bytes[c.name];
    return { name: c.name, ms: c.ms, share: total > 0 ? c.ms / total : 0, ...(b !== undefined && c.ms > 0 ? { bytes: b, gbps: b / (c.ms * 1e-3) / 1e9 } : {}) };
  });
}

/** The profiled step kinds: decode batches, one-sequence prefills, mixed decode + prefill-chunk steps. */
type ProfileCase = { readonly kind: "decode"; readonly batch: number; readonly context: number } | { readonly kind: "prefill"; readonly tokens: number } | { readonly kind: "mixed"; readonly batch: number; readonly chunk: number };

/** Steps profiled per prefill / mixed case (each one a whole prefill of the chunk). */
const PROFILE_PREFILL_STEPS = 3;

/**
 * Each case once more on an engine loaded with profiling (fast fill; steps run eagerly): the decode
 * batches and decode cases, every prefill length, and every mixed case (decode batch at `context`
 * plus one prefill chunk from position 0 in the same step).
 */
async function runProfile(ctx: Ctx): Promise<Record<string, EngineProfile>> {
  const o = ctx.o;
  const out: Record<string, EngineProfile> = {};
  const cases: ProfileCase[] = [
    ...o.batches.map((batch) => ({ kind: "decode" as const, batch, context: o.context })),
    ...o.cases.flatMap((c) => (c.kind === "decode" ? [{ kind: "decode" as const, batch: c.batch, context: c.context }] : [])),
    ...o.prefill.map((tokens) => ({ kind: "prefill" as const, tokens })),
    ...o.cases.flatMap((c) => (c.kind === "mixed" ? [{ kind: "mixed" as const, batch: c.batch, chunk: c.chunk }] : [])),
  ];
  const fast: Ctx = { ...ctx, o: { ...o, fill: "fast" } };
  const dtype = o.backend === "cpu" ? 4 : 2;
  for (const c of cases) {
    const B = c.kind === "prefill" ? 0 : c.batch;
    const context = c.kind === "decode" ? c.context : o.context;
    const chunk = c.kind === "decode" ? 0 : c.kind === "prefill" ? c.tokens : c.chunk;
    const perSeq = blocksFor(context + 2 * o.steps + 8);
    const sizing = { slots: B + (chunk ? 1 : 0), blocks: B * perSeq + blocksFor(chunk + 2) };
    await withEngine(fast, sizing, { skew: 0, profile: true }, async (engine) => {
      const tables = tablesOf(B, perSeq);
      const last = B ? await fill(fast, engine, range(B), tables, context) : new Int32Array(0);
      const prompt = promptTokens(engine.config, chunk, 7);
      const chunkTable = Int32Array.from({ length: blocksFor(chunk + 2) }, (_, i) => B * perSeq + i);
      let pos = context;
      /** One step: every decode sequence one position on, plus the chunk (position 0, its own slot). */
      const step = async (): Promise<number> => {
        const seqs: StepSequence[] = range(B).map((s) => ({ slotId: s, tokens: Int32Array.of(last[s] ?? 0), position: pos, blockTable: tables[s] as Int32Array, sample: true, logits: "none", sampling: GREEDY }));
        if (chunk) seqs.push({ slotId: B, tokens: prompt, position: 0, blockTable: chunkTable, sample: true, logits: "none", sampling: GREEDY });
        const t0 = performance.now();
        const r = await engine.step(seqs);
        const ms = performance.now() - t0;
        for (let s = 0; s < B; s++) last[s] = validToken(engine.config, r.tokens[s], s);
        pos++;
        return ms;
      };
      const n = chunk ? PROFILE_PREFILL_STEPS : o.steps;
      for (let i = 0; i < 2; i++) await step();
      engine.takeProfile();
      const wall: number[] = [];
      for (let i = 0; i < n; i++) wall.push(await step());
      const p = engine.takeProfile();
      const components = profileRows(p.components, p.steps, c.kind === "decode" ? componentBytes(engine.config, B, context, dtype) : {});
      const key = c.kind === "decode" ? decodeKey(B, context) : c.kind === "prefill" ? prefillKey(chunk) : caseKey({ kind: "mixed", batch: B, chunk }, o.context);
      out[key] = { steps: p.steps, wallMs: median(wall), deviceMs: components.reduce((a, x) => a + x.ms, 0), components };
      o.progress(`profiled ${key}: ${p.steps} steps, ${components.length} components`);
    });
  }
  return out;
}

/** The heading of a profile table: what the profiled step was, from its key. */
export function profileHeading(key: string): string {
  if (key.startsWith("decode_")) return `decode ${key.slice("decode_".length)}`;
  if (key.startsWith("prefill_")) return `prefill ${key.slice("prefill_".length)} tokens (one sequence)`;
  if (key.startsWith("mixed_")) return `mixed step ${key.slice("mixed_".length)} (decode batch + one prefill chunk)`;
  return key;
}

function profileTable(key: string, p: EngineProfile): string {
  const head = `${profileHeading(key)}: ${p.steps} profiled steps, ${p.deviceMs.toFixed(2)} ms of device time per step (eager, events around each component), ${p.wallMs.toFixed(2)} ms wall`;
  if (p.components.length === 0) return `${head}: this backend does not profile (no components)`;
  const lines = p.components.map((c) => `| ${c.name} | ${c.ms.toFixed(3)} | ${(100 * c.share).toFixed(1)} % | ${c.bytes !== undefined ? (c.bytes / 1e6).toFixed(1) : ""} | ${c.gbps !== undefined ? c.gbps.toFixed(0) : ""} |`);
  const host = p.wallMs - p.deviceMs;
  return [head, "", "| component | ms/step | share of device time | MB moved | GB/s |", "|---|---|---|---|---|", ...lines, `| (not device time: host, launches, syncs) | ${host.toFixed(3)} | | | |`].join("\n");
}

/** Runs the transformers script and maps its BENCH lines to metrics (keys transformers_*). */
function runTransformers(ctx: Ctx, t: TransformersBaseline): { metrics: Record<string, Metric>; note: string } {
  const o = ctx.o;
  const args = [t.script, "--config", `${o.modelDir}/config.json`, "--batches", o.batches.join(","), "--context", String(o.context), "--prefill", o.prefill.join(","), "--steps", String(o.steps)];
  o.progress(`transformers baseline: ${t.python} ${args.join(" ")}`);
  const r = spawnSync(t.python, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 << 20 });
  if (r.error) return { metrics: {}, note: `transformers baseline not run: ${r.error.message}` };
  const { lines, errors } = parseBenchLines(r.stdout ?? "");
  for (const e of errors) o.progress(`transformers baseline: ${e}`);
  const cfg = ctx.cfg;
  const metrics: Record<string, Metric> = {};
  let version = "";
  for (const l of lines) {
    if (l.key === "transformers_version") version = String((l as Record<string, unknown>).version ?? "");
    if (!/^transformers_(decode|prefill)_/.test(l.key)) continue;
    const extra = Object.fromEntries(Object.entries(l).filter(([k]) => !["key", "value", "unit"].includes(k)));
    let ratio: number | null = null;
    const m = /^transformers_decode_b(\d+)_ctx/.exec(l.key);
    if (m && cfg && typeof l.context === "number") ratio = ratioOf((decodeBytes(cfg, Number(m[1]), l.context) / (ctx.roof.copyGBps * 1e9)) * 1e3, l.value);
    if (!m && cfg && typeof l.ms === "number" && typeof l.tokens === "number") ratio = ratioOf(((l.tokens * modelCosts(cfg).flopsPerToken) / (ctx.roof.matmulTflops * 1e12)) * 1e3, l.ms);
    metrics[l.key] = { ...extra, value: l.value, unit: l.unit, ratio, against: m ? "roofline: bytes moved ÷ measured copy bandwidth" : "projection + expert FLOPs ÷ measured matmul rate" };
  }
  const status = r.status === 0 ? "" : ` (exit ${r.status ?? r.signal})`;
  return { metrics, note: `transformers ${version || "?"} baseline: ${Object.keys(metrics).length} cases${status}` };
}

/** "133.6 ms/step (14.0× ours)" / "out of memory" for the transformers column. */
function transformersCell(row: Row, tm: Metric | undefined): string {
  if (!tm) return "";
  if (tm.oom) return "out of memory";
  if (tm.value === null) return `failed: ${String(tm.error ?? "")}`.slice(0, 80);
  const ours = row.metric.value ?? NaN;
  if (tm.unit === "ms/step") return `${tm.value.toFixed(1)} ms/step (${(tm.value / ours).toFixed(1)}× ours)`;
  return `${tm.value.toFixed(0)} tok/s (ours ${(ours / tm.value).toFixed(1)}×)`;
}

export async function runEngineBench(o: EngineBenchOptions): Promise<EngineBenchReport> {
  const roof = await measureRoofline(o.backend, o.threads);
  o.progress(`measured ceilings: copy ${roof.copyGBps.toFixed(1)} GB/s, GEMM ${roof.matmulTflops.toFixed(2)} TFLOP/s`);
  const ctx: Ctx = { o, roof, numParameters: 0 };
  const rows: Row[] = [];
  for (const skew of o.routeSkews.length ? o.routeSkews : [0]) rows.push(...(await runCases(ctx, skew)));
  const profile = o.profile ? await runProfile(ctx) : {};
  const metrics: Record<string, Metric> = {};
  const notes: string[] = [];
  let tf: Record<string, Metric> = {};
  if (o.transformers) {
    const t = runTransformers(ctx, o.transformers);
    tf = t.metrics;
    notes.push(t.note);
  }
  for (const r of rows) {
    const tm = tf[`transformers_${r.key}`];
    metrics[r.key] = tm && tm.value !== null && r.metric.value !== null ? { ...r.metric, vs_transformers: tm.value > 0 && r.metric.unit === "tok/s" ? r.metric.value / tm.value : tm.value / r.metric.value } : r.metric;
  }
  Object.assign(metrics, tf);
  const tfCol = o.transformers !== null;
  const table = [
    `| what | measured | roofline | ratio (roofline / measured) |${tfCol ? " transformers, same GPU and shape |" : ""}`,
    `|---|---|---|---|${tfCol ? "---|" : ""}`,
    ...rows.map((r) => `| ${r.what} | ${r.measured} | ${r.roofline} | ${r.metric.ratio?.toFixed(3) ?? ""} |${tfCol ? ` ${transformersCell(r, tf[`transformers_${r.key}`])} |` : ""}`),
  ];
  const text = [
    `backend ${o.backend}, ${o.loadFormat} weights of ${o.modelDir} (${(ctx.numParameters / 1e6).toFixed(1)} M parameters)${o.cudaGraphs ? `, cuda graphs ${o.cudaGraphs}` : ""}`,
    `ceilings measured in this run: copy ${roof.copyGBps.toFixed(1)} GB/s, GEMM ${roof.matmulTflops.toFixed(2)} TFLOP/s`,
    ...notes,
    "",
    ...table,
    ...Object.entries(profile).flatMap(([k, p]) => ["", profileTable(k, p)]),
  ].join("\n");
  return { text, ceilings: ceilingsOf(roof.copyGBps, roof.matmulTflops), metrics, profile, numParameters: ctx.numParameters };
}
