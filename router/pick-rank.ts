/**
 * Choosing a rank for a request (DESIGN.md §5) — a pure function of the latest load reports.
 *
 * Predicted time to finish on a rank, in engine steps × the rank's step time at the batch the
 * request would run in (batch = running + waiting + placed since the last report + 1, at most maxSlots):
 *   step       = the rank's step-time curve at that batch (`stepAt`), interpolated between measured
 *                points: the step time and the MTP depth k the rank uses there; the tokens one step
 *                emits for this request are E_class(k) = 1 + Σ_{j<k} Π_{i≤j} α_i from the rank's
 *                per-position acceptance rates for the request's class (greedy / sampled).
 *                Without a curve: max(stepTimeMs, minStepMs) × (1 + batchSlope × batch / maxSlots)
 *                and the class's (else the rank's) mean acceptance length.
 *   slot wait  = 0 while a slot (and the request's KV blocks) is free for it, else the steps until
 *                enough running sequences finish: ceil(ahead / maxSlots) × meanRemainingTokens / mtpAcceptance
 *   prefill    = ceil((pending prefill tokens + prompt tokens) / step token budget)
 *   decode     = max tokens / E_class(k)   (1 token per step when the router caps speculation, below)
 * A session stays on its previous rank while that rank's prediction is within `affinitySlack` × the
 * best one (and within the request's SLO, when it has one); otherwise the soonest rank wins.
 *
 * Speculation cap: a rank this router is filling (its predicted batch, reported plus placed since,
 * reaches `speculationFill` of its slots) is compute-bound, where MTP verification costs more than it
 * saves; requests placed there carry maxDraftTokens 0 (DESIGN §5: "none when compute-bound").
 * Below that the rank's own adaptive depth decides.
 */
import type { LoadReport, RequestClass, StepCurvePoint } from "../contracts/messages.js";

/** What the router knows about one live rank. */
export interface RankView {
  readonly report: LoadReport;
  /** Requests this router placed on the rank since its last report. */
  readonly placedSinceReport: number;
}

export interface PickRequest {
  readonly model: string;
  readonly promptTokens: number;
  readonly maxTokens: number;
  /** The request's class for MTP acceptance (contracts' requestClassOf); absent: the rank's overall acceptance. */
  readonly requestClass?: RequestClass;
  /** Time to finish the request should stay under (ms); absent: none. */
  readonly sloMs?: number;
  /** The rank that served this request's session before (x-session-id). */
  readonly sessionWorkerId?: string;
  /** Ranks not to use (already failed this request). */
  readonly exclude?: ReadonlySet<string>;
}

export interface PickOptions {
  readonly affinitySlack: number;
  /** Floor on step time, so idle ranks with no measurements still compare sensibly. */
  readonly minStepMs: number;
  /** Ranks without a step-time curve: how much a full batch slows a step relative to an empty one. */
  readonly batchSlope: number;
  /** Batch fill (0..1] from which requests placed on a rank carry maxDraftTokens 0; above 1: never. */
  readonly speculationFill?: number;
}

export const DEFAULT_PICK_OPTIONS: PickOptions = { affinitySlack: 1.5, minStepMs: 1, batchSlope: 1, speculationFill: 0.75 };

export interface Pick {
  readonly workerId: string;
  readonly predictedMs: number;
  readonly reason: "least-time" | "session-affinity";
  /** False when the request has an SLO and no rank is predicted to meet it (the soonest is picked anyway). */
  readonly meetsSlo: boolean;
  /** Set when the rank is being filled past the speculation threshold: its MTP drafts per step at most. */
  readonly maxDraftTokens?: number;
}

/** A decode step on a rank at some batch size, as the router predicts it. */
export interface PredictedStep {
  readonly stepMs: number;
  /** Tokens the request gets per step (MTP: 1 + expected accepted drafts). */
  readonly tokensPerStep: number;
}

/** The cap on MTP drafts for a request placed on this rank now, or undefined for none. */
export function speculationCap(r: RankView, opts: PickOptions = DEFAULT_PICK_OPTIONS): number | undefined {
  const rep = r.report;
  const batch = rep.running + rep.waiting + r.placedSinceReport + 1;
  return batch >= (opts.speculationFill ?? 0.75) * rep.maxSlots ? 0 : undefined;
}

/** Whether a rank can take the request at all. */
export function eligible(req: PickRequest, r: RankView): boolean {
  const rep = r.report;
  return rep.ready && !rep.draining && rep.model === req.model && req.promptTokens + req.maxTokens <= rep.maxContextTokens && !req.exclude?.has(rep.workerId);
}

/**
 * Expected tokens per step for a request of `cls` on this rank when it verifies k drafts: from the
 * class's per-position rates (positions past the reported ones repeat the last rate); without them,
 * the rank's mean acceptance length for any k > 0.
 */
export function expectedTokensPerStep(rep: LoadReport, cls: RequestClass | undefined, k: number): number {
  if (k <= 0) return 1;
  const rates = cls ? rep.mtpByClass?.[cls]?.acceptRates : undefined;
  if (!rates || rates.length === 0) return Math.max(1, rep.mtpAcceptance);
  let e = 1;
  let p = 1;
  for (let j = 0; j < k; j++) {
    p *= rates[Math.min(j, rates.length - 1)] as number;
    e += p;
  }
  return e;
}

/**
 * The step at `batch` on a rank: its curve interpolated linearly between the measured points around
 * the batch (below the first point: the first point; past the last: the last segment's slope, or with a
 * single point `batchSlope` as for the scalar), else the scalar step time. `capped`: the request
 * itself will not speculate (1 token per step).
 */
export function stepAt(rep: LoadReport, batch: number, cls: RequestClass | undefined, opts: PickOptions = DEFAULT_PICK_OPTIONS, capped = false): PredictedStep {
  const curve = rep.stepCurve ?? [];
  const tokens = (k: number) => (capped ? 1 : expectedTokensPerStep(rep, cls, k));
  if (curve.length === 0) {
    const stepMs = Math.max(rep.stepTimeMs, opts.minStepMs) * (1 + (opts.batchSlope * batch) / rep.maxSlots);
    const classLength = cls ? rep.mtpByClass?.[cls]?.acceptanceLength : undefined;
    return { stepMs, tokensPerStep: capped ? 1 : Math.max(1, classLength ?? rep.mtpAcceptance) };
  }
  const pts = [...curve].sort((a, b) => a.batch - b.batch);
  let lo: StepCurvePoint | undefined;
  let hi: StepCurvePoint | undefined;
  for (const p of pts) {
    if (p.batch <= batch) lo = p;
    else if (!hi) hi = p;
  }
  let stepMs: number, tokensPerStep: number;
  if (lo && hi) {
    const w = (batch - lo.batch) / (hi.batch - lo.batch);
    stepMs = lo.stepMs + w * (hi.stepMs - lo.stepMs);
    tokensPerStep = tokens(lo.draftTokens) + w * (tokens(hi.draftTokens) - tokens(lo.draftTokens));
  } else if (hi) {
    stepMs = hi.stepMs;
    tokensPerStep = tokens(hi.draftTokens);
  } else {
    const last = lo as StepCurvePoint;
    const prev = pts.length >= 2 ? (pts[pts.length - 2] as StepCurvePoint) : undefined;
    const slope = prev ? Math.max(0, (last.stepMs - prev.stepMs) / (last.batch - prev.batch)) : (last.stepMs * opts.batchSlope) / rep.maxSlots;
    stepMs = last.stepMs + slope * (batch - last.batch);
    tokensPerStep = tokens(last.draftTokens);
  }
  return { stepMs: Math.max(stepMs, opts.minStepMs), tokensPerStep: Math.max(1, tokensPerStep) };
}

/** Predicted milliseconds until the request would finish on this rank. */
export function predictFinishMs(req: PickRequest, r: RankView, opts: PickOptions = DEFAULT_PICK_OPTIONS): number {
  const rep = r.report;
  const ahead = rep.waiting + r.placedSinceReport;
  const blocksNeeded = Math.ceil((req.promptTokens + req.maxTokens) / rep.kvBlockSize);
  const kvShort = rep.totalKvBlocks > 0 && blocksNeeded > rep.freeKvBlocks;
  const slotFree = ahead < rep.freeSlots && !kvShort;
  const slotWaitSteps = slotFree ? 0 : Math.ceil((ahead + 1) / rep.maxSlots) * Math.max(1, rep.meanRemainingTokens / Math.max(1, rep.mtpAcceptance));
  const prefillSteps = Math.ceil((rep.pendingPrefillTokens + req.promptTokens) / rep.stepTokenBudget);
  const batch = Math.min(rep.maxSlots, rep.running + ahead + 1);
  const step = stepAt(rep, batch, req.requestClass, opts, speculationCap(r, opts) === 0);
  return step.stepMs * (slotWaitSteps + prefillSteps + req.maxTokens / step.tokensPerStep);
}

/** The rank to place the request on, or null when no live rank can take it. */
export function pickRank(req: PickRequest, ranks: readonly RankView[], opts: PickOptions = DEFAULT_PICK_OPTIONS): Pick | null {
  let best: { view: RankView; ms: number } | null = null;
  let session: { view: RankView; ms: number } | null = null;
  for (const view of ranks) {
    if (!eligible(req, view)) continue;
    const ms = predictFinishMs(req, view, opts);
    if (view.report.workerId === req.sessionWorkerId) session = { view, ms };
    if (!best || ms < best.ms || (ms === best.ms && tieBreak(view, best.view) < 0)) best = { view, ms };
  }
  if (!best) return null;
  const meets = (ms: number) => req.sloMs === undefined || ms <= req.sloMs;
  const keepSession = session !== null && session.ms <= best.ms * opts.affinitySlack && (meets(session.ms) || !meets(best.ms));
  const chosen = keepSession && session ? { ...session, reason: "session-affinity" as const } : { ...best, reason: "least-time" as const };
  const cap = speculationCap(chosen.view, opts);
  return { workerId: chosen.view.report.workerId, predictedMs: chosen.ms, reason: chosen.reason, meetsSlo: meets(chosen.ms), ...(cap !== undefined ? { maxDraftTokens: cap } : {}) };
}

/** Fewer sequences first, then the worker id, so equal ranks fill evenly and picks are deterministic. */
function tieBreak(a: RankView, b: RankView): number {
  const load = (v: RankView) => v.report.running + v.report.waiting + v.placedSinceReport;
  return load(a) - load(b) || (a.report.workerId < b.report.workerId ? -1 : 1);
}
