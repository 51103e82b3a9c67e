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
 * Untried (B, k) cells borrow the nearest measured cell of the same batch bucket with fewer drafts
 * (optimistic), so each depth gets tried once per bucket and real timings decide from then on.
 */

/** Acceptance counts per draft position, as vLLM's spec-decode metrics count them. */
export class AcceptanceStats {
  /** Verify steps that carried at least one draft. */
  numDrafts = 0;
  /** Draft tokens verified. */
  numDraftTokens = 0;
  /** Draft tokens accepted. */
  numAcceptedTokens = 0;
  /** Per position j (0-based): drafts verified at j and accepted at j. */
  readonly draftedPerPos: number[] = [];
  readonly acceptedPerPos: number[] = [];

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
   * whose predecessors were all accepted), with a Beta(1, 1) prior so unseen positions read 0.5.
   */
  rate(j: number): number {
    const reached = j === 0 ? (this.draftedPerPos[0] ?? 0) : Math.min(this.draftedPerPos[j] ?? 0, this.acceptedPerPos[j - 1] ?? 0);
    const accepted = Math.min(this.acceptedPerPos[j] ?? 0, reached);
    return (accepted + 1) / (reached + 2);
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
}

const COST_EMA = 0.25;
/** Relative gain in tokens per millisecond a deeper speculation must promise over the best shallower one. */
const MIN_GAIN = 0.03;

/** Batch sizes are bucketed by powers of two: 1, 2, 3-4, 5-8, ... */
export function batchBucket(batchSize: number): number {
  return Math.max(0, Math.ceil(Math.log2(Math.max(1, batchSize))));
}

/** Measured step time per (batch bucket, drafts per sequence), as exponential moving averages. */
export class StepCostModel {
  private readonly ms = new Map<string, number>();

  observe(batchSize: number, draftTokens: number, stepMs: number): void {
    const key = `${batchBucket(batchSize)}:${draftTokens}`;
    const prev = this.ms.get(key);
    this.ms.set(key, prev === undefined ? stepMs : prev + COST_EMA * (stepMs - prev));
  }

  /** The measured time, else the nearest measured cell with fewer drafts in the same bucket, else undefined. */
  predict(batchSize: number, draftTokens: number): number | undefined {
    const b = batchBucket(batchSize);
    for (let k = draftTokens; k >= 0; k--) {
      const t = this.ms.get(`${b}:${k}`);
      if (t !== undefined) return t;
    }
    return undefined;
  }

  /** Whether (batch size, k) itself was measured. */
  measured(batchSize: number, draftTokens: number): boolean {
    return this.ms.has(`${batchBucket(batchSize)}:${draftTokens}`);
  }
}

export interface DraftChoice {
  readonly batchSize: number;
  /** The deployment's ceiling (and the router's cap, whichever is lower). */
  readonly maxDraftTokens: number;
  readonly acceptance: AcceptanceStats;
  readonly cost: StepCostModel;
}

/** The number of drafts per sequence for the next step: argmax over k of E(k) / t(B, k); ties go to fewer. */
export function chooseDraftTokens(c: DraftChoice): number {
  if (c.maxDraftTokens <= 0 || c.batchSize <= 0) return 0;
  let best = 0;
  let bestRate = -1;
  for (let k = 0; k <= c.maxDraftTokens; k++) {
    const t = c.cost.predict(c.batchSize, k);
    // with nothing measured in this bucket yet, start plain and let timings arrive
    if (t === undefined) return best;
    const rate = c.acceptance.expectedTokens(k) / Math.max(t, 1e-6);
    // a deeper k must win by a margin: step-time noise alone should not buy speculation
    if (rate > bestRate * (k === 0 ? 1 : 1 + MIN_GAIN)) {
      best = k;
      bestRate = rate;
    }
  }
  return best;
}

/** `--speculative-tokens` values: a fixed depth (0 = off) or "auto" (chooseDraftTokens up to `max`). */
export type SpeculativeTokens = { readonly mode: "fixed"; readonly k: number } | { readonly mode: "auto"; readonly max: number };

/** The per-sequence policy for a fixed or adaptive depth, fed with each step's outcome. */
export class SpeculationPolicy {
  readonly acceptance = new AcceptanceStats();
  readonly cost = new StepCostModel();

  constructor(readonly setting: SpeculativeTokens) {}

  get enabled(): boolean {
    return this.setting.mode === "auto" ? this.setting.max > 0 : this.setting.k > 0;
  }

  /** Drafts to propose for the next step of a batch of `batchSize` decoding sequences. */
  next(batchSize: number, cap = Infinity): number {
    if (this.setting.mode === "fixed") return Math.min(this.setting.k, cap);
    return chooseDraftTokens({ batchSize, maxDraftTokens: Math.min(this.setting.max, cap), acceptance: this.acceptance, cost: this.cost });
  }

  /** One decode step's outcome: its batch size, drafts per sequence, time, and per-sequence (drafts, accepted). */
  observe(batchSize: number, draftTokens: number, stepMs: number, verified: readonly (readonly [number, number])[]): void {
    this.cost.observe(batchSize, draftTokens, stepMs);
    for (const [k, a] of verified) this.acceptance.record(k, a);
  }
}

/** Parses `--speculative-tokens`: an integer 0..16 or "auto" (adaptive up to `autoMax`). */
export function parseSpeculativeTokens(value: string, autoMax = 4): SpeculativeTokens {
  const v = value.trim();
  if (v === "auto") return { mode: "auto", max: autoMax };
  if (!/^\d+$/.test(v) || Number(v) > 16) throw new Error(`expected an integer 0..16 or 'auto', got '${value}'`);
  return { mode: "fixed", k: Number(v) };
}
