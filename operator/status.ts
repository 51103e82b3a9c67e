/**
 * The status a reconcile writes (pure): conditions Available / Progressing / Degraded, phase,
 * per-group readiness, and the fields the scale subresource and printer columns read.
 * lastTransitionTime changes only when a condition's status does.
 */
import { REASONS, type Condition, type ConditionType, type DeploymentPhase, type GroupStatus, type ModelDeploymentStatus } from "../contracts/model-deployment-status.js";

export interface ConditionInput {
  readonly type: ConditionType;
  readonly status: "True" | "False" | "Unknown";
  readonly reason: string;
  readonly message: string;
}

/** Merges conditions, keeping lastTransitionTime of those whose status did not change. */
export function mergeConditions(previous: readonly Condition[] | undefined, next: readonly ConditionInput[], generation: number, now: string): Condition[] {
  return next.map((c) => {
    const prev = previous?.find((p) => p.type === c.type);
    const lastTransitionTime = prev && prev.status === c.status ? prev.lastTransitionTime : now;
    return { ...c, lastTransitionTime, observedGeneration: generation };
  });
}

export interface Observed {
  readonly generation: number;
  readonly desiredGroups: number;
  readonly selector: string;
  /** Worker groups that exist (StatefulSets). */
  readonly existingGroups: number;
  readonly groups: readonly GroupStatus[];
  readonly router: { readonly replicas: number; readonly readyReplicas: number };
  /** A group needs a rollout or restart, or objects were just changed. */
  readonly rollingOut: boolean;
  /** Why the spec is invalid, when it is. */
  readonly invalid?: string;
  /** The last reconcile error, when the API refused a write. */
  readonly error?: string;
  /** spec.workers.rollout.progressDeadlineSeconds; without it no deadline is judged. */
  readonly progressDeadlineSeconds?: number;
}

/** What counts as progress: any group's phase or pod counts, the router's readiness, the group count or the spec changing. */
function progressKey(generation: number | undefined, existingGroups: number | undefined, groups: readonly GroupStatus[] | undefined, router: Observed["router"] | undefined): string {
  return JSON.stringify([generation, existingGroups, (groups ?? []).map((g) => [g.index, g.phase, g.readyPods, g.pods]), router?.replicas, router?.readyReplicas]);
}

/** The Progressing message: counts, then why groups wait (the scheduler's words, shortened). */
function progressMessage(o: Observed, ready: number): string {
  const waiting = o.groups.filter((g) => g.waiting).map((g) => `${g.name}: ${(g.waiting ?? "").slice(0, 300)}`);
  return `${o.existingGroups}/${o.desiredGroups} groups exist, ${ready} ready${waiting.length ? `; waiting: ${waiting.join("; ")}` : ""}`;
}

/** Degraded while groups restart as units: RankFailed unless every one of them drained cleanly. */
function brokenCondition(broken: readonly GroupStatus[]): ConditionInput {
  const drained = broken.filter((g) => g.phase !== "Failed" && g.lastRestartReason === "Drained");
  if (drained.length === broken.length) return { type: "Degraded", status: "True", reason: REASONS.groupDrained, message: `groups restarting as units after a drain: ${broken.map((g) => g.name).join(", ")}` };
  const failed = broken.filter((g) => !drained.includes(g));
  return { type: "Degraded", status: "True", reason: REASONS.rankFailed, message: `groups restarting after a rank failure: ${failed.map((g) => g.name).join(", ")}${drained.length ? `; after a drain: ${drained.map((g) => g.name).join(", ")}` : ""}` };
}

export function computeStatus(previous: ModelDeploymentStatus | undefined, o: Observed, now: string): ModelDeploymentStatus {
  const ready = o.groups.filter((g) => g.phase === "Ready").length;
  // a group restarting for a rollout is progress, not degradation
  const broken = o.groups.filter((g) => g.phase === "Failed" || (g.phase === "Restarting" && g.lastRestartReason !== "Rollout"));
  const routerReady = o.router.replicas === 0 || o.router.readyReplicas > 0;
  const allReady = !o.invalid && ready === o.desiredGroups && o.existingGroups === o.desiredGroups && o.router.readyReplicas >= o.router.replicas && !o.rollingOut;
  let conditions: ConditionInput[];
  let phase: DeploymentPhase;
  // progress: the clock restarts whenever what is ready or exists changes (or the spec does)
  const moved = !previous?.lastProgressTime || progressKey(previous.observedGeneration, previous.groups, previous.groupStatuses, previous.router) !== progressKey(o.generation, o.existingGroups, o.groups, o.router);
  const lastProgressTime = moved ? now : (previous?.lastProgressTime ?? now);
  const stalledMs = Date.parse(now) - Date.parse(lastProgressTime);
  const stalled = !o.invalid && !allReady && o.progressDeadlineSeconds !== undefined && stalledMs > o.progressDeadlineSeconds * 1000;
  if (o.invalid) {
    const c = { status: "True" as const, reason: REASONS.invalidSpec, message: o.invalid };
    conditions = [
      { type: "Available", status: ready > 0 ? "True" : "False", reason: REASONS.invalidSpec, message: "the spec is invalid; last valid objects are kept" },
      { type: "Progressing", status: "False", reason: REASONS.invalidSpec, message: o.invalid },
      { type: "Degraded", ...c },
    ];
    phase = "Invalid";
  } else {
    const available = ready > 0 && routerReady;
    const progress = progressMessage(o, ready);
    conditions = [
      {
        type: "Available",
        status: available ? "True" : "False",
        reason: !available ? REASONS.noneReady : ready === o.desiredGroups ? REASONS.allReady : REASONS.someReady,
        message: `${ready}/${o.desiredGroups} worker groups ready, ${o.router.readyReplicas}/${o.router.replicas} router replicas ready`,
      },
      allReady
        ? { type: "Progressing", status: "False", reason: REASONS.upToDate, message: "all objects match the spec and are ready" }
        : stalled
          ? { type: "Progressing", status: "False", reason: REASONS.progressDeadlineExceeded, message: `no progress for ${o.progressDeadlineSeconds} s: ${progress}` }
          : { type: "Progressing", status: "True", reason: REASONS.rollingOut, message: progress },
      o.error
        ? { type: "Degraded", status: "True", reason: REASONS.reconcileError, message: o.error }
        : broken.length > 0
          ? brokenCondition(broken)
          : stalled
            ? { type: "Degraded", status: "True", reason: REASONS.progressDeadlineExceeded, message: `no progress for ${o.progressDeadlineSeconds} s: ${progress}` }
            : { type: "Degraded", status: "False", reason: REASONS.healthy, message: "" },
    ];
    phase = o.error || broken.length > 0 || stalled ? "Degraded" : allReady ? "Ready" : o.existingGroups > 0 || o.router.replicas > 0 ? "Progressing" : "Pending";
  }
  return {
    observedGeneration: o.generation,
    phase,
    ready: `${ready}/${o.desiredGroups}`,
    groups: o.existingGroups,
    readyGroups: ready,
    selector: o.selector,
    groupStatuses: [...o.groups],
    router: { ...o.router },
    ...(previous?.lastScaleTime ? { lastScaleTime: previous.lastScaleTime } : {}),
    lastProgressTime,
    conditions: mergeConditions(previous?.conditions, conditions, o.generation, now),
  };
}

export function conditionOf(status: ModelDeploymentStatus | undefined, type: ConditionType): Condition | undefined {
  return status?.conditions?.find((c) => c.type === type);
}
