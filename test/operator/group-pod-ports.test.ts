/**
 * Worker pods of several GPUs as the operator renders them: the worker runs as its pod's supervisor
 * (ranks per pod set, no rank, no local rank), and every rank process's metrics port (the wiring
 * contract's rankOpsPorts, which the worker's supervisor uses too) is a named container port, a
 * port of the group's Service, a ServiceMonitor endpoint and open in the NetworkPolicy.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PORTS, rankOpsPorts } from "../../contracts/model-deployment-wiring.js";
import { buildDesired, objectKey, type DesiredObject } from "../../operator/desired/index.js";
import { validateModelDeployment } from "../../operator/validate.js";
import { planPodRanks } from "../../worker/group-pod.js";
import { parseFlags } from "../../core/flags.js";
import { workerCommand } from "../../worker/command.js";
import { isPodSupervisor, type WorkerConfig } from "../../worker/config.js";
import { exampleDeployment } from "../support/k8s-cluster.js";

type Port = { name: string; containerPort?: number; port?: number; targetPort?: string };
type Env = { name: string; value?: string; valueFrom?: unknown };
type Container = { args: string[]; env: Env[]; ports: Port[] };

function desired(workers: Record<string, unknown>): DesiredObject[] {
  const v = validateModelDeployment(exampleDeployment("nano", "llm", { workers, networkPolicy: { enabled: true }, observability: { serviceMonitor: { enabled: true } } }));
  assert.ok(v.ok, v.ok ? "" : v.message);
  return buildDesired(v.md);
}

function get<T>(objs: DesiredObject[], key: string): T {
  const o = objs.find((x) => objectKey(x) === key);
  assert.ok(o, `${key} is built`);
  return o as unknown as T;
}

const container = (objs: DesiredObject[]) => get<{ spec: { template: { spec: { containers: Container[] } } } }>(objs, "StatefulSet/nano-g0").spec.template.spec.containers[0] as Container;

describe("worker pods with several GPUs", () => {
  for (const gpusPerPod of [1, 2, 4]) {
    it(`${gpusPerPod} GPU(s) per pod: one metrics port per rank process on the container, the Service, the ServiceMonitor and the NetworkPolicy`, () => {
      const objs = desired({ groups: 1, expertParallel: 4, gpusPerPod });
      const want = Array.from({ length: gpusPerPod }, (_, i) => ({ name: i === 0 ? "metrics" : `metrics-${i}`, port: PORTS.workerHttp + 2 * i }));
      const c = container(objs);
      assert.deepEqual(c.ports.filter((p) => p.name.startsWith("metrics")).map((p) => ({ name: p.name, port: p.containerPort })), want);
      assert.ok(c.ports.some((p) => p.name === "rendezvous" && p.containerPort === PORTS.groupRendezvous));
      const svc = get<{ spec: { ports: Port[] } }>(objs, "Service/nano-g0");
      assert.deepEqual(svc.spec.ports.filter((p) => p.name.startsWith("metrics")).map((p) => ({ name: p.name, port: p.port })), want);
      assert.ok(svc.spec.ports.every((p) => p.targetPort === p.name));
      const sm = get<{ spec: { endpoints: { port: string }[] } }>(objs, "ServiceMonitor/nano");
      assert.deepEqual(sm.spec.endpoints.map((e) => e.port).filter((p) => p.startsWith("metrics")), want.map((w) => w.name));
      const np = get<{ spec: { ingress: { ports?: { port: number }[] }[] } }>(objs, "NetworkPolicy/nano-workers");
      assert.deepEqual(np.spec.ingress.flatMap((r) => r.ports ?? []).map((p) => p.port), want.map((w) => w.port));
    });
  }

  it("the ports rendered are those the worker's pod supervisor gives its rank processes", () => {
    const objs = desired({ groups: 1, expertParallel: 8, gpusPerPod: 4 });
    const c = container(objs);
    const env: Record<string, string> = { LATENTMESH_POD_INDEX: "1" };
    for (const e of c.env) if (e.value !== undefined) env[e.name] = e.value;
    const parsed = parseFlags(workerCommand, c.args.slice(1), env);
    assert.equal(parsed.kind, "ok");
    const cfg = (parsed.kind === "ok" ? parsed.flags : undefined) as WorkerConfig;
    assert.equal(isPodSupervisor(cfg), true, "a 4-GPU pod's worker supervises its ranks");
    const ranks = planPodRanks(cfg, undefined);
    assert.deepEqual(ranks.map((r) => r.rank), [4, 5, 6, 7]);
    assert.deepEqual(ranks.map((r) => r.httpPort), c.ports.filter((p) => p.name.startsWith("metrics")).map((p) => p.containerPort));
    assert.deepEqual(ranks.map((r) => r.grpcPort), [0, 1, 2, 3].map((i) => rankOpsPorts(PORTS.workerHttp, PORTS.workerGrpc, i).grpcPort));
  });
});
