import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Watch } from "@kubernetes/client-node";
import { Kube, KubeError, type KubeObject } from "../../operator/kube/client.js";
import type { K8sApiServer } from "../support/k8s-api-server.js";
import { exampleDeployment, startCluster } from "../support/k8s-cluster.js";

function configMap(name: string, data: Record<string, string>, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "t", labels }, data };
}

describe("test API server, through @kubernetes/client-node", () => {
  let server: K8sApiServer;
  let kube: Kube;
  before(async () => {
    server = await startCluster();
    kube = new Kube(server.kubeConfig("t"));
  });
  after(() => server.close());

  it("creates, gets and lists objects by label selector", async () => {
    await kube.create(configMap("a", { k: "1" }, { app: "x" }));
    await kube.create(configMap("b", { k: "2" }, { app: "y" }));
    assert.equal((await kube.get("v1", "ConfigMap", "t", "a"))?.data && "ok", "ok");
    const { items } = await kube.list("v1", "ConfigMap", "t", "app=x");
    assert.deepEqual(items.map((o) => o.metadata.name), ["a"]);
    assert.equal(await kube.get("v1", "ConfigMap", "t", "missing"), undefined);
  });

  it("answers a stale update with 409 Conflict", async () => {
    const a = await kube.get("v1", "ConfigMap", "t", "a");
    assert.ok(a);
    await kube.replace({ ...a, data: { k: "new" } });
    await assert.rejects(kube.replace({ ...a, data: { k: "stale" } }), (e: unknown) => e instanceof KubeError && e.conflict);
  });

  it("server-side apply creates, updates, removes released fields, and keeps the resourceVersion on a no-op", async () => {
    const first = await kube.apply(configMap("applied", { a: "1", b: "2" }), "mgr");
    const same = await kube.apply(configMap("applied", { a: "1", b: "2" }), "mgr");
    assert.equal(same.metadata.resourceVersion, first.metadata.resourceVersion);
    const next = await kube.apply(configMap("applied", { a: "1" }), "mgr");
    assert.deepEqual(next.data, { a: "1" });
  });

  it("rejects an invalid ModelDeployment with 422 and the schema's message", async () => {
    const bad = exampleDeployment("bad", "t", { workers: { groups: -1 } }) as unknown as KubeObject;
    await assert.rejects(kube.create(bad), (e: unknown) => e instanceof KubeError && e.status === 422 && /spec\.workers\.groups/.test(e.message));
  });

  it("refuses an engine dtype the engine does not implement (fp8) with 422 naming the field", async () => {
    const bad = exampleDeployment("fp8", "t", { engine: { dtype: "fp8" } }) as unknown as KubeObject;
    await assert.rejects(kube.create(bad), (e: unknown) => e instanceof KubeError && e.status === 422 && /spec\.engine\.dtype/.test(e.message));
  });

  it("enforces the CRD's CEL rules (expertParallel a multiple of gpusPerPod)", async () => {
    const bad = exampleDeployment("cel", "t", { workers: { expertParallel: 3, gpusPerPod: 2 } }) as unknown as KubeObject;
    await assert.rejects(kube.create(bad), (e: unknown) => e instanceof KubeError && e.status === 422 && /multiple of workers.gpusPerPod/.test(e.message));
  });

  it("accepts the issue's example as is and fills in the schema's defaults", async () => {
    const md = await kube.create(exampleDeployment("nano", "t") as unknown as KubeObject);
    const spec = md.spec as { engine: { backend: string }; workers: { rollout: { maxSurge: number } } };
    assert.equal(spec.engine.backend, "cuda");
    assert.equal(spec.workers.rollout.maxSurge, 0);
    assert.equal(md.metadata.generation, 1);
  });

  it("writes status only through /status, and spec only through the main resource", async () => {
    const md = await kube.get("latentmesh.dev/v1alpha1", "ModelDeployment", "t", "nano");
    assert.ok(md);
    const after = await kube.patchModelDeploymentStatus("t", "nano", md.metadata.resourceVersion ?? "", { phase: "Pending" });
    assert.equal((after.status as { phase: string }).phase, "Pending");
    assert.equal(after.metadata.generation, 1, "a status write does not bump the generation");
    await assert.rejects(kube.patchModelDeploymentStatus("t", "nano", md.metadata.resourceVersion ?? "", { phase: "Ready" }), (e: unknown) => e instanceof KubeError && e.conflict);
  });

  it("scales spec.workers.groups through the scale subresource", async () => {
    await kube.scaleModelDeployment("t", "nano", 3);
    const md = await kube.get("latentmesh.dev/v1alpha1", "ModelDeployment", "t", "nano");
    assert.equal((md?.spec as { workers: { groups: number } }).workers.groups, 3);
    assert.equal(md?.metadata.generation, 2);
  });

  it("garbage-collects dependents when their owner is deleted", async () => {
    const md = await kube.get("latentmesh.dev/v1alpha1", "ModelDeployment", "t", "nano");
    const owned = configMap("owned", {});
    owned.metadata.ownerReferences = [{ apiVersion: "latentmesh.dev/v1alpha1", kind: "ModelDeployment", name: "nano", uid: md?.metadata.uid ?? "", controller: true }];
    await kube.create(owned);
    await kube.delete({ apiVersion: "latentmesh.dev/v1alpha1", kind: "ModelDeployment", metadata: { name: "nano", namespace: "t" } });
    assert.equal(await kube.get("v1", "ConfigMap", "t", "owned"), undefined);
  });

  it("streams watch events from a resourceVersion", async () => {
    const { resourceVersion } = await kube.list("v1", "ConfigMap", "t");
    const seen: string[] = [];
    let resolveSeen: () => void = () => {};
    const done = new Promise<void>((r) => (resolveSeen = r));
    const ctl = await new Watch(server.kubeConfig("t")).watch(
      "/api/v1/namespaces/t/configmaps",
      { resourceVersion, labelSelector: "app=w" },
      (type, obj: KubeObject) => {
        seen.push(`${type} ${obj.metadata.name}`);
        if (seen.length === 2) resolveSeen();
      },
      () => {},
    );
    await kube.create(configMap("w1", {}, { app: "w" }));
    await kube.create(configMap("ignored", {}, { app: "other" }));
    await kube.delete({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "w1", namespace: "t" } });
    await done;
    ctl.abort();
    assert.deepEqual(seen, ["ADDED w1", "DELETED w1"]);
  });
});
