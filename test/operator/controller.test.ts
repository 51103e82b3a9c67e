import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { buildDesired, objectKey } from "../../operator/desired/index.js";
import { Kube, type KubeObject } from "../../operator/kube/client.js";
import { validateModelDeployment } from "../../operator/validate.js";
import type { K8sApiServer } from "../support/k8s-api-server.js";
import { exampleDeployment, startCluster } from "../support/k8s-cluster.js";
import { ownedObjects, reconcileCount, eventually, startOperator, type RunningOperator } from "../support/k8s-operator.js";

type Status = { observedGeneration?: number; phase?: string; conditions?: { type: string; status: string; reason: string }[] };

function md(server: K8sApiServer, name = "nano", ns = "llm"): (KubeObject & { status?: Status }) | undefined {
  return server.store.tryGet(server.resource("modeldeployments"), ns, name) as (KubeObject & { status?: Status }) | undefined;
}

function observed(server: K8sApiServer, generation: number, name = "nano") {
  return () => {
    const o = md(server, name);
    return o?.status?.observedGeneration === generation ? o : undefined;
  };
}

function keys(objects: readonly { kind?: string; metadata?: { name?: string } }[]): string[] {
  return objects.map(objectKey).sort();
}

function desiredKeys(raw: unknown): string[] {
  const v = validateModelDeployment(raw);
  assert.ok(v.ok);
  return keys(buildDesired(v.md).filter((o) => o.kind !== "ServiceMonitor"));
}

describe("operator against the test API server", () => {
  let server: K8sApiServer;
  let kube: Kube;
  let op: RunningOperator | undefined;
  beforeEach(async () => {
    server = await startCluster();
    kube = new Kube(server.kubeConfig("llm"));
  });
  afterEach(async () => {
    await op?.stop();
    op = undefined;
    await server.close();
  });

  it("create - every object the deployment becomes exists, labelled and owned by it", async () => {
    op = startOperator(server);
    const created = await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("status of generation 1", observed(server, 1));
    const owned = ownedObjects(server, "llm", "nano");
    assert.deepEqual(keys(owned), desiredKeys(exampleDeployment()));
    for (const o of owned) {
      assert.equal(o.metadata.ownerReferences?.[0]?.uid, created.metadata.uid, `${objectKey(o)} is owned`);
      assert.equal(o.metadata.labels?.["app.kubernetes.io/managed-by"], "latentmesh-operator");
    }
    const sts = owned.filter((o) => o.kind === "StatefulSet");
    assert.equal(sts.length, 2);
    assert.equal((md(server)?.status as Status).phase, "Progressing");
  });

  it("spec change - groups 2 → 3 and a new image update the objects and duplicate none", async () => {
    op = startOperator(server);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("generation 1", observed(server, 1));
    const current = md(server);
    assert.ok(current);
    const spec = current.spec as { workers: { groups: number }; engine: { image: string } };
    await kube.replace({ ...current, spec: { ...spec, workers: { ...spec.workers, groups: 3 }, engine: { ...spec.engine, image: "example.com/worker:2" } } });
    await server.waitFor("generation 2", observed(server, 2));
    const owned = ownedObjects(server, "llm", "nano");
    const expected = desiredKeys(exampleDeployment("nano", "llm", { workers: { groups: 3, expertParallel: 4, gpusPerPod: 2 } }));
    assert.deepEqual(keys(owned), expected);
    const images = owned.filter((o) => o.kind === "StatefulSet").map((o) => (o.spec as { template: { spec: { containers: { image: string }[] } } }).template.spec.containers[0]?.image);
    assert.deepEqual(images, ["example.com/worker:2", "example.com/worker:2", "example.com/worker:2"]);
  });

  it("scale down - groups no longer wanted are pruned", async () => {
    op = startOperator(server);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("generation 1", observed(server, 1));
    await kube.scaleModelDeployment("llm", "nano", 1);
    await server.waitFor("generation 2", observed(server, 2));
    const groups = ownedObjects(server, "llm", "nano").filter((o) => o.kind === "StatefulSet" || (o.kind === "Service" && o.metadata.name.includes("-g")));
    assert.deepEqual(keys(groups), ["Service/nano-g0", "StatefulSet/nano-g0"]);
    assert.ok(server.store.list(server.resource("events"), "llm").items.some((e) => e.reason === "Pruned"));
  });

  it("delete - owned objects are garbage-collected and not recreated", async () => {
    op = startOperator(server);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("generation 1", observed(server, 1));
    await kube.delete({ apiVersion: "latentmesh.dev/v1alpha1", kind: "ModelDeployment", metadata: { name: "nano", namespace: "llm" } });
    const before = await reconcileCount(op);
    await eventually("a reconcile after the delete", async () => (await reconcileCount(op as RunningOperator)) > before);
    assert.deepEqual(ownedObjects(server, "llm", "nano"), []);
  });

  it("invalid spec - a Degraded condition and a Warning event, and no workload objects", async () => {
    await server.close();
    server = await startCluster({ celValidation: false });
    kube = new Kube(server.kubeConfig("llm"));
    op = startOperator(server);
    await kube.create(exampleDeployment("nano", "llm", { workers: { groups: 2, expertParallel: 3, gpusPerPod: 2 } }) as unknown as KubeObject);
    const o = await server.waitFor("InvalidSpec", () => {
      const s = md(server)?.status;
      return s?.conditions?.find((c) => c.type === "Degraded" && c.reason === "InvalidSpec") ? s : undefined;
    });
    assert.equal(o.phase, "Invalid");
    const events = server.store.list(server.resource("events"), "llm").items;
    assert.ok(events.some((e) => e.reason === "InvalidSpec" && e.type === "Warning" && /multiple of workers.gpusPerPod/.test(String(e.message))));
    assert.deepEqual(ownedObjects(server, "llm", "nano"), []);
  });

  it("a 409 in the middle of a reconcile is retried until the deployment converges", async () => {
    server.injectFault({ verb: "apply", plural: "statefulsets", status: 409 });
    server.injectFault({ verb: "patch", plural: "modeldeployments", subresource: "status", status: 409 });
    op = startOperator(server);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("generation 1", observed(server, 1));
    assert.equal(server.requests.filter((r) => r.status === 409).length, 2);
    assert.ok((await reconcileCount(op, "requeue")) >= 2);
    assert.deepEqual(keys(ownedObjects(server, "llm", "nano")), desiredKeys(exampleDeployment()));
  });

  it("operator restart - a second operator finds nothing to change", async () => {
    op = startOperator(server);
    await kube.create(exampleDeployment() as unknown as KubeObject);
    await server.waitFor("generation 1", observed(server, 1));
    await op.stop();
    const rv = server.store.resourceVersion;
    op = startOperator(server, { identity: "op-b" });
    await eventually("a reconcile by the new operator", async () => (await reconcileCount(op as RunningOperator)) >= 1);
    assert.equal(server.store.resourceVersion, rv, "no object changed");
    assert.ok(server.requests.some((r) => r.verb === "apply"), "it did apply (as no-ops)");
  });
});
