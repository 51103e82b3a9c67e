/**
 * Choosing a rank for a request (DESIGN.md §5) — a pure function of the latest load reports.
 *
 * Predicted time to finish on a rank, in engine steps × the rank's step time:
 *   slot wait  = 0 while a slot (and the request's KV blocks) is free for it, else the steps until
 *                enough running sequences finish: ceil(ahead / maxSlots) × meanRemainingTokens / acceptance
 *   prefill    = ceil((pending prefill tokens + prompt tokens) / step token budget)
 *   decode     = max tokens / acceptance        (acceptance: MTP tokens per step, 1 without MTP)
 *   step time  = max(reported step time, minStepMs) × (1 + batchSlope × batch / maxSlots)
 * where `ahead` counts the rank's waiting sequences plus those this router placed there since its
 * last report. A session stays on its previous rank while that rank's prediction is within
 * `affinitySlack` × the best one; otherwise load wins.
 *
 * Speculation cap: a rank this router is filling (its predicted batch, reported plus placed since,
 * reaches `speculationFill` of its slots) is compute-bound, where MTP verification costs more than it
 * saves; requests placed there carry maxDraftTokens 0 (DESIGN §5: "none when compute-bound").
 * Below that the rank's own adaptive depth decides.
 */
import type { LoadReport } from "../contracts/messages.js";

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
  /** The rank that served this request's session before (x-session-id). */
  readonly sessionWorkerId?: string;
  /** Ranks not to use (already failed this request). */
  readonly exclude?: ReadonlySet<string>;
}

export interface PickOptions {
  readonly affinitySlack: number;
  /** Floor on step time, so idle ranks with no measurements still compare sensibly. */
  readonly minStepMs: number;
  /** How much a full batch slows a step relative to an empty one. */
  readonly batchSlope: number;
  /** Batch fill (0..1] from which requests placed on a rank carry maxDraftTokens 0; above 1: never. */
  readonly speculationFill?: number;
}

export const DEFAULT_PICK_OPTIONS: PickOptions = { affinitySlack: 1.5, minStepMs: 1, batchSlope: 1, speculationFill: 0.75 };

export interface Pick {
  readonly workerId: string;
  readonly predictedMs: number;
  readonly reason: "least-time" | "session-affinity";
  /** Set when the rank is being filled past the speculation threshold: its MTP drafts per step at most. */
  readonly maxDraftTokens?: number;
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

/** Predicted milliseconds until the request would finish on this rank. */
export function predictFinishMs(req: PickRequest, r: RankView, opts: PickOptions = DEFAULT_PICK_OPTIONS): number {
  const rep = r.report;
  const acceptance = Math.max(1, rep.mtpAcceptance);
  const ahead = rep.waiting + r.placedSinceReport;
  const blocksNeeded = Math.ceil((req.promptTokens + req.maxTokens) / rep.kvBlockSize);
  const kvShort = rep.totalKvBlocks > 0 && blocksNeeded > rep.freeKvBlocks;
  const slotFree = ahead < rep.freeSlots && !kvShort;
  const slotWaitSteps = slotFree ? 0 : Math.ceil((ahead + 1) / rep.maxSlots) * Math.max(1, rep.meanRemainingTokens / acceptance);
  const prefillSteps = Math.ceil((rep.pendingPrefillTokens + req.promptTokens) / rep.stepTokenBudget);
  const decodeSteps = req.maxTokens / acceptance;
  const batch = Math.min(rep.maxSlots, rep.running + ahead + 1);
  const stepMs = Math.max(rep.stepTimeMs, opts.minStepMs) * (1 + (opts.batchSlope * batch) / rep.maxSlots);
  return stepMs * (slotWaitSteps + prefillSteps + decodeSteps);
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
  const chosen = session && session.ms <= best.ms * opts.affinitySlack ? { ...session, reason: "session-affinity" as const } : { ...best, reason: "least-time" as const };
  const cap = speculationCap(chosen.view, opts);
  return { workerId: chosen.view.report.workerId, predictedMs: chosen.ms, reason: chosen.reason, ...(cap !== undefined ? { maxDraftTokens: cap } : {}) };
}

/** Fewer sequences first, then the worker id, so equal ranks fill evenly and picks are deterministic. */
function tieBreak(a: RankView, b: RankView): number {
  const load = (v: RankView) => v.report.running + v.report.waiting + v.placedSinceReport;
  return load(a) - load(b) || (a.report.workerId < b.report.workerId ? -1 : 1);
}
