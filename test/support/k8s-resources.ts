/** The resource types the test API server serves, and its discovery documents. */

export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
  /** Writes to the main resource ignore .status; /status writes only .status. */
  readonly statusSubresource: boolean;
  /** specReplicasPath etc. of a scale subresource (custom resources). */
  readonly scale?: { readonly specReplicasPath: string; readonly statusReplicasPath: string; readonly labelSelectorPath: string };
}

function rt(apiVersion: string, kind: string, plural: string, statusSubresource: boolean, namespaced = true): ResourceType {
  const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/") as [string, string]) : ["", apiVersion];
  return { group, version, kind, plural, namespaced, statusSubresource };
}

/** Built-in kinds the operator and its tests use. */
export const BUILTIN_RESOURCES: readonly ResourceType[] = [
  rt("v1", "Namespace", "namespaces", true, false),
  rt("v1", "Pod", "pods", true),
  rt("v1", "Service", "services", true),
  rt("v1", "ConfigMap", "configmaps", false),
  rt("v1", "Secret", "secrets", false),
  rt("v1", "ServiceAccount", "serviceaccounts", false),
  rt("v1", "Event", "events", false),
  rt("apps/v1", "Deployment", "deployments", true),
  rt("apps/v1", "StatefulSet", "statefulsets", true),
  rt("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
  rt("rbac.authorization.k8s.io/v1", "Role", "roles", false),
  rt("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", false),
  rt("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", false),
  rt("coordination.k8s.io/v1", "Lease", "leases", false),
  rt("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", true, false),
];

/** prometheus-operator's ServiceMonitor, served only when a test asks for it. */
export const SERVICE_MONITOR: ResourceType = rt("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", false);

export function groupVersion(r: ResourceType): string {
  return r.group === "" ? r.version : `${r.group}/${r.version}`;
}

/** GET /api/v1 or /apis/{group}/{version}: an APIResourceList. */
export function discoveryDocument(resources: readonly ResourceType[], gv: string) {
  const list = resources.filter((r) => groupVersion(r) === gv);
  if (list.length === 0) return undefined;
  const verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: gv,
    resources: list.flatMap((r) => [
      { name: r.plural, singularName: r.kind.toLowerCase(), namespaced: r.namespaced, kind: r.kind, verbs },
      ...(r.statusSubresource ? [{ name: `${r.plural}/status`, singularName: "", namespaced: r.namespaced, kind: r.kind, verbs: ["get", "patch", "update"] }] : []),
      ...(r.scale ? [{ name: `${r.plural}/scale`, singularName: "", namespaced: r.namespaced, group: "autoscaling", version: "v1", kind: "Scale", verbs: ["get", "patch", "update"] }] : []),
    ]),
  };
}
