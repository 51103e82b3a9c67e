/**
 * How deep to speculate with MTP (DESIGN §3, issue 7): pure bookkeeping and one decision per step.
 *
 * Speculation is exact whatever k is (the engine verifies every draft), so k only trades time:
 * a step verifying k drafts per sequence emits E(k) = 1 + Σ_{j=1..k} Π_{i≤j} α_i tokens per
 * sequence on average (α_i: the measured rate at which draft i is accepted once drafts 1..i-1
 * were), and costs t(B, k), the measured step time at batch size B with k drafts (which includes
 * proposing the next k). The policy picks the k maximising E(k) / t(B, k). At small batches the
 * step is memory-bound and t barely grows with k, so k goes deep; as batches fill the machine t
 * grows with B·(k+1) and k falls to 0 — measured, not assumed.
 *
 * An untried (B, k) cell is predicted, not tried blindly: from its cost ratio to plain decoding in
 * the nearest smaller batch bucket that measured it (the ratio grows with the batch — a verify
 * step's extra rows and the head's passes cost more once the machine is busy — so a depth that lost
 * at a smaller batch is not tried again at a larger one, where trying costs most), else linearly
 * between the measured depths of its bucket around it (or extending the two deepest below it).
 * Where nothing is known about speculating in a bucket, the deepest depth is tried once, optimistic
 * (its time borrowed from plain decoding): one such step measures acceptance at every position and
 * the deepest cost, and shallower depths are interpolated from then on. A depth switched to runs
 * EXPLORE_STEPS steady steps before it is judged (one sample is noise-prone, and acceptance needs
 * more than one step's drafts), and a measured depth that loses is re-timed less often the more it
 * costs (after REFRESH_STEPS × its price² steps), so exploring stays a small share of the time.
 *
 * Acceptance is kept per request class (contracts' RequestClass: greedy vs sampled) as well as over
 * all sequences; a class's rates lean on the overall ones until it has its own observations. A step's
 * E(k) is the mean over the batch's sequences of their class's E(k). The measured cells also give the
 * rank's step-time curve (`stepCurve`) that load reports publish for the router.
 */
import type { ClassAcceptance, RequestClass, StepCurvePoint } from "../contracts/messages.js";

/** What choosing k needs from acceptance: expected tokens emitted per sequence by a step with k drafts. */
export interface AcceptanceView {
  expectedTokens(k: number): number;
}

/** Pseudo-observations a class's rate borrows from the overall rate (its prior). */
const CLASS_PRIOR_WEIGHT = 4;

/** Acceptance counts per draft position, as vLLM's spec-decode metrics count them. */
export class AcceptanceStats implements AcceptanceView {
  /** Verify steps that carried at least one draft. */
  numDrafts = 0;
  /** Draft tokens verified. */
  numDraftTokens = 0;
  /** Draft tokens accepted. */
  numAcceptedTokens = 0;
  /** Per position j (0-based): drafts verified at j and accepted at j. */
  readonly draftedPerPos: number[] = [];
  readonly acceptedPerPos: number[] = [];

  /** `prior`: stats whose rates this one's lean on while it has few observations (a class's prior is the overall stats). */
  constructor(private readonly prior: AcceptanceStats | null = null) {}

  /** One sequence's verify step: `numDrafts` drafts fed, the first `numAccepted` kept. */
  record(numDrafts: number, numAccepted: number): void {
    if (numDrafts <= 0) return;
    this.numDrafts++;
    this.numDraftTokens += numDrafts;
    this.numAcceptedTokens += numAccepted;
    for (let j = 0; j < numDrafts; j++) {
      this.draftedPerPos[j] = (this.draftedPerPos[j] ?? 0) + 1;
      if (j < numAccepted) this.acceptedPerPos[j] = (this.acceptedPerPos[j] ?? 0) + 1;
    }
  }

  /**
   * The conditional acceptance rate of draft position j: accepted at j / reached j (drafts at j
   * whose predecessors were all accepted), with two pseudo-observations at a prior rate: 0.5 for the
   * first position, the previous position's rate for later ones (so a depth never tried looks as
   * good as the last one measured, and gets tried when its cost allows) — or, with a prior's stats,
   * CLASS_PRIOR_WEIGHT pseudo-observations at the prior's rate.
   */
  rate(j: number): number {
    const reached = j === 0 ? (this.draftedPerPos[0] ?? 0) : Math.min(this.draftedPerPos[j] ?? 0, this.acceptedPerPos[j - 1] ?? 0);
    const accepted = Math.min(this.acceptedPerPos[j] ?? 0, reached);
    if (this.prior) return (accepted + CLASS_PRIOR_WEIGHT * this.prior.rate(j)) / (reached + CLASS_PRIOR_WEIGHT);
    return (accepted + 2 * (j === 0 ? 0.5 : this.rate(j - 1))) / (reached + 2);
  }

  /** Expected tokens emitted per sequence by a step with k drafts. */
  expectedTokens(k: number): number {
    let e = 1;
    let p = 1;
    for (let j = 0; j < k; j++) {
      p *= this.rate(j);
      e += p;
    }
    return e;
  }

  /** Mean tokens per verify step (1 + accepted drafts per step); 1 before any speculation. */
  get acceptanceLength(): number {
    return this.numDrafts === 0 ? 1 : 1 + this.numAcceptedTokens / this.numDrafts;
  }

  /** The load-report form: counts, length and the per-position rates up to depth `maxK`. */
  summary(maxK: number): ClassAcceptance {
    return {
      numDrafts: this.numDrafts,
      acceptanceLength: this.acceptanceLength,
      acceptRates: Array.from({ length: Math.min(16, Math.max(0, maxK)) }, (_, j) => this.rate(j)),
    };
  }
}

/** Sequences of each class in a batch. */
export type BatchMix = Readonly<Partial<Record<RequestClass, number>>>;

/** Acceptance of a mixed batch: each class's E(k) weighted by its sequences (the mean tokens per sequence). */
export function mixedAcceptance(byClass: Readonly<Record<RequestClass, AcceptanceView>>, mix: BatchMix): AcceptanceView {
  const parts = (Object.entries(mix) as [RequestClass, number][]).filter(([, n]) => n > 0);
  const total = parts.reduce((a, [, n]) => a + n, 0);
  return {
    expectedTokens(k: number): number {
      if (total === 0) return 1;
      let e = 0;
      for (const [cls, n] of parts) e += n * byClass[cls].expectedTokens(k);
      return e / total;
    },
  };
}

/**
 * Step times are kept per batch bucket as a time scale (`base`) times a ratio per depth, so that
 * depths timed at different moments still compare fairly when the machine's speed drifts (other
 * processes, clocks, thermals scale every depth alike). The depth that keeps running moves the
 * scale; a depth switched to (chosen again, or re-timed) moves its own ratio against the current
 * scale. Noise on a step time is one-sided (a stall only adds time), so the scale moves
 * asymmetrically: a faster step pulls it COST_FALL of the way down, a slower one COST_RISE of the
 * way up counting as at most COST_RISE_MAX × the estimate — one stall cannot flip the choice, a real
 * slow-down still shows within a few steps. For the same reason a depth's ratio is the fastest of
 * its first EXPLORE_STEPS samples (those steps de-noise its first one), unless the depth is its
 * bucket's only timing so far (then it is the scale).
 */
const COST_FALL = 0.5;
const COST_RISE = 0.25;
const COST_RISE_MAX = 1.25;
/**
 * Plain decoding, the measured neighbour depths of the chosen one and the deepest measured depth
 * (untried depths below it are interpolated from it) are re-timed after this many steps of their
 * bucket without them (plain decoding, while speculating, after PLAIN_REFRESH_STEPS: a plain step
 * forgoes little, and it is what tells a speculation that stopped paying)...
 */
export const REFRESH_STEPS = 256;
export const PLAIN_REFRESH_STEPS = 32;
/** ...or after this many when its last re-timing moved its ratio by more than UNSETTLED (it is still converging). */
const RECHECK_STEPS = 8;
const UNSETTLED = 0.15;
/** Relative gain in tokens per millisecond a deeper speculation must promise over the best shallower one... */
const MIN_GAIN = 0.03;
/**
 * ...and speculating at all over plain decoding: gains this small are within the noise of step
 * timings taken at different moments, and switching depth costs a step that drafts without verifying.
 */
const SPECULATE_GAIN = 0.1;
/** Steady steps a depth switched to runs before the policy judges it (unless it was timed that often before). */
export const EXPLORE_STEPS = 2;
/** Depths predict() looks across for neighbours to interpolate from. */
const MAX_DEPTH = 16;

/** Batch sizes are bucketed by powers of two: 1, 2, 3-4, 5-8, ... */
export function batchBucket(batchSize: number): number {
  return Math.max(0, Math.ceil(Math.log2(Math.max(1, batchSize))));
}

/** Measured step time per (batch bucket, drafts per sequence): the bucket's time scale × the depth's ratio to it. */
export class StepCostModel {
  /** Per bucket: the time scale (ms); per cell: step time ÷ scale. */
  private readonly base = new Map<number, number>();
  private readonly ratio = new Map<string, number>();
  /** Per bucket: moving average of the batch sizes measured in it (where its curve point sits). */
  private readonly batchMean = new Map<number, number>();
  /** Per bucket: observations so far and the depth observed last; per cell: the count when it was last observed. */
  private readonly bucketSteps = new Map<number, number>();
  private readonly lastDepth = new Map<number, number>();
  private readonly lastSeen = new Map<string, number>();
  /** Per cell: relative change of its ratio when it was last switched to. */
  private readonly moved = new Map<string, number>();
  /** Per cell: steady steps observed. */
  private readonly count = new Map<string, number>();

  observe(batchSize: number, draftTokens: number, stepMs: number): void {
    const b = batchBucket(batchSize);
    const key = `${b}:${draftTokens}`;
    const base = this.base.get(b);
    const r = this.ratio.get(key);
    const samples = this.count.get(key) ?? 0;
    if (base === undefined) {
      this.base.set(b, stepMs);
      this.ratio.set(key, 1);
    } else if (r === undefined) {
      this.ratio.set(key, stepMs / base);
    } else if (samples < EXPLORE_STEPS && samples < (this.bucketSteps.get(b) ?? 0)) {
      // still exploring a depth that is not the bucket's only timing (its scale): its ratio is the fastest
      // of its samples, so one slow first sample cannot price it out (the scale is not moved by it)
      const next = Math.min(r, stepMs / base);
      this.ratio.set(key, next);
      this.moved.set(key, (r - next) / r);
    } else if (this.lastDepth.get(b) === draftTokens) {
      const sample = stepMs / r;
      this.base.set(b, sample < base ? base + COST_FALL * (sample - base) : base + COST_RISE * (Math.min(sample, base * COST_RISE_MAX) - base));
    } else {
      const next = r + COST_FALL * (stepMs / base - r);
      this.ratio.set(key, next);
      this.moved.set(key, Math.abs(next - r) / r);
    }
    const mean = this.batchMean.get(b);
    this.batchMean.set(b, mean === undefined ? batchSize : mean + COST_RISE * (batchSize - mean));
    this.count.set(key, (this.count.get(key) ?? 0) + 1);
    const steps = (this.bucketSteps.get(b) ?? 0) + 1;
    this.bucketSteps.set(b, steps);
    this.lastSeen.set(key, steps);
    this.lastDepth.set(b, draftTokens);
  }

  /** Whether (batch size, k) is measured and due for re-timing: unseen for `refreshSteps` steps of its bucket, or still converging. */
  due(batchSize: number, draftTokens: number, refreshSteps = REFRESH_STEPS): boolean {
    const age = this.age(batchSize, draftTokens);
    if (age === Infinity) return false;
    return age >= refreshSteps || (age >= RECHECK_STEPS && (this.moved.get(`${batchBucket(batchSize)}:${draftTokens}`) ?? 0) > UNSETTLED);
  }

  /** Steps of the batch's bucket since (batch size, k) was last observed (Infinity: never). */
  age(batchSize: number, draftTokens: number): number {
    const b = batchBucket(batchSize);
    const seen = this.lastSeen.get(`${b}:${draftTokens}`);
    return seen === undefined ? Infinity : (this.bucketSteps.get(b) ?? 0) - seen;
  }

  /** The buckets with any measurement, ascending, each with its mean measured batch size. */
  buckets(): { bucket: number; batch: number }[] {
    return [...this.batchMean].sort((a, b) => a[0] - b[0]).map(([bucket, batch]) => ({ bucket, batch }));
  }

  /**
   * The measured time; else this bucket's plain time × depth k's ratio in the nearest smaller bucket
   * that measured both; else the nearest known depths of this bucket (measured or taken from a smaller
   * bucket) below and above k interpolated linearly, or the two deepest below extended linearly;
   * else undefined (only plain decoding known: see chooseDraftTokens).
   */
  predict(batchSize: number, draftTokens: number): number | undefined {
    const b = batchBucket(batchSize);
    const base = this.base.get(b);
    if (base === undefined) return undefined;
    const known = (k: number): number | undefined => {
      const own = this.ratio.get(`${b}:${k}`);
      if (own !== undefined) return own;
      const plain = this.ratio.get(`${b}:0`);
      if (k === 0 || plain === undefined) return undefined;
      for (let lower = b - 1; lower >= 0; lower--) {
        const rk = this.ratio.get(`${lower}:${k}`), r0 = this.ratio.get(`${lower}:0`);
        if (rk !== undefined && r0 !== undefined) return plain * (rk / r0);
      }
      return undefined;
    };
    const at = known(draftTokens);
    if (at !== undefined) return base * at;
    let j = draftTokens - 1;
    while (j >= 0 && known(j) === undefined) j--;
    if (j < 0) return undefined;
    const rj = known(j) as number;
    for (let l = draftTokens + 1; l <= MAX_DEPTH; l++) {
      const rl = known(l);
      if (rl !== undefined) return base * (rj + ((rl - rj) * (draftTokens - j)) / (l - j));
    }
    let i = j - 1;
    while (i >= 0 && known(i) === undefined) i--;
    if (i < 0) return undefined;
    const perDraft = Math.max(0, (rj - (known(i) as number)) / (j - i));
    return base * (rj + perDraft * (draftTokens - j));
  }

  /** Steady steps timed at (batch size, k) so far. */
  samples(batchSize: number, draftTokens: number): number {
    return this.count.get(`${batchBucket(batchSize)}:${draftTokens}`) ?? 0;
  }

  /** Whether (batch size, k) itself was measured. */
  measured(batchSize: number, draftTokens: number): boolean {
    return this.ratio.has(`${batchBucket(batchSize)}:${draftTokens}`);
  }
}

export interface DraftChoice {
  readonly batchSize: number;
  /** The deployment's ceiling (and the router's cap, whichever is lower). */
  readonly maxDraftTokens: number;
  readonly acceptance: AcceptanceView;
  readonly cost: StepCostModel;
  /** Consider measured (batch bucket, k) cells only, no optimistic borrowing (for reporting what is known). */
  readonly measuredOnly?: boolean;
}

/** The number of drafts per sequence for the next step: argmax over k of E(k) / t(B, k); ties go to fewer. */
export function chooseDraftTokens(c: DraftChoice): number {
  if (c.maxDraftTokens <= 0 || c.batchSize <= 0) return 0;
  let best = 0;
  let bestRate = -1;
  for (let k = 0; k <= c.maxDraftTokens; k++) {
    if (c.measuredOnly && !c.cost.measured(c.batchSize, k)) continue;
    let t = c.cost.predict(c.batchSize, k);
    // nothing known about speculating here: the deepest depth borrows plain decoding's time (optimistic),
    // so it is tried once; with nothing measured in this bucket yet, start plain and let timings arrive
    if (t === undefined && k === c.maxDraftTokens && !c.measuredOnly) t = c.cost.predict(c.batchSize, 0);
    // plain decoding not timed in this bucket (its first timing speculated): time it before judging any depth
    if (t === undefined && k === 0 && !c.measuredOnly) return 0;
    if (t === undefined) continue;
    const rate = c.acceptance.expectedTokens(k) / Math.max(t, 1e-6);
    // a deeper k must win by a margin: step-time noise alone should not buy speculation
    if (rate > bestRate * (k === 0 ? 1 : 1 + (best === 0 ? SPECULATE_GAIN : MIN_GAIN))) {
      best = k;
      bestRate = rate;
    }
  }
  return best;
}

/**
 * The step-time curve of a cost model: per measured bucket, the depth `draftTokensAt(batch)` picks
 * there and its measured step time (buckets where that cell was not measured are left out).
 */
export function stepCurve(cost: StepCostModel, draftTokensAt: (batch: number) => number): StepCurvePoint[] {
  const out: StepCurvePoint[] = [];
  for (const { batch } of cost.buckets()) {
    const k = draftTokensAt(batch);
    if (!cost.measured(batch, k)) continue;
    out.push({ batch: Math.round(batch * 10) / 10, draftTokens: k, stepMs: cost.predict(batch, k) as number });
  }
  return out;
}

/** `--speculative-tokens` values: a fixed depth (0 = off) or "auto" (chooseDraftTokens up to `max`). */
export type SpeculativeTokens = { readonly mode: "fixed"; readonly k: number } | { readonly mode: "auto"; readonly max: number };

/** One sequence's verify outcome: drafts fed, drafts accepted, and its request class when known. */
export type Verified = readonly [numDrafts: number, numAccepted: number, cls?: RequestClass];

/** The per-sequence policy for a fixed or adaptive depth, fed with each step's outcome. */
export class SpeculationPolicy {
  /** Over all sequences (the metrics' view, and every class's prior). */
  readonly acceptance = new AcceptanceStats();
  readonly byClass: Readonly<Record<RequestClass, AcceptanceStats>> = { greedy: new AcceptanceStats(this.acceptance), sampled: new AcceptanceStats(this.acceptance) };
  readonly cost = new StepCostModel();
  /** The depth of the last timed step. */
  private lastDepth = 0;

  constructor(readonly setting: SpeculativeTokens) {}

  get enabled(): boolean {
    return this.maxDepth > 0;
  }

  /** The deepest speculation this policy may choose. */
  get maxDepth(): number {
    return this.setting.mode === "auto" ? this.setting.max : this.setting.k;
  }

  /**
   * Drafts to propose for the next step of a batch of `batchSize` decoding sequences, `mix` saying
   * how many are of each class (absent: acceptance over all sequences).
   */
  next(batchSize: number, cap = Infinity, mix?: BatchMix): number {
    if (this.setting.mode === "fixed") return Math.min(this.setting.k, cap);
    const max = Math.min(this.setting.max, cap);
    // a depth just switched to runs its first EXPLORE_STEPS steady steps before it is judged
    const current = this.lastDepth;
    if (current > 0 && current <= max && this.cost.measured(batchSize, current) && this.cost.samples(batchSize, current) < EXPLORE_STEPS) return current;
    const k = chooseDraftTokens({ batchSize, maxDraftTokens: max, acceptance: this.acceptanceOf(mix), cost: this.cost });
    // step times drift (load, noise, thermal): now and then re-time plain decoding, the measured
    // neighbour depths and the deepest measured depth (the untried ones between are interpolated from
    // it), so a stale estimate cannot keep the policy on the wrong side of a boundary
    const chosenMs = this.cost.predict(batchSize, k);
    let deepest = max;
    while (deepest > 0 && !this.cost.measured(batchSize, deepest)) deepest--;
    for (const other of [0, k - 1, k + 1, deepest]) {
      if (other === k || other < 0 || other > max) continue;
      // a dearer depth waits longer, by its price squared (re-timing it costs steps at its price, and the
      // dearer it is the less likely a drift in timings or acceptance makes it win); plain decoding is
      // cheap to re-time
      const otherMs = this.cost.predict(batchSize, other);
      const dearer = chosenMs !== undefined && otherMs !== undefined ? Math.max(1, otherMs / chosenMs) : 1;
      if (this.cost.due(batchSize, other, other === 0 ? PLAIN_REFRESH_STEPS : Math.round(REFRESH_STEPS * dearer * dearer))) return other;
    }
    return k;
  }

  /** One decode step's outcome: its batch size, drafts per sequence, time, and each verified sequence. */
  observe(batchSize: number, draftTokens: number, stepMs: number, verified: readonly Verified[]): void {
    this.cost.observe(batchSize, draftTokens, stepMs);
    this.lastDepth = draftTokens;
    this.record(verified);
  }

  /** Acceptance only (steps whose time says nothing about decode cost, e.g. with prefill chunks). */
  record(verified: readonly Verified[]): void {
    for (const [k, a, cls] of verified) {
      this.acceptance.record(k, a);
      if (cls) this.byClass[cls].record(k, a);
    }
  }

  /** The depth this policy would use at `batchSize` with `mix`, among measured cells only. */
  depthAt(batchSize: number, mix?: BatchMix): number {
    if (this.setting.mode === "fixed") return this.setting.k;
    return chooseDraftTokens({ batchSize, maxDraftTokens: this.setting.max, acceptance: this.acceptanceOf(mix), cost: this.cost, measuredOnly: true });
  }

  /** Per class seen so far, its acceptance for load reports. */
  classSummaries(): Partial<Record<RequestClass, ClassAcceptance>> {
    const out: Partial<Record<RequestClass, ClassAcceptance>> = {};
    for (const cls of Object.keys(this.byClass) as RequestClass[]) {
      const stats = this.byClass[cls];
      if (stats.numDrafts > 0) out[cls] = stats.summary(this.maxDepth);
    }
    return out;
  }

  private acceptanceOf(mix: BatchMix | undefined): AcceptanceView {
    return mix ? mixedAcceptance(this.byClass, mix) : this.acceptance;
  }
}

/** Parses `--speculative-tokens`: an integer 0..16 or "auto" (adaptive up to `autoMax`). */
export function parseSpeculativeTokens(value: string, autoMax = 4): SpeculativeTokens {
  const v = value.trim();
  if (v === "auto") return { mode: "auto", max: autoMax };
  if (!/^\d+$/.test(v) || Number(v) > 16) throw new Error(`expected an integer 0..16 or 'auto', got '${value}'`);
  return { mode: "fixed", k: Number(v) };
}
