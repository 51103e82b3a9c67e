/**
 * The autoscaling decision (pure, table-tested): how many worker groups a deployment should have,
 * from its load against the targets, within [minGroups, maxGroups], with HPA-style stabilisation
 * windows (scale up to the lowest recommendation of the up-window, down to the highest of the
 * down-window), so a short burst or lull does not flap groups of GPUs.
 */
import type { ModelDeploymentSpec } from "../../contracts/model-deployment.js";

export type AutoscalingPolicy = ModelDeploymentSpec["autoscaling"];

/** The deployment's load, aggregated over its live ranks. */
export interface DeploymentLoad {
  /** Sequences waiting for a slot, summed over every rank. */
  readonly waiting: number;
  /** Estimated time to first token of a new request, seconds (mean over ranks). */
  readonly ttftSeconds: number;
  /** Ranks that reported recently. */
  readonly ranks: number;
}

/** One past recommendation. */
export interface Recommendation {
  readonly atMs: number;
  readonly groups: number;
}

export interface AutoscaleInput {
  readonly currentGroups: number;
  readonly policy: AutoscalingPolicy;
  /** undefined when no rank reported recently: hold (only clamp into bounds). */
  readonly load: DeploymentLoad | undefined;
  readonly history: readonly Recommendation[];
  readonly nowMs: number;
}

export interface AutoscaleDecision {
  readonly groups: number;
  readonly reason: string;
  /** Recommendations to keep for the next decision. */
  readonly history: Recommendation[];
}

/** Ratios within this distance of 1 change nothing (as HPA's default tolerance). */
export const TOLERANCE = 0.1;

function clamp(n: number, policy: AutoscalingPolicy): number {
  return Math.min(policy.maxGroups, Math.max(policy.minGroups, n));
}

/** What the load alone asks for, before stabilisation. */
export function recommend(current: number, policy: AutoscalingPolicy, load: DeploymentLoad): { groups: number; why: string } {
  const { queueDepthPerGroup, timeToFirstTokenSeconds } = policy.targets;
  if (current === 0) {
    return load.waiting > 0 ? { groups: clamp(1, policy), why: `${load.waiting} waiting and no group` } : { groups: clamp(0, policy), why: "idle" };
  }
  const queueRatio = load.waiting / current / queueDepthPerGroup;
  const ttftRatio = load.ttftSeconds / timeToFirstTokenSeconds;
  const ratio = Math.max(queueRatio, ttftRatio);
  const why = `queue ${(load.waiting / current).toFixed(1)}/group (target ${queueDepthPerGroup}), ttft ${load.ttftSeconds.toFixed(2)}s (target ${timeToFirstTokenSeconds}s)`;
  if (Math.abs(ratio - 1) <= TOLERANCE) return { groups: clamp(current, policy), why };
  return { groups: clamp(Math.ceil(current * ratio), policy), why };
}

export function decideGroups(input: AutoscaleInput): AutoscaleDecision {
  const { policy, currentGroups: current, nowMs } = input;
  if (!policy.enabled) return { groups: current, reason: "autoscaling disabled", history: [] };
  if (!input.load) {
    const groups = clamp(current, policy);
    return { groups, reason: groups === current ? "no load reports; holding" : "outside [minGroups, maxGroups]", history: [...input.history] };
  }
  const raw = recommend(current, policy, input.load);
  const keepMs = Math.max(policy.scaleUpStabilizationSeconds, policy.scaleDownStabilizationSeconds) * 1000;
  // a fresh history (e.g. after an operator restart) starts with the current count, so that a
  // scale-down still waits out its whole window
  const past = input.history.length > 0 ? input.history : [{ atMs: nowMs, groups: current }];
  const kept = past.filter((r) => nowMs - r.atMs <= keepMs);
  const history = [...kept, { atMs: nowMs, groups: raw.groups }];
  const within = (seconds: number) => [...kept.filter((r) => nowMs - r.atMs < seconds * 1000).map((r) => r.groups), raw.groups];
  let groups = current;
  if (raw.groups > current) groups = Math.max(current, Math.min(...within(policy.scaleUpStabilizationSeconds)));
  else if (raw.groups < current) groups = Math.min(current, Math.max(...within(policy.scaleDownStabilizationSeconds)));
  groups = clamp(groups, policy);
  const reason = groups === current ? (raw.groups === current ? `steady: ${raw.why}` : `stabilising towards ${raw.groups}: ${raw.why}`) : `${current} → ${groups}: ${raw.why}`;
  return { groups, reason, history };
}
