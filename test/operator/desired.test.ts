import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { buildDesired, objectKey, type DesiredObject } from "../../operator/desired/index.js";
import { validateModelDeployment } from "../../operator/validate.js";
import { exampleDeployment } from "../support/k8s-cluster.js";
import { CLI, REPO_ROOT } from "../support/paths.js";

type Env = { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } };
type PodTemplate = { metadata: { annotations: Record<string, string> }; spec: { containers: { image: string; env?: Env[]; resources?: { limits?: Record<string, string> } }[]; initContainers?: { name: string }[] } };

function desired(spec: Record<string, unknown> = {}, uid?: string): DesiredObject[] {
  const raw = exampleDeployment("nano", "llm", spec);
  const v = validateModelDeployment(uid ? { ...raw, metadata: { ...raw.metadata, uid } } : raw);
  assert.ok(v.ok, v.ok ? "" : v.message);
  return buildDesired(v.md);
}

const find = (objs: DesiredObject[], key: string) => {
  const o = objs.find((x) => objectKey(x) === key);
  assert.ok(o, `${key} is built`);
  return o as DesiredObject & { spec: { replicas?: number; template: PodTemplate } };
};

function env(template: PodTemplate): Record<string, string> {
  return Object.fromEntries((template.spec.containers[0]?.env ?? []).map((e) => [e.name, e.value ?? `fieldRef:${e.valueFrom?.fieldRef?.fieldPath ?? "?"}`]));
}

describe("desired objects of the issue's example", () => {
  const objs = desired({}, "uid-1");

  it("are the router, two worker groups, the shard plan, budgets and accounts", () => {
    assert.deepEqual(objs.map(objectKey).sort(), [
      "ConfigMap/nano-router",
      "ConfigMap/nano-shard-plan",
      "Deployment/nano-router",
      "PodDisruptionBudget/nano-router",
      "PodDisruptionBudget/nano-workers",
      "Role/nano-router",
      "RoleBinding/nano-router",
      "Service/nano-g0",
      "Service/nano-g1",
      "Service/nano-router",
      "ServiceAccount/nano-router",
      "ServiceAccount/nano-worker",
      "StatefulSet/nano-g0",
      "StatefulSet/nano-g1",
    ]);
    assert.equal(find(objs, "Deployment/nano-router").spec.replicas, 2);
  });

  it("run each group as 2 pods × 2 GPUs, updated OnDelete, behind a headless Service", () => {
    const sts = find(objs, "StatefulSet/nano-g1") as DesiredObject & { spec: { replicas: number; serviceName: string; updateStrategy: { type: string }; podManagementPolicy: string; template: PodTemplate } };
    assert.equal(sts.spec.replicas, 2);
    assert.equal(sts.spec.serviceName, "nano-g1");
    assert.equal(sts.spec.updateStrategy.type, "OnDelete");
    assert.equal(sts.spec.podManagementPolicy, "Parallel");
    assert.equal(sts.spec.template.spec.containers[0]?.resources?.limits?.["nvidia.com/gpu"], "2");
    assert.equal((find(objs, "Service/nano-g1").spec as unknown as { clusterIP: string }).clusterIP, "None");
  });

  it("wire ranks by env: group, pod index, ranks per pod, world size, leader address, NATS, model location", () => {
    const e = env(find(objs, "StatefulSet/nano-g1").spec.template);
    assert.equal(e.LATENTMESH_GROUP, "g1");
    assert.equal(e.LATENTMESH_POD_INDEX, "fieldRef:metadata.labels['apps.kubernetes.io/pod-index']");
    assert.equal(e.LATENTMESH_RANKS_PER_POD, "2");
    assert.equal(e.LATENTMESH_WORLD_SIZE, "4");
    assert.equal(e.LATENTMESH_LEADER_ADDRESS, "nano-g1-0.nano-g1.llm.svc:29500");
    assert.equal(e.LATENTMESH_NATS_URL, "nats://nats:4222");
    assert.match(e.LATENTMESH_MODEL ?? "", /^\/var\/lib\/latentmesh\/models\/nvidia--NVIDIA-Nemotron-3-Nano/);
    assert.equal(e.LATENTMESH_MTP_MAX_DRAFT_TOKENS, "3");
    assert.equal(e.LATENTMESH_RANK, undefined, "multi-rank pods derive ranks from the pod index");
  });

  it("give workers the drain time the spec allows, and the kubelet 30 s more before SIGKILL", () => {
    const sts = find(objs, "StatefulSet/nano-g0") as DesiredObject & { spec: { template: PodTemplate & { spec: { terminationGracePeriodSeconds: number } } } };
    assert.equal(env(sts.spec.template).LATENTMESH_DRAIN_TIMEOUT_S, "600");
    assert.equal(sts.spec.template.spec.terminationGracePeriodSeconds, 630);
    const short = find(desired({ workers: { groups: 1, expertParallel: 1, gpusPerPod: 1, drainSeconds: 45 } }), "StatefulSet/nano-g0") as typeof sts;
    assert.equal(env(short.spec.template).LATENTMESH_DRAIN_TIMEOUT_S, "45");
    assert.equal(short.spec.template.spec.terminationGracePeriodSeconds, 75);
  });

  it("download hf:// checkpoints in an init step; a path source needs none", () => {
    assert.deepEqual(find(objs, "StatefulSet/nano-g0").spec.template.spec.initContainers?.map((c) => c.name), ["fetch-model"]);
    const local = desired({ model: { name: "m", source: { uri: "/models/nano" } } });
    assert.equal(find(local, "StatefulSet/nano-g0").spec.template.spec.initContainers, undefined);
  });

  it("carry ownerReferences to the ModelDeployment and the common labels", () => {
    for (const o of objs) {
      assert.equal(o.metadata.ownerReferences?.[0]?.uid, "uid-1");
      assert.equal(o.metadata.labels?.["latentmesh.dev/deployment"], "nano");
      assert.equal(o.metadata.labels?.["app.kubernetes.io/managed-by"], "latentmesh-operator");
    }
  });

  it("leave the router untouched when groups scale, and roll groups when the image changes", () => {
    const scaled = desired({ workers: { groups: 3, expertParallel: 4, gpusPerPod: 2 } }, "uid-1");
    assert.deepEqual(find(scaled, "Deployment/nano-router"), find(objs, "Deployment/nano-router"));
    const hash = (o: DesiredObject[]) => find(o, "StatefulSet/nano-g0").spec.template.metadata.annotations["latentmesh.dev/spec-hash"];
    assert.equal(hash(scaled), hash(objs));
    assert.notEqual(hash(desired({ engine: { image: "example.com/worker:2" } }, "uid-1")), hash(objs));
  });

  it("add a ServiceMonitor and a NetworkPolicy only when asked", () => {
    assert.equal(objs.some((o) => o.kind === "ServiceMonitor" || o.kind === "NetworkPolicy"), false);
    const more = desired({ observability: { serviceMonitor: { enabled: true } }, networkPolicy: { enabled: true } });
    const np = more.find((o) => o.kind === "NetworkPolicy") as unknown as { spec: { ingress: Record<string, unknown>[] } };
    assert.ok(more.some((o) => o.kind === "ServiceMonitor"));
    assert.ok("from" in (np.spec.ingress[0] ?? {}), "wire-format field names");
  });
});

describe("latentmesh render", () => {
  const dir = mkdtempSync(join(tmpdir(), "lm-render-"));
  const run = (file: string) => spawnSync(process.execPath, [CLI, "render", "-f", file], { encoding: "utf8" });

  it("prints the YAML stream of every object for the example file", () => {
    const r = run(join(REPO_ROOT, "test", "operator", "fixtures", "nano.yaml"));
    assert.equal(r.status, 0, r.stderr);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as DesiredObject);
    assert.deepEqual(docs.map(objectKey), desired().map(objectKey));
  });

  it("exits 2 with one line on an invalid file", () => {
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "apiVersion: latentmesh.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\nspec: {model: {name: m, source: {uri: 'hf://a/b'}}, workers: {expertParallel: 3, gpusPerPod: 2}}\n");
    const r = run(file);
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /workers\.expertParallel/);
    const missing = run(join(dir, "missing.yaml"));
    assert.equal(missing.status, 2);
    assert.equal(missing.stderr.trim().split("\n").length, 1);
  });
});
