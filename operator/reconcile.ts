/**
 * One level-triggered reconcile of one ModelDeployment, in numbered steps. It reads the world (never
 * the event that woke it), so running it twice, or after a restart, changes nothing more:
 *
 *   1. read the ModelDeployment
 *   2. validate it and build the desired objects (pure; an invalid spec becomes a condition + Event)
 *   3. ensure each desired object (server-side apply, one field manager)
 *   4. prune what it owns and no longer wants
 *   5. observe worker groups; restart a group with a failed rank as a unit; roll outdated groups
 *   6. write status, through /status only (with the resourceVersion read in step 1: 409 if stale)
 *
 * API failures propagate as KubeError; the controller requeues them with backoff.
 */
import { API_VERSION, KIND, ModelDeploymentStatus } from "../contracts/model-deployment.js";
import { REASONS } from "../contracts/model-deployment-status.js";
import { ANNOTATION, LABEL } from "../contracts/model-deployment-wiring.js";
import type { Logger } from "../core/log.js";
import { buildDesired, objectKey } from "./desired/index.js";
import { FIELD_MANAGER, MANAGED_KINDS, ownedSelector, workerPodSelector, type DesiredObject, type ValidDeployment } from "./desired/meta.js";
import { podsPerGroup } from "./desired/worker-group.js";
import type { EventRecorder } from "./events.js";
import { assessGroup, planGroupActions, type GroupHealth, type PodView } from "./group-health.js";
import type { Kube, KubeObject } from "./kube/client.js";
import { computeStatus, conditionOf, type Observed } from "./status.js";
import { validateModelDeployment } from "./validate.js";

export interface ReconcileContext {
  readonly kube: Kube;
  readonly events: EventRecorder;
  readonly log: Logger;
  /** Optional kinds (e.g. ServiceMonitor) the cluster serves. */
  readonly servedOptionalKinds: ReadonlySet<string>;
  /** A group is not restarted again sooner than this after its last unit restart. */
  readonly groupRestartBackoffMs: number;
  /** Last unit restart per `ns/name/group` (timing only; the decision itself is level-triggered). */
  readonly lastRestart: Map<string, number>;
  readonly now: () => number;
}

export interface ReconcileResult {
  /** Reconcile again after this long even without events (e.g. a restart is held back): work is pending. */
  readonly requeueAfterMs?: number;
  /** Look again after this long (a time-based condition such as the progress deadline falls due); the reconcile itself succeeded. */
  readonly checkAfterMs?: number;
}

function readStatus(raw: KubeObject): ModelDeploymentStatus | undefined {
  const parsed = ModelDeploymentStatus.safeParse(raw.status);
  return parsed.success ? parsed.data : undefined;
}

function served(ctx: ReconcileContext, o: { apiVersion: string; kind: string }): boolean {
  const kind = MANAGED_KINDS.find((k) => k.kind === o.kind && k.apiVersion === o.apiVersion);
  return !kind?.optional || ctx.servedOptionalKinds.has(`${o.apiVersion}/${o.kind}`);
}

export async function reconcile(ctx: ReconcileContext, namespace: string, name: string): Promise<ReconcileResult> {
  const { kube, log } = ctx;
  // 1. Read the ModelDeployment. Gone or going: its objects go by ownerReference garbage collection.
  const raw = await kube.get(API_VERSION, KIND, namespace, name);
  if (!raw || raw.metadata.deletionTimestamp) return {};
  const generation = raw.metadata.generation ?? 0;
  const previous = readStatus(raw);
  const target = { name, namespace, uid: raw.metadata.uid, resourceVersion: raw.metadata.resourceVersion };
  const nowIso = () => new Date(ctx.now()).toISOString();

  // 2. Validate and build the desired objects.
  const validation = validateModelDeployment(raw, namespace);
  if (!validation.ok) {
    const status = computeStatus(previous, { ...observedFromStatus(previous), generation, invalid: validation.message }, nowIso());
    const before = conditionOf(previous, "Degraded");
    if (before?.reason !== REASONS.invalidSpec || before.message !== validation.message || previous?.observedGeneration !== generation) {
      await ctx.events.record(target, "Warning", REASONS.invalidSpec, validation.message);
    }
    await writeStatus(ctx, raw, previous, status);
    return {};
  }
  if (previous?.observedGeneration !== generation) {
    for (const w of validation.warnings) await ctx.events.record(target, "Warning", REASONS.specDefaulted, w);
  }
  const md: ValidDeployment = { ...validation.md, uid: raw.metadata.uid };
  const desired = buildDesired(md).filter((o) => served(ctx, o));
  const skipped = buildDesired(md).filter((o) => !served(ctx, o));
  for (const o of skipped) await ctx.events.record(target, "Warning", "KindNotServed", `${o.kind} ${o.metadata.name} skipped: the cluster does not serve ${o.apiVersion}`);

  // 3. Ensure each desired object, in dependency order, with one field manager.
  const applied = new Map<string, KubeObject>();
  for (const obj of desired) applied.set(objectKey(obj), await kube.apply(obj as unknown as KubeObject, FIELD_MANAGER));

  // 4. Prune objects this deployment owns and no longer wants.
  const wanted = new Set(desired.map(objectKey));
  const pruned: string[] = [];
  for (const kind of MANAGED_KINDS) {
    if (!served(ctx, kind)) continue;
    const { items } = await kube.list(kind.apiVersion, kind.kind, namespace, ownedSelector(name));
    for (const o of items) {
      const ownedHere = (o.metadata.ownerReferences ?? []).some((r) => r.uid === md.uid && r.controller === true);
      const key = objectKey({ kind: kind.kind, metadata: o.metadata });
      if (!ownedHere || wanted.has(key)) continue;
      await kube.delete({ apiVersion: kind.apiVersion, kind: kind.kind, metadata: { name: o.metadata.name, namespace } });
      pruned.push(key);
    }
  }
  if (pruned.length > 0) {
    log.info({ deployment: `${namespace}/${name}`, pruned }, "pruned objects no longer wanted");
    await ctx.events.record(target, "Normal", REASONS.pruned, `deleted ${pruned.join(", ")}`);
  }

  // 5. Observe worker groups; restart failed groups as units, roll outdated ones.
  const { items: pods } = await kube.list("v1", "Pod", namespace, workerPodSelector(name));
  const health = observeGroups(md, desired, pods, previous);
  let requeueAfterMs: number | undefined;
  for (const action of planGroupActions(health, md.spec.workers.rollout.maxUnavailable)) {
    const key = `${namespace}/${name}/${action.index}`;
    const since = ctx.now() - (ctx.lastRestart.get(key) ?? -Infinity);
    if (since < ctx.groupRestartBackoffMs) {
      requeueAfterMs = Math.min(requeueAfterMs ?? Infinity, ctx.groupRestartBackoffMs - since);
      continue;
    }
    ctx.lastRestart.set(key, ctx.now());
    const group = health.find((g) => g.status.index === action.index);
    for (const pod of pods.filter((p) => p.metadata.labels?.[LABEL.group] === String(action.index) && !p.metadata.deletionTimestamp)) {
      await kube.delete({ apiVersion: "v1", kind: "Pod", metadata: { name: pod.metadata.name, namespace } });
    }
    if (group && action.reason !== "rollout") {
      (group.status as { restarts: number }).restarts += 1;
      (group.status as { phase: string }).phase = "Restarting";
    }
    if (group) (group.status as { lastRestartReason?: string }).lastRestartReason = RESTART_REASON[action.reason];
    const message = `restarted worker group ${group?.status.name ?? action.index} as a unit: ${action.detail}`;
    log.warn({ deployment: `${namespace}/${name}`, group: action.index, reason: action.reason }, message);
    await ctx.events.record(target, action.reason === "rank-failed" ? "Warning" : "Normal", REASONS.groupRestarted, message);
  }

  // 6. Status, through /status only.
  const router = applied.get(`Deployment/${md.name}-router`)?.status as { readyReplicas?: number } | undefined;
  const observed: Observed = {
    generation,
    desiredGroups: md.spec.workers.groups,
    selector: workerPodSelector(name),
    existingGroups: desired.filter((o) => o.kind === "StatefulSet").length,
    groups: health.map((g) => g.status),
    router: { replicas: md.spec.router.replicas, readyReplicas: router?.readyReplicas ?? 0 },
    rollingOut: health.some((g) => g.outdated),
    progressDeadlineSeconds: md.spec.workers.rollout.progressDeadlineSeconds,
  };
  const status = computeStatus(previous, observed, nowIso());
  // pods the scheduler cannot place: say so where `kubectl describe` looks (the recorder collapses repeats)
  for (const g of health) if (g.status.waiting) await ctx.events.record(target, "Warning", REASONS.unschedulable, `${g.status.name}: ${g.status.waiting}`);
  const progressing = conditionOf(status, "Progressing");
  if (progressing?.reason === REASONS.progressDeadlineExceeded && conditionOf(previous, "Progressing")?.reason !== REASONS.progressDeadlineExceeded) {
    log.warn({ deployment: `${namespace}/${name}` }, progressing.message);
    await ctx.events.record(target, "Warning", REASONS.progressDeadlineExceeded, progressing.message);
  }
  await writeStatus(ctx, raw, previous, status);
  // judge the deadline on time even when nothing else wakes this deployment
  const checkAfterMs = progressing?.status === "True" && status.lastProgressTime ? Math.max(0, Date.parse(status.lastProgressTime) + md.spec.workers.rollout.progressDeadlineSeconds * 1000 - ctx.now()) + 1000 : undefined;
  return { ...(requeueAfterMs === undefined ? {} : { requeueAfterMs }), ...(checkAfterMs === undefined ? {} : { checkAfterMs }) };
}

const RESTART_REASON = { "rank-failed": "RankFailed", drained: "Drained", rollout: "Rollout" } as const;

function observeGroups(md: ValidDeployment, desired: readonly DesiredObject[], pods: readonly KubeObject[], previous: ModelDeploymentStatus | undefined): GroupHealth[] {
  const sets = desired.filter((o) => o.kind === "StatefulSet");
  return sets.map((set) => {
    const index = Number(set.metadata.labels?.[LABEL.group] ?? -1);
    const template = (set.spec as { template?: { metadata?: { annotations?: Record<string, string> } } }).template;
    return assessGroup({
      index,
      name: set.metadata.name,
      expectedPods: podsPerGroup(md),
      templateHash: template?.metadata?.annotations?.[ANNOTATION.specHash],
      pods: pods.filter((p) => p.metadata.labels?.[LABEL.group] === String(index)) as unknown as PodView[],
      restarts: previous?.groupStatuses?.find((g) => g.index === index)?.restarts ?? 0,
      wasRestarting: previous?.groupStatuses?.find((g) => g.index === index)?.phase === "Restarting",
      lastRestartReason: previous?.groupStatuses?.find((g) => g.index === index)?.lastRestartReason,
    });
  });
}

/** What the previous status says was there (for an invalid spec, whose objects are kept as they are). */
function observedFromStatus(previous: ModelDeploymentStatus | undefined): Omit<Observed, "generation"> {
  return {
    desiredGroups: previous?.groups ?? 0,
    selector: previous?.selector ?? "",
    existingGroups: previous?.groups ?? 0,
    groups: previous?.groupStatuses ?? [],
    router: previous?.router ?? { replicas: 0, readyReplicas: 0 },
    rollingOut: false,
  };
}

async function writeStatus(ctx: ReconcileContext, raw: KubeObject, previous: ModelDeploymentStatus | undefined, next: ModelDeploymentStatus): Promise<void> {
  if (previous && JSON.stringify(previous) === JSON.stringify(ModelDeploymentStatus.parse(next))) return;
  await ctx.kube.patchModelDeploymentStatus(raw.metadata.namespace ?? "", raw.metadata.name, raw.metadata.resourceVersion ?? "", next);
}
