import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { LoadBoard } from "../../operator/autoscale/load-board.js";
import { Kube, type KubeObject } from "../../operator/kube/client.js";
import { OperatorMetrics, serveMetrics } from "../../operator/metrics.js";
import type { K8sApiServer } from "../support/k8s-api-server.js";
import { exampleDeployment, startCluster } from "../support/k8s-cluster.js";
import { eventually, FAST_LEASE, reconcileCount, startOperator, type RunningOperator } from "../support/k8s-operator.js";

type Condition = { type: string; status: string; reason: string };
type Status = { observedGeneration?: number; phase?: string; readyGroups?: number; conditions?: Condition[]; groupStatuses?: { index: number; phase: string; restarts: number }[] };

describe("operator: worker groups, leadership, autoscaling, metrics", () => {
  let server: K8sApiServer;
  let kube: Kube;
  const ops: RunningOperator[] = [];
  beforeEach(async () => {
    server = await startCluster();
    kube = new Kube(server.kubeConfig("llm"));
  });
  afterEach(async () => {
    await Promise.all(ops.splice(0).map((o) => o.stop()));
    await server.close();
  });

  const status = () => (server.store.tryGet(server.resource("modeldeployments"), "llm", "nano")?.status ?? {}) as Status;
  const condition = (type: string) => status().conditions?.find((c) => c.type === type);

  /** Plays kubelet and the StatefulSet controller: ready pods for every group, from its template. */
  async function runPods(groups: number[]) {
    for (const g of groups) {
      const sts = server.store.get(server.resource("statefulsets"), "llm", `nano-g${g}`) as KubeObject & { spec: { replicas: number; template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> } } } };
      for (let i = 0; i < sts.spec.replicas; i++) {
        const name = `nano-g${g}-${i}`;
        if (server.store.tryGet(server.resource("pods"), "llm", name)) continue;
        await kube.create({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name, namespace: "llm", labels: { ...sts.spec.template.metadata.labels, "apps.kubernetes.io/pod-index": String(i) }, annotations: sts.spec.template.metadata.annotations },
          spec: { containers: [{ name: "worker", image: "x" }] },
          status: { phase: "Running", conditions: [{ type: "Ready", status: "True" }], containerStatuses: [{ name: "worker", restartCount: 0, ready: true }] },
        });
      }
    }
    server.store.patch(server.resource("deployments"), "llm", "nano-router", { status: { replicas: 2, readyReplicas: 2 } }, "status");
  }

  it("all groups and routers ready - Available, not Progressing, phase Ready", async () => {
    ops.push(startOperator(server));
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("StatefulSets", () => server.store.tryGet(server.resource("statefulsets"), "llm", "nano-g1"));
    await runPods([0, 1]);
    await server.waitFor("phase Ready", () => status().phase === "Ready");
    assert.equal(condition("Available")?.status, "True");
    assert.equal(condition("Progressing")?.status, "False");
    assert.equal(condition("Degraded")?.status, "False");
    assert.equal(status().readyGroups, 2);
  });

  it("a failed rank restarts its whole group and the deployment shows Degraded until the group is whole", async () => {
    ops.push(startOperator(server));
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("StatefulSets", () => server.store.tryGet(server.resource("statefulsets"), "llm", "nano-g1"));
    await runPods([0, 1]);
    await server.waitFor("phase Ready", () => status().phase === "Ready");
    // rank 2-3 of group 0 (its second pod) crashes once
    server.store.patch(server.resource("pods"), "llm", "nano-g0-1", { status: { containerStatuses: [{ name: "worker", restartCount: 1, ready: false }] } }, "status");
    await server.waitFor("group 0 restarted", () => !server.store.tryGet(server.resource("pods"), "llm", "nano-g0-0") && !server.store.tryGet(server.resource("pods"), "llm", "nano-g0-1"));
    assert.ok(server.store.tryGet(server.resource("pods"), "llm", "nano-g1-0"), "the healthy group is left alone");
    await server.waitFor("Degraded", () => condition("Degraded")?.status === "True");
    const seen = await reconcileCount(ops[0] as RunningOperator);
    await eventually("another reconcile", async () => (await reconcileCount(ops[0] as RunningOperator)) > seen);
    assert.equal(status().phase, "Degraded", "still Degraded while the group is not whole");
    assert.equal(condition("Available")?.status, "True", "group 1 still serves");
    assert.ok(server.store.list(server.resource("events"), "llm").items.some((e) => e.reason === "GroupRestarted" && e.type === "Warning"));
    await runPods([0]);
    await server.waitFor("whole again", () => status().phase === "Ready");
    assert.equal(condition("Degraded")?.status, "False");
    assert.equal(status().groupStatuses?.find((g) => g.index === 0)?.restarts, 1);
  });

  it("an image change rolls groups one at a time (maxUnavailable 1, no surge)", async () => {
    ops.push(startOperator(server));
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("StatefulSets", () => server.store.tryGet(server.resource("statefulsets"), "llm", "nano-g1"));
    await runPods([0, 1]);
    await server.waitFor("phase Ready", () => status().phase === "Ready");
    const current = server.store.get(server.resource("modeldeployments"), "llm", "nano");
    const spec = current.spec as { engine: Record<string, unknown> };
    await kube.replace({ ...(current as unknown as KubeObject), spec: { ...spec, engine: { ...spec.engine, image: "example.com/worker:2" } } });
    const pods = () => server.store.list(server.resource("pods"), "llm").items.map((p) => p.metadata.name);
    const { firstRolled } = await server.waitFor("one group rolled", () => {
      const names = pods();
      const g0 = names.filter((n) => n.startsWith("nano-g0")).length;
      const g1 = names.filter((n) => n.startsWith("nano-g1")).length;
      return g0 === 0 || g1 === 0 ? { firstRolled: g0 === 0 ? 0 : 1 } : undefined;
    });
    const other = 1 - firstRolled;
    assert.equal(pods().filter((n) => n.startsWith(`nano-g${other}`)).length, 2, "the other group keeps serving");
    await runPods([firstRolled]);
    await server.waitFor("second group rolled", () => pods().filter((n) => n.startsWith(`nano-g${other}`)).length === 0);
    await runPods([other]);
    await server.waitFor("phase Ready", () => status().phase === "Ready" && status().observedGeneration === 2);
  });

  it("pods the scheduler cannot place - the reason in Progressing and a Warning event; past the progress deadline Degraded until they run", async () => {
    ops.push(startOperator(server));
    await kube.create(exampleDeployment("nano", "llm", { workers: { groups: 1, expertParallel: 4, gpusPerPod: 2, rollout: { progressDeadlineSeconds: 2 } }, autoscaling: { enabled: false } }) as unknown as KubeObject);
    await server.waitFor("StatefulSet", () => server.store.tryGet(server.resource("statefulsets"), "llm", "nano-g0"));
    const sts = server.store.get(server.resource("statefulsets"), "llm", "nano-g0") as KubeObject & { spec: { template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> } } } };
    const why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    for (let i = 0; i < 2; i++) {
      await kube.create({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: `nano-g0-${i}`, namespace: "llm", labels: { ...sts.spec.template.metadata.labels, "apps.kubernetes.io/pod-index": String(i) }, annotations: sts.spec.template.metadata.annotations },
        spec: { containers: [{ name: "worker", image: "x" }] },
        status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: why }] },
      });
    }
    await server.waitFor("the scheduler's words in Progressing", () => (condition("Progressing") as (Condition & { message?: string }) | undefined)?.message?.includes("Insufficient nvidia.com/gpu"));
    assert.equal(condition("Progressing")?.status, "True");
    assert.equal(condition("Degraded")?.status, "False", "not yet past the deadline");
    assert.ok(server.store.list(server.resource("events"), "llm").items.some((e) => e.reason === "Unschedulable" && e.type === "Warning" && String(e.message).includes("nano-g0-0 unschedulable")));
    // nothing else happens: the operator wakes itself at the deadline
    await server.waitFor("deadline exceeded", () => condition("Degraded")?.reason === "ProgressDeadlineExceeded", 10_000);
    assert.equal(status().phase, "Degraded");
    assert.equal(condition("Progressing")?.status, "False");
    assert.ok(server.store.list(server.resource("events"), "llm").items.some((e) => e.reason === "ProgressDeadlineExceeded" && e.type === "Warning"));
    for (let i = 0; i < 2; i++) server.store.delete(server.resource("pods"), "llm", `nano-g0-${i}`);
    await runPods([0]);
    await server.waitFor("ready once the pods run", () => status().phase === "Ready");
    assert.equal(condition("Degraded")?.status, "False");
  });

  it("two operator replicas - exactly one leads and acts; the other takes over when it stops", async () => {
    const a = startOperator(server, { identity: "op-a", leaderElection: FAST_LEASE });
    const b = startOperator(server, { identity: "op-b", leaderElection: FAST_LEASE });
    ops.push(a, b);
    await eventually("a leader", () => a.controller.isLeader || b.controller.isLeader);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("reconciled", () => status().observedGeneration === 1);
    assert.equal([a, b].filter((o) => o.controller.isLeader).length, 1);
    const lease = server.store.get(server.resource("leases"), "latentmesh-system", "latentmesh-operator") as unknown as { spec: { holderIdentity: string } };
    const leader = a.controller.isLeader ? a : b;
    const standby = leader === a ? b : a;
    assert.equal(lease.spec.holderIdentity, leader === a ? "op-a" : "op-b");
    await leader.stop();
    await eventually("the standby leads", () => standby.controller.isLeader);
    await kube.scaleModelDeployment("llm", "nano", 3);
    await server.waitFor("the new leader reconciles", () => status().observedGeneration === 2);
    assert.ok(server.store.tryGet(server.resource("statefulsets"), "llm", "nano-g2"));
  });

  it("autoscaling - a deep queue adds groups through the scale subresource, within maxGroups", async () => {
    const board = new LoadBoard();
    const op = startOperator(server, {}, board);
    ops.push(op);
    await kube.create(exampleDeployment("nano", "llm", { autoscaling: { enabled: true, minGroups: 1, maxGroups: 4, scaleUpStabilizationSeconds: 0 } }) as unknown as KubeObject);
    await server.waitFor("reconciled", () => status().observedGeneration === 1);
    const report = { type: "load" as const, model: "nemotron-3-nano", seq: 1, ready: true, draining: false, running: 8, maxSlots: 8, freeSlots: 0, totalKvBlocks: 100, freeKvBlocks: 10, kvBlockSize: 16, maxContextTokens: 4096, stepTokenBudget: 512, pendingPrefillTokens: 0, meanRemainingTokens: 10, stepTimeMs: 20, tokensPerSecond: 400, mtpAcceptance: 1 };
    for (const g of ["g0", "g1"]) for (let r = 0; r < 4; r++) board.record("llm", "nano", { ...report, workerId: `${g}-${r}`, group: g, rank: r, waiting: 10 }, Date.now());
    await op.controller.autoscale();
    await server.waitFor("4 groups", () => server.store.tryGet(server.resource("statefulsets"), "llm", "nano-g3"));
    assert.equal((server.store.get(server.resource("modeldeployments"), "llm", "nano").spec as { workers: { groups: number } }).workers.groups, 4);
    assert.ok(server.store.list(server.resource("events"), "llm").items.some((e) => e.reason === "Scaled"));
  });

  it("/metrics reports reconciles with controller-runtime's names; /healthz answers", async () => {
    const op = startOperator(server);
    ops.push(op);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("reconciled", () => status().observedGeneration === 1);
    const http = await serveMetrics(op.metrics as OperatorMetrics, op.controller, "127.0.0.1", 0);
    try {
      const text = await (await fetch(`http://127.0.0.1:${http.port}/metrics`)).text();
      assert.match(text, /controller_runtime_reconcile_total\{controller="modeldeployment",result="success"\} \d+/);
      assert.match(text, /controller_runtime_reconcile_time_seconds_bucket/);
      assert.match(text, /workqueue_adds_total\{name="modeldeployment"\}/);
      assert.equal((await fetch(`http://127.0.0.1:${http.port}/healthz`)).status, 200);
      assert.equal((await fetch(`http://127.0.0.1:${http.port}/readyz`)).status, 200);
    } finally {
      http.server.close();
    }
  });
});
