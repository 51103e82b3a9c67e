/**
 * Metadata shared by every object a ModelDeployment owns: common labels, selectors, the owner
 * reference, and the list of kinds the operator manages (what it applies and what it prunes).
 */
import { createHash } from "node:crypto";
import type { V1ObjectMeta, V1OwnerReference } from "@kubernetes/client-node";
import { API_VERSION, KIND, type ModelDeployment } from "../../contracts/model-deployment.js";
import { LABEL, LABEL_VALUES, type Component } from "../../contracts/model-deployment-wiring.js";

/** The field manager of every write the operator makes (server-side apply). */
export const FIELD_MANAGER = "latentmesh-operator";

/** A ModelDeployment after validation: metadata the builders rely on is present. */
export interface ValidDeployment {
  readonly name: string;
  readonly namespace: string;
  /** Absent only when rendering a file that was never stored (`latentmesh render`). */
  readonly uid: string | undefined;
  readonly spec: ModelDeployment["spec"];
}

/** One object the operator wants to exist, ready to be applied. */
export interface DesiredObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: V1ObjectMeta & { name: string; namespace?: string };
  readonly [field: string]: unknown;
}

/** Labels that select a deployment's objects of one component (stable across spec changes). */
export function selectorLabels(md: ValidDeployment, component: Component, group?: number): Record<string, string> {
  const labels: Record<string, string> = {
    [LABEL.name]: LABEL_VALUES.name,
    [LABEL.instance]: md.name,
    [LABEL.deployment]: md.name,
    [LABEL.component]: component,
  };
  if (group !== undefined) labels[LABEL.group] = String(group);
  return labels;
}

/** Selector of every object a deployment owns (used to list and prune). */
export function ownedSelector(name: string): string {
  return `${LABEL.deployment}=${name},${LABEL.managedBy}=${LABEL_VALUES.managedBy}`;
}

/** Label selector of all worker pods of a deployment (the scale subresource's selector). */
export function workerPodSelector(name: string): string {
  return `${LABEL.deployment}=${name},${LABEL.component}=worker`;
}

/** Every label an owned object carries. */
export function commonLabels(md: ValidDeployment, component: Component, group?: number): Record<string, string> {
  return {
    ...selectorLabels(md, component, group),
    [LABEL.partOf]: LABEL_VALUES.name,
    [LABEL.managedBy]: LABEL_VALUES.managedBy,
    [LABEL.model]: labelValue(md.spec.model.name),
  };
}

/** A string made fit for a label value (≤ 63 chars of [-A-Za-z0-9_.], alphanumeric at both ends). */
export function labelValue(s: string): string {
  return s.replace(/[^-A-Za-z0-9_.]/g, "_").slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "");
}

export function ownerReference(md: ValidDeployment): V1OwnerReference[] | undefined {
  if (md.uid === undefined) return undefined;
  return [{ apiVersion: API_VERSION, kind: KIND, name: md.name, uid: md.uid, controller: true, blockOwnerDeletion: true }];
}

/** metadata for an owned object. */
export function ownedMeta(md: ValidDeployment, name: string, component: Component, group?: number, annotations?: Record<string, string>): DesiredObject["metadata"] {
  const meta: DesiredObject["metadata"] = { name, namespace: md.namespace, labels: commonLabels(md, component, group) };
  const owners = ownerReference(md);
  if (owners) meta.ownerReferences = owners;
  if (annotations && Object.keys(annotations).length > 0) meta.annotations = annotations;
  return meta;
}

/** A short stable hash of a JSON-able value, for pod-template annotations that roll pods. */
export function contentHash(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex").slice(0, 16);
}

/** A kind the operator applies and prunes. */
export interface ManagedKind {
  readonly apiVersion: string;
  readonly kind: string;
  /** Only applied and pruned when the cluster serves it (e.g. ServiceMonitor needs prometheus-operator). */
  readonly optional?: boolean;
}

/** Every kind the operator may own, in apply order (dependencies first). */
export const MANAGED_KINDS: readonly ManagedKind[] = [
  { apiVersion: "v1", kind: "ServiceAccount" },
  { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role" },
  { apiVersion: "rbac.authorization.k8s.io/v1", kind: "RoleBinding" },
  { apiVersion: "v1", kind: "ConfigMap" },
  { apiVersion: "v1", kind: "Service" },
  { apiVersion: "apps/v1", kind: "StatefulSet" },
  { apiVersion: "apps/v1", kind: "Deployment" },
  { apiVersion: "policy/v1", kind: "PodDisruptionBudget" },
  { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy" },
  { apiVersion: "monitoring.coreos.com/v1", kind: "ServiceMonitor", optional: true },
];

/** Sorts objects into apply order (MANAGED_KINDS order, then name). */
export function inApplyOrder(objects: readonly DesiredObject[]): DesiredObject[] {
  const rank = (o: DesiredObject) => MANAGED_KINDS.findIndex((k) => k.kind === o.kind && k.apiVersion === o.apiVersion);
  return [...objects].sort((a, b) => rank(a) - rank(b) || a.metadata.name.localeCompare(b.metadata.name));
}
