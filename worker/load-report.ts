/** Builds this rank's LoadReport from the scheduler's queues and the loop's step statistics (pure). */
import type { LoadReport } from "../contracts/messages.js";
import type { StepStats } from "./loop.js";
import type { Scheduler } from "./scheduler.js";

/** Who this rank is and its fixed limits. */
export interface RankIdentity {
  readonly workerId: string;
  readonly model: string;
  readonly group: string;
  readonly rank: number;
  readonly maxContextTokens: number;
}

export function buildLoadReport(id: RankIdentity, scheduler: Scheduler, stats: StepStats, state: { seq: number; ready: boolean; draining: boolean }): LoadReport {
  const running = scheduler.running;
  let pendingPrefillTokens = 0;
  for (const s of running) pendingPrefillTokens += s.pendingPrefillTokens;
  for (const s of scheduler.waiting) pendingPrefillTokens += s.pendingPrefillTokens;
  let remaining = 0;
  for (const s of running) remaining += s.remainingTokens;
  return {
    type: "load",
    workerId: id.workerId,
    model: id.model,
    group: id.group,
    rank: id.rank,
    seq: state.seq,
    ready: state.ready,
    draining: state.draining,
    running: running.length,
    waiting: scheduler.waiting.length,
    maxSlots: scheduler.config.maxRunning,
    freeSlots: Math.max(0, scheduler.config.maxRunning - running.length),
    totalKvBlocks: scheduler.kv.numBlocks,
    freeKvBlocks: scheduler.kv.numFree,
    kvBlockSize: scheduler.kv.blockSize,
    maxContextTokens: id.maxContextTokens,
    stepTokenBudget: scheduler.config.stepTokenBudget,
    pendingPrefillTokens,
    meanRemainingTokens: running.length > 0 ? remaining / running.length : 0,
    stepTimeMs: stats.stepTimeMs,
    tokensPerSecond: stats.tokensPerSecond,
    mtpAcceptance: Math.max(1, stats.mtpAcceptance),
    stepCurve: stats.stepCurve.map((p) => ({ ...p })),
    ...(Object.keys(stats.mtpByClass).length > 0 ? { mtpByClass: stats.mtpByClass } : {}),
  };
}
