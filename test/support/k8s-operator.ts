/** Runs the real controller in-process against a test API server, with timings fit for tests. */
import { createLogger } from "../../core/log.js";
import type { LoadBoard } from "../../operator/autoscale/load-board.js";
import { Controller, type ControllerOptions } from "../../operator/controller.js";
import { Kube, type KubeObject } from "../../operator/kube/client.js";
import { OperatorMetrics } from "../../operator/metrics.js";
import type { K8sApiServer } from "./k8s-api-server.js";

export const FAST: ControllerOptions = {
  namespace: undefined,
  identity: "op-a",
  workers: 2,
  backoffBaseMs: 20,
  backoffMaxMs: 400,
  resyncMs: 60_000,
  watchTimeoutSeconds: 30,
  groupRestartBackoffMs: 0,
  leaderElection: undefined,
  autoscaleIntervalMs: 3_600_000,
};

export const FAST_LEASE = { namespace: "latentmesh-system", name: "latentmesh-operator", leaseDurationMs: 1_000, renewDeadlineMs: 800, retryPeriodMs: 100 };

export interface RunningOperator {
  readonly controller: Controller;
  readonly metrics: OperatorMetrics;
  stop(): Promise<void>;
}

export function startOperator(server: K8sApiServer, options: Partial<ControllerOptions> = {}, load?: LoadBoard): RunningOperator {
  const metrics = new OperatorMetrics();
  const log = createLogger({ name: "operator", level: "silent", format: "json" });
  const controller = new Controller(new Kube(server.kubeConfig()), { ...FAST, ...options }, metrics, log, load);
  controller.start();
  return { controller, metrics, stop: () => controller.stop() };
}

/** Reconciles counted by result, from the operator's own metrics. */
export async function reconcileCount(op: RunningOperator, result = "success"): Promise<number> {
  const m = await op.metrics.reconcileTotal.get();
  return m.values.filter((v) => v.labels.result === result).reduce((s, v) => s + v.value, 0);
}

/** Polls `check` every 10 ms until truthy (for state outside the API server, e.g. metrics). */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Objects of every kind labelled as owned by deployment `name`. */
export function ownedObjects(server: K8sApiServer, namespace: string, name: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const r of server.store.resources) {
    if (r.kind === "Event" || r.kind === "Pod") continue;
    for (const o of server.store.list(r, namespace, `latentmesh.dev/deployment=${name}`).items) out.push({ apiVersion: r.group ? `${r.group}/${r.version}` : r.version, kind: r.kind, ...o } as KubeObject);
  }
  return out;
}
