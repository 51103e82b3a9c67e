import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Kube, type KubeObject } from "../../operator/kube/client.js";
import type { K8sApiServer } from "../support/k8s-api-server.js";
import { exampleDeployment, startCluster } from "../support/k8s-cluster.js";
import { CLI } from "../support/paths.js";

describe("bin/latentmesh operator", () => {
  let server: K8sApiServer;
  before(async () => {
    server = await startCluster();
  });
  after(() => server.close());

  it("reconciles through a kubeconfig, holds the lease, and exits 0 on SIGTERM", async () => {
    const kubeconfig = join(mkdtempSync(join(tmpdir(), "lm-op-")), "config");
    writeFileSync(kubeconfig, server.kubeConfig().exportConfig());
    const child = spawn(process.execPath, [CLI, "operator", "--kubeconfig", kubeconfig, "--metrics-port", "0", "--lease-namespace", "ops", "--identity", "cli", "--retry-period-s", "0.1"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      await new Kube(server.kubeConfig("llm")).create(exampleDeployment() as unknown as KubeObject);
      await server.waitFor("status from the CLI operator", () => (server.store.tryGet(server.resource("modeldeployments"), "llm", "nano")?.status as { observedGeneration?: number } | undefined)?.observedGeneration === 1, 20_000);
      const lease = server.store.get(server.resource("leases"), "ops", "latentmesh-operator") as unknown as { spec: { holderIdentity: string } };
      assert.equal(lease.spec.holderIdentity, "cli");
    } finally {
      child.kill("SIGTERM");
    }
    assert.equal(await exited, 0, stderr);
    const released = server.store.get(server.resource("leases"), "ops", "latentmesh-operator") as unknown as { spec: { holderIdentity: string } };
    assert.equal(released.spec.holderIdentity, "", "the lease is released on shutdown");
  });
});
