/** Fixtures for operator tests: a test API server serving the generated CRD, and small builders. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { K8sApiServer, type K8sApiServerOptions } from "./k8s-api-server.js";
import { REPO_ROOT } from "./paths.js";

export const CRD_PATH = join(REPO_ROOT, "crds", "modeldeployments.latentmesh.dev.yaml");

export function loadCrd(): Record<string, unknown> {
  return parse(readFileSync(CRD_PATH, "utf8")) as Record<string, unknown>;
}

/** A test API server that serves ModelDeployments as the generated CRD describes them. */
export function startCluster(options: Omit<K8sApiServerOptions, "crds"> = {}): Promise<K8sApiServer> {
  return K8sApiServer.start({ ...options, crds: [loadCrd()] });
}

/** The example ModelDeployment, with overrides merged into its spec. */
export function exampleDeployment(name = "nano", namespace = "llm", spec: Record<string, unknown> = {}) {
  return {
    apiVersion: "latentmesh.dev/v1alpha1",
    kind: "ModelDeployment",
    metadata: { name, namespace },
    spec: {
      model: { name: "nemotron-3-nano", source: { uri: "hf://nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16" } },
      workers: { groups: 2, expertParallel: 4, gpusPerPod: 2 },
      router: { replicas: 2 },
      speculative: { mtp: { enabled: true, maxDraftTokens: 3 } },
      autoscaling: { enabled: true, minGroups: 1, maxGroups: 4 },
      ...spec,
    },
  };
}
