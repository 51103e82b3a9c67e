/**
 * Policies around the workloads (pure): disruption budgets, the worker ServiceAccount, the optional
 * NetworkPolicy and the optional ServiceMonitor.
 */
import type { V1PodDisruptionBudget, V1ServiceAccount } from "@kubernetes/client-node";
import { LABEL, LABEL_VALUES, names } from "../../contracts/model-deployment-wiring.js";
import { ownedMeta, type DesiredObject, type ValidDeployment } from "./meta.js";
import { podsPerGroup, rankMetricsPorts } from "./worker-group.js";

/**
 * Worker disruptions are budgeted in whole groups: losing one rank stops its group, so the budget
 * allows `rollout.maxUnavailable` groups' worth of pods. Pods of a group that is already broken may
 * always be evicted (unhealthyPodEvictionPolicy), so a broken group never blocks a node drain.
 */
export function buildWorkerPdb(md: ValidDeployment): DesiredObject & V1PodDisruptionBudget {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: ownedMeta(md, `${md.name}-workers`, "worker"),
    spec: {
      maxUnavailable: Math.max(1, md.spec.workers.rollout.maxUnavailable) * podsPerGroup(md),
      selector: { matchLabels: { [LABEL.deployment]: md.name, [LABEL.component]: "worker" } },
      unhealthyPodEvictionPolicy: "AlwaysAllow",
    },
  };
}

/** Keeps one router serving through voluntary disruptions; only when there are two or more. */
export function buildRouterPdb(md: ValidDeployment): (DesiredObject & V1PodDisruptionBudget) | undefined {
  if (md.spec.router.replicas < 2) return undefined;
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: ownedMeta(md, names.router(md.name), "router"),
    spec: { maxUnavailable: 1, selector: { matchLabels: { [LABEL.deployment]: md.name, [LABEL.component]: "router" } } },
  };
}

/** Workers need no API access: their ServiceAccount exists so no token of another is mounted. */
export function buildWorkerAccount(md: ValidDeployment): DesiredObject & V1ServiceAccount {
  return { apiVersion: "v1", kind: "ServiceAccount", metadata: ownedMeta(md, names.workerAccount(md.name), "worker"), automountServiceAccountToken: false };
}

/**
 * Worker pods accept traffic only from their deployment's pods, plus metrics scrapes. (Typed as a
 * plain object: the client library's model names the wire field `from` as `_from`.)
 */
export function buildNetworkPolicy(md: ValidDeployment): DesiredObject | undefined {
  if (!md.spec.networkPolicy.enabled) return undefined;
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: ownedMeta(md, names.networkPolicy(md.name), "worker"),
    spec: {
      podSelector: { matchLabels: { [LABEL.deployment]: md.name, [LABEL.component]: "worker" } },
      policyTypes: ["Ingress"],
      ingress: [
        { from: [{ podSelector: { matchLabels: { [LABEL.deployment]: md.name, [LABEL.name]: LABEL_VALUES.name } } }] },
        // metrics scrapes of every rank process of a pod
        { ports: rankMetricsPorts(md).map(({ port }) => ({ port, protocol: "TCP" })) },
      ],
    },
  };
}

/** Scrapes every worker group's metrics port and the router's /metrics. */
export function buildServiceMonitor(md: ValidDeployment): DesiredObject | undefined {
  const sm = md.spec.observability.serviceMonitor;
  if (!sm.enabled) return undefined;
  const meta = ownedMeta(md, names.serviceMonitor(md.name), "router");
  if (sm.labels) meta.labels = { ...meta.labels, ...sm.labels };
  return {
    apiVersion: "monitoring.coreos.com/v1",
    kind: "ServiceMonitor",
    metadata: meta,
    spec: {
      selector: { matchLabels: { [LABEL.deployment]: md.name, [LABEL.managedBy]: LABEL_VALUES.managedBy } },
      namespaceSelector: { matchNames: [md.namespace] },
      endpoints: [
        ...rankMetricsPorts(md).map(({ name }) => ({ port: name, path: "/metrics", interval: sm.interval })),
        { port: "http", path: "/metrics", interval: sm.interval },
      ],
    },
  };
}
