/**
 * The controller: watches ModelDeployments and the kinds they own, feeds a keyed work queue, runs
 * reconciles on a few workers, and drives the autoscaler, all only while this replica leads.
 * Keys are `namespace/name` of ModelDeployments; events of owned objects map to their owner through
 * the `latentmesh.dev/deployment` label.
 */
import { API_VERSION, KIND, ModelDeployment, PLURAL } from "../contracts/model-deployment.js";
import { REASONS } from "../contracts/model-deployment-status.js";
import { LABEL, LABEL_VALUES } from "../contracts/model-deployment-wiring.js";
import type { Logger } from "../core/log.js";
import { decideGroups, type Recommendation } from "./autoscale/decide.js";
import type { LoadBoard } from "./autoscale/load-board.js";
import { MANAGED_KINDS } from "./desired/meta.js";
import { EventRecorder } from "./events.js";
import { KubeError, type Kube, type KubeObject } from "./kube/client.js";
import { LeaderElector, type LeaderElectionOptions } from "./leader.js";
import { CONTROLLER, type OperatorMetrics } from "./metrics.js";
import { WorkQueue } from "./queue.js";
import { reconcile, type ReconcileContext } from "./reconcile.js";
import { Watcher, type WatchTarget } from "./watcher.js";

export interface ControllerOptions {
  /** Watch one namespace, or all. */
  readonly namespace: string | undefined;
  readonly identity: string;
  readonly workers: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly resyncMs: number;
  readonly watchTimeoutSeconds: number;
  readonly groupRestartBackoffMs: number;
  /** Lease settings; undefined = no election (a single replica acts at once). */
  readonly leaderElection: Omit<LeaderElectionOptions, "identity"> | undefined;
  readonly autoscaleIntervalMs: number;
}

const PLURALS: Record<string, string> = {
  ServiceAccount: "serviceaccounts",
  Role: "roles",
  RoleBinding: "rolebindings",
  ConfigMap: "configmaps",
  Service: "services",
  StatefulSet: "statefulsets",
  Deployment: "deployments",
  PodDisruptionBudget: "poddisruptionbudgets",
  NetworkPolicy: "networkpolicies",
  ServiceMonitor: "servicemonitors",
};

export class Controller {
  private queue: WorkQueue;
  private readonly events: EventRecorder;
  private readonly elector: LeaderElector | undefined;
  private readonly watchers: Watcher[] = [];
  private readonly known = new Map<string, KubeObject>();
  private readonly history = new Map<string, Recommendation[]>();
  private readonly lastRestart = new Map<string, number>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private autoscaleTimer: NodeJS.Timeout | undefined;
  private running = false;
  private synced = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly kube: Kube,
    private readonly opts: ControllerOptions,
    private readonly metrics: OperatorMetrics,
    private readonly log: Logger,
    private readonly load: LoadBoard | undefined,
    /** Called when leadership is lost (the CLI exits; a restarted process campaigns again). */
    private readonly onLostLeadership: () => void = () => {},
  ) {
    this.queue = new WorkQueue({ name: CONTROLLER, baseDelayMs: opts.backoffBaseMs, maxDelayMs: opts.backoffMaxMs, metrics });
    this.events = new EventRecorder(kube, opts.identity, log);
    if (opts.leaderElection) this.elector = new LeaderElector(kube, { ...opts.leaderElection, identity: opts.identity }, log);
  }

  get isLeader(): boolean {
    return this.elector ? this.elector.isLeader : this.running;
  }

  /** Ready: leading with synced watches, or standing by. */
  ready(): boolean {
    return this.running ? this.synced : true;
  }

  start(): void {
    if (!this.elector) return void this.lead();
    this.elector.run(
      () => void this.lead(),
      () => {
        void this.standDown();
        this.onLostLeadership();
      },
    );
  }

  async stop(): Promise<void> {
    await this.standDown();
    await this.elector?.stop();
  }

  private enqueue(obj: KubeObject, isOwner: boolean) {
    const ns = obj.metadata.namespace;
    const name = isOwner ? obj.metadata.name : obj.metadata.labels?.[LABEL.deployment];
    if (ns && name) this.queue.add(`${ns}/${name}`);
  }

  private async lead(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.queue = new WorkQueue({ name: CONTROLLER, baseDelayMs: this.opts.backoffBaseMs, maxDelayMs: this.opts.backoffMaxMs, metrics: this.metrics });
    this.known.clear();
    const servedOptional = new Set<string>();
    for (const k of MANAGED_KINDS.filter((k) => k.optional)) {
      try {
        if (await this.kube.serves(k.apiVersion, k.kind, this.opts.namespace)) servedOptional.add(`${k.apiVersion}/${k.kind}`);
      } catch (err) {
        this.log.warn({ kind: k.kind, err: (err as Error).message }, "could not discover an optional kind");
      }
    }
    const watchOpts = { watchTimeoutSeconds: this.opts.watchTimeoutSeconds, retryDelayMs: this.opts.backoffBaseMs };
    const ns = this.opts.namespace;
    const mdTarget: WatchTarget = { apiVersion: API_VERSION, kind: KIND, plural: PLURAL, namespace: ns };
    this.watchers.push(
      new Watcher(this.kube, mdTarget, (type, obj) => {
        const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
        if (type === "DELETED") this.known.delete(key);
        else this.known.set(key, obj);
        this.enqueue(obj, true);
      }, watchOpts, this.log),
    );
    const owned = `${LABEL.managedBy}=${LABEL_VALUES.managedBy},${LABEL.deployment}`;
    for (const k of MANAGED_KINDS) {
      if (k.optional && !servedOptional.has(`${k.apiVersion}/${k.kind}`)) continue;
      const target: WatchTarget = { apiVersion: k.apiVersion, kind: k.kind, plural: PLURALS[k.kind] ?? `${k.kind.toLowerCase()}s`, namespace: ns, labelSelector: owned };
      // owned objects: any change (or deletion by someone else) re-levels the owner
      this.watchers.push(new Watcher(this.kube, target, (type, obj) => type !== "SYNC" && this.enqueue(obj, false), watchOpts, this.log));
    }
    const podTarget: WatchTarget = { apiVersion: "v1", kind: "Pod", plural: "pods", namespace: ns, labelSelector: `${LABEL.deployment},${LABEL.component}=worker` };
    this.watchers.push(new Watcher(this.kube, podTarget, (type, obj) => type !== "SYNC" && this.enqueue(obj, false), watchOpts, this.log));
    for (const w of this.watchers) w.start();
    await Promise.all(this.watchers.map((w) => w.whenSynced()));
    if (!this.running) return;
    this.synced = true;
    const ctx: ReconcileContext = {
      kube: this.kube,
      events: this.events,
      log: this.log,
      servedOptionalKinds: servedOptional,
      groupRestartBackoffMs: this.opts.groupRestartBackoffMs,
      lastRestart: this.lastRestart,
      now: Date.now,
    };
    this.loops = Array.from({ length: this.opts.workers }, () => this.work(ctx));
    this.resyncTimer = setInterval(() => this.known.forEach((_, key) => this.queue.add(key)), this.opts.resyncMs);
    this.resyncTimer.unref();
    if (this.load) {
      this.autoscaleTimer = setInterval(() => void this.autoscale(), this.opts.autoscaleIntervalMs);
      this.autoscaleTimer.unref();
    }
    this.log.info({ namespace: ns ?? "(all)", workers: this.opts.workers }, "controller started");
  }

  private async standDown(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.synced = false;
    for (const w of this.watchers) w.stop();
    this.watchers.length = 0;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.autoscaleTimer) clearInterval(this.autoscaleTimer);
    this.queue.shutDown();
    await Promise.all(this.loops);
  }

  private async work(ctx: ReconcileContext): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const [namespace = "", name = ""] = key.split("/");
      const end = this.metrics.reconcileTime.startTimer({ controller: CONTROLLER });
      try {
        const result = await reconcile(ctx, namespace, name);
        this.queue.forget(key);
        if (result.requeueAfterMs !== undefined) {
          this.queue.addAfter(key, Math.min(result.requeueAfterMs, result.checkAfterMs ?? Infinity));
          this.metrics.reconcileTotal.inc({ controller: CONTROLLER, result: "requeue_after" });
        } else {
          if (result.checkAfterMs !== undefined) this.queue.addAfter(key, result.checkAfterMs);
          this.metrics.reconcileTotal.inc({ controller: CONTROLLER, result: "success" });
        }
      } catch (err) {
        const delay = this.queue.addRateLimited(key);
        if (err instanceof KubeError && err.conflict) {
          this.metrics.reconcileTotal.inc({ controller: CONTROLLER, result: "requeue" });
          this.log.debug({ key, retryInMs: delay }, "conflict; retrying");
        } else {
          this.metrics.reconcileTotal.inc({ controller: CONTROLLER, result: "error" });
          this.log.error({ key, retryInMs: delay, err: err instanceof KubeError ? err.message : err }, "reconcile failed");
          if (err instanceof KubeError && err.status >= 400 && err.status < 500) {
            await this.events.record({ namespace, name }, "Warning", REASONS.reconcileError, err.message);
          }
        }
      } finally {
        end();
        this.queue.done(key);
      }
    }
  }

  /** One autoscaling pass over every known deployment that has autoscaling enabled. */
  async autoscale(): Promise<void> {
    if (!this.load) return;
    for (const [key, obj] of this.known) {
      const parsed = ModelDeployment.safeParse(obj);
      if (!parsed.success || !parsed.data.spec.autoscaling.enabled) continue;
      const { metadata, spec } = parsed.data;
      const ns = metadata.namespace ?? "default";
      const now = Date.now();
      const decision = decideGroups({ currentGroups: spec.workers.groups, policy: spec.autoscaling, load: this.load.load(ns, metadata.name, now), history: this.history.get(key) ?? [], nowMs: now });
      this.history.set(key, decision.history);
      if (decision.groups === spec.workers.groups) continue;
      try {
        await this.kube.scaleModelDeployment(ns, metadata.name, decision.groups);
        this.log.info({ deployment: key, groups: decision.groups, reason: decision.reason }, "scaled worker groups");
        await this.events.record({ namespace: ns, name: metadata.name, uid: metadata.uid }, "Normal", REASONS.scaled, decision.reason);
      } catch (err) {
        this.log.warn({ deployment: key, err: (err as Error).message }, "could not scale");
      }
    }
  }
}
