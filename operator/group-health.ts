/**
 * Health of worker groups and what to do about it (pure). One dead rank hangs its whole group (the
 * others block in collectives), so a group with a failed rank is restarted as a unit; outdated
 * groups (StatefulSets update OnDelete) are rolled as units too, at most `maxUnavailable` groups down
 * at once, with no extra pods (maxSurge 0 friendly: no spare GPUs needed).
 */
import type { GroupStatus } from "../contracts/model-deployment-status.js";
import { ANNOTATION, GROUP_DRAIN_MESSAGE } from "../contracts/model-deployment-wiring.js";

/** The fields of a Pod the decisions read. */
export interface PodView {
  readonly metadata: { readonly name: string; readonly deletionTimestamp?: string; readonly annotations?: Record<string, string> };
  readonly status?: {
    readonly phase?: string;
    readonly conditions?: readonly { readonly type: string; readonly status: string; readonly reason?: string; readonly message?: string }[];
    readonly containerStatuses?: readonly {
      readonly restartCount?: number;
      readonly state?: { readonly waiting?: { readonly reason?: string }; readonly terminated?: { readonly exitCode?: number } };
      readonly lastState?: { readonly terminated?: { readonly exitCode?: number; readonly message?: string } };
    }[];
  };
}

const FAILED_WAITING_REASONS = new Set(["CrashLoopBackOff", "Error", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"]);

/** A container that ended cleanly because a peer drained the group (it wrote GROUP_DRAIN_MESSAGE). */
const endedByGroupDrain = (t: { readonly exitCode?: number; readonly message?: string } | undefined): boolean => t?.exitCode === 0 && (t.message ?? "").includes(GROUP_DRAIN_MESSAGE);

/** Why a rank pod counts as failed, or undefined when it does not (a restart after a peer's group drain is not a failure: rankDrained). */
export function rankFailure(pod: PodView): string | undefined {
  if (pod.status?.phase === "Failed") return `pod ${pod.metadata.name} failed`;
  for (const c of pod.status?.containerStatuses ?? []) {
    if ((c.restartCount ?? 0) > 0 && !endedByGroupDrain(c.lastState?.terminated)) return `pod ${pod.metadata.name} restarted a container`;
    const waiting = c.state?.waiting?.reason;
    // a rank drained again before the group restart came round waits in CrashLoopBackOff: still a drain
    const backingOffAfterDrain = waiting === "CrashLoopBackOff" && endedByGroupDrain(c.lastState?.terminated);
    if (waiting && FAILED_WAITING_REASONS.has(waiting) && !backingOffAfterDrain) return `pod ${pod.metadata.name}: ${waiting}`;
    if (c.state?.terminated && c.state.terminated.exitCode !== 0) return `pod ${pod.metadata.name} exited with ${c.state.terminated.exitCode}`;
  }
  return undefined;
}

/**
 * A rank that left after a coordinated group drain started by a peer (worker/group-drain.ts): its
 * container exited 0 with the drain's termination message and was restarted by the kubelet; nothing
 * failed. The group still has to restart as a unit (its ranks rendezvous together). A clean exit
 * without the message (a rank stopped by its own SIGTERM, e.g. a failed liveness probe) is a failure.
 */
export function rankDrained(pod: PodView): string | undefined {
  for (const c of pod.status?.containerStatuses ?? []) {
    if ((c.restartCount ?? 0) > 0 && endedByGroupDrain(c.lastState?.terminated)) return `pod ${pod.metadata.name} exited 0 after a group drain`;
  }
  return undefined;
}

/** Why a pod waits to be placed, as the scheduler said (PodScheduled=False), or undefined. */
export function podUnschedulable(pod: PodView): string | undefined {
  const c = (pod.status?.conditions ?? []).find((x) => x.type === "PodScheduled" && x.status === "False");
  if (!c) return undefined;
  const why = c.message?.trim() || c.reason || "not scheduled";
  return `pod ${pod.metadata.name} unschedulable: ${why}`;
}

function isReady(pod: PodView): boolean {
  return pod.status?.phase === "Running" && (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

export interface GroupObservation {
  readonly index: number;
  readonly name: string;
  /** Pods the group should have. */
  readonly expectedPods: number;
  /** Hash its StatefulSet's pod template carries now. */
  readonly templateHash: string | undefined;
  readonly pods: readonly PodView[];
  /** Unit restarts so far (carried in status). */
  readonly restarts: number;
  /** The previous status said Restarting: it stays so until the group is whole again. */
  readonly wasRestarting: boolean;
  /** The previous status's reason for the last unit restart (kept while the group is Restarting). */
  readonly lastRestartReason?: GroupStatus["lastRestartReason"];
}

export interface GroupHealth {
  readonly status: GroupStatus;
  /** A rank failed: restart the group. */
  readonly failure: string | undefined;
  /** No rank failed but the group drained (a rank exited 0 and restarted): restart the group. */
  readonly drained: string | undefined;
  /** Some pod runs an older template (a rollout is pending for this group). */
  readonly outdated: boolean;
  readonly ready: boolean;
}

export function assessGroup(g: GroupObservation): GroupHealth {
  const live = g.pods.filter((p) => !p.metadata.deletionTimestamp);
  const terminating = g.pods.length - live.length;
  const failure = live.map(rankFailure).find((f) => f !== undefined);
  const drained = failure ? undefined : live.map(rankDrained).find((f) => f !== undefined);
  const readyPods = live.filter(isReady).length;
  const outdated = g.templateHash !== undefined && live.some((p) => p.metadata.annotations?.[ANNOTATION.specHash] !== g.templateHash);
  const ready = !failure && !drained && terminating === 0 && live.length === g.expectedPods && readyPods === g.expectedPods;
  const phase: GroupStatus["phase"] = failure ? "Failed" : ready ? "Ready" : drained || terminating > 0 || g.wasRestarting ? "Restarting" : "Pending";
  const reason = drained ? "Drained" : phase === "Restarting" ? g.lastRestartReason : undefined;
  const waiting = ready || failure ? undefined : live.map(podUnschedulable).find((w) => w !== undefined);
  return {
    status: { index: g.index, name: g.name, phase, readyPods, pods: live.length, restarts: g.restarts, ...(reason ? { lastRestartReason: reason } : {}), ...(waiting ? { waiting } : {}) },
    failure,
    drained,
    outdated,
    ready,
  };
}

export type GroupAction = { readonly kind: "restart"; readonly index: number; readonly reason: "rank-failed" | "drained" | "rollout"; readonly detail: string };

/**
 * Which groups to restart now: every failed or drained group (it serves nothing anyway), and outdated groups
 * while fewer than `maxUnavailable` groups are down. Groups being restarted count as down.
 */
export function planGroupActions(groups: readonly GroupHealth[], maxUnavailable: number): GroupAction[] {
  const actions: GroupAction[] = [];
  let down = groups.filter((g) => !g.ready).length;
  for (const g of groups) {
    if (g.failure) actions.push({ kind: "restart", index: g.status.index, reason: "rank-failed", detail: g.failure });
    else if (g.drained) actions.push({ kind: "restart", index: g.status.index, reason: "drained", detail: g.drained });
  }
  for (const g of groups) {
    if (g.failure || g.drained || !g.outdated || g.status.phase === "Restarting") continue;
    if (!g.ready) {
      // already down: rolling it costs nothing more
      actions.push({ kind: "restart", index: g.status.index, reason: "rollout", detail: `${g.status.name} runs an outdated template` });
    } else if (down < Math.max(1, maxUnavailable)) {
      actions.push({ kind: "restart", index: g.status.index, reason: "rollout", detail: `${g.status.name} runs an outdated template` });
      down++;
    }
  }
  return actions;
}
