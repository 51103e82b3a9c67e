/**
 * ModelDeployment status (written only by the operator, only through the /status subresource):
 * conditions, per-group readiness and what the scale subresource reads.
 */
import { z } from "zod";

/** Condition types, as `kubectl wait --for=condition=Available` reads them. */
export const CONDITION_TYPES = ["Available", "Progressing", "Degraded"] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

/** Condition reasons and Event reasons (CamelCase, as Kubernetes expects). */
export const REASONS = {
  /** The spec fails validation; nothing is created until it is fixed. */
  invalidSpec: "InvalidSpec",
  /** Every desired object is applied and every group and the router are ready. */
  allReady: "AllGroupsReady",
  /** At least one group serves, but not all. */
  someReady: "SomeGroupsReady",
  /** No group serves yet. */
  noneReady: "NoGroupReady",
  /** Objects are being created or rolled out. */
  rollingOut: "RollingOut",
  /** Observed state matches the spec. */
  upToDate: "UpToDate",
  /** A rank pod of a group failed; the group is restarted as a unit. */
  rankFailed: "RankFailed",
  /** A group was restarted (every pod deleted) after a rank failure, a drain or for a rollout. */
  groupRestarted: "GroupRestarted",
  /** A group drained (evicted or scaled in, its ranks exited cleanly) and is restarting as a unit. */
  groupDrained: "GroupDrained",
  /** A worker pod cannot be scheduled (Event reason; the scheduler's message is in the Progressing condition). */
  unschedulable: "Unschedulable",
  /** Nothing progressed for spec.workers.rollout.progressDeadlineSeconds while the deployment was not ready. */
  progressDeadlineExceeded: "ProgressDeadlineExceeded",
  /** Nothing is wrong. */
  healthy: "Healthy",
  /** A stored spec used a value this version no longer accepts; the operator substituted what it serves. */
  specDefaulted: "SpecValueReplaced",
  /** The API server refused a write; the reconcile is retried with backoff. */
  reconcileError: "ReconcileError",
  /** The autoscaler changed spec.workers.groups. */
  scaled: "Scaled",
  /** Objects no longer wanted were deleted. */
  pruned: "Pruned",
} as const;

export const Condition = z.object({
  type: z.string().min(1),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string().min(1),
  message: z.string().default(""),
  lastTransitionTime: z.string().describe("RFC 3339 time of the last status change"),
  observedGeneration: z.int().min(0).optional(),
});
export type Condition = z.infer<typeof Condition>;

export const GROUP_PHASES = ["Pending", "Ready", "Restarting", "Failed"] as const;

export const GroupStatus = z.object({
  index: z.int().min(0),
  name: z.string(),
  phase: z.enum(GROUP_PHASES),
  readyPods: z.int().min(0),
  pods: z.int().min(0),
  restarts: z.int().min(0).default(0).describe("Times the group was restarted as a unit"),
  lastRestartReason: z.enum(["RankFailed", "Drained", "Rollout"]).optional().describe("Why the group was last restarted as a unit; kept while it is Restarting"),
  waiting: z.string().optional().describe("Why the group is not ready yet, when a pod says so (e.g. the scheduler's message for an unschedulable pod)"),
});
export type GroupStatus = z.infer<typeof GroupStatus>;

export const DEPLOYMENT_PHASES = ["Pending", "Progressing", "Ready", "Degraded", "Invalid"] as const;
export type DeploymentPhase = (typeof DEPLOYMENT_PHASES)[number];

export const ModelDeploymentStatus = z.object({
  observedGeneration: z.int().min(0).optional(),
  phase: z.enum(DEPLOYMENT_PHASES).optional(),
  /** `ready/desired` groups, for the Ready printer column. */
  ready: z.string().optional(),
  /** Groups that exist now (the scale subresource's status replicas). */
  groups: z.int().min(0).optional(),
  readyGroups: z.int().min(0).optional(),
  /** Label selector of the worker pods (the scale subresource's selector, for HPA). */
  selector: z.string().optional(),
  groupStatuses: z.array(GroupStatus).optional(),
  router: z.object({ replicas: z.int().min(0), readyReplicas: z.int().min(0) }).optional(),
  lastScaleTime: z.string().optional(),
  lastProgressTime: z.string().optional().describe("RFC 3339 time the deployment last made progress (what progressDeadlineSeconds counts from)"),
  conditions: z.array(Condition).meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] }).optional(),
});
export type ModelDeploymentStatus = z.infer<typeof ModelDeploymentStatus>;
