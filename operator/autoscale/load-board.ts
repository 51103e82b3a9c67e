/**
 * The latest load report of every rank, per deployment, and their aggregate for the autoscaler.
 * Reports older than `staleMs` are ignored (a dead rank must not hold a deployment up or down).
 */
import type { LoadReport } from "../../contracts/messages.js";
import type { DeploymentLoad } from "./decide.js";

/** Estimated time to first token on a rank: its queued prefill work plus one step. */
export function estimateTtftSeconds(r: Pick<LoadReport, "pendingPrefillTokens" | "stepTokenBudget" | "stepTimeMs">): number {
  return ((r.pendingPrefillTokens / Math.max(1, r.stepTokenBudget)) + 1) * (r.stepTimeMs / 1000);
}

export class LoadBoard {
  private readonly reports = new Map<string, Map<string, { report: LoadReport; atMs: number }>>();

  constructor(private readonly staleMs = 10_000) {}

  record(namespace: string, deployment: string, report: LoadReport, nowMs: number): void {
    const key = `${namespace}/${deployment}`;
    let ranks = this.reports.get(key);
    if (!ranks) this.reports.set(key, (ranks = new Map()));
    ranks.set(report.workerId, { report, atMs: nowMs });
  }

  /** The deployment's load over its fresh reports; undefined when there are none. */
  load(namespace: string, deployment: string, nowMs: number): DeploymentLoad | undefined {
    const ranks = this.reports.get(`${namespace}/${deployment}`);
    if (!ranks) return undefined;
    const fresh = [...ranks.values()].filter((r) => nowMs - r.atMs <= this.staleMs && r.report.ready).map((r) => r.report);
    if (fresh.length === 0) return undefined;
    return {
      waiting: fresh.reduce((s, r) => s + r.waiting, 0),
      ttftSeconds: fresh.reduce((s, r) => s + estimateTtftSeconds(r), 0) / fresh.length,
      ranks: fresh.length,
    };
  }
}
