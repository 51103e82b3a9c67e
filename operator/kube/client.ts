/**
 * The operator's one door to the Kubernetes API, over @kubernetes/client-node: plain wire-format
 * objects in and out, server-side apply with one field manager, status and scale subresources, and
 * failures as KubeError (status code + reason), the one type the reconciler maps to requeues and
 * conditions.
 */
import { ApiException, CustomObjectsApi, KubernetesObjectApi, PatchStrategy, setHeaderOptions, type KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from "../../contracts/model-deployment.js";
import { MANAGED_KINDS } from "../desired/meta.js";
import { useRawObjects } from "./raw-serializer.js";

/** A Kubernetes object in wire format. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
    finalizers?: string[];
    [field: string]: unknown;
  };
  [field: string]: unknown;
}

/** A failed API call: HTTP status (0 when the server was not reached) and the Status reason. */
export class KubeError extends Error {
  override readonly name = "KubeError";
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
  get conflict(): boolean {
    return this.status === 409;
  }
  get notFound(): boolean {
    return this.status === 404;
  }
}

function toKubeError(err: unknown, what: string): KubeError {
  if (err instanceof KubeError) return err;
  if (err instanceof ApiException) {
    let body: unknown = err.body;
    if (typeof body === "string") {
      try {
        body = JSON.parse(body);
      } catch {
        // not a Status
      }
    }
    const status = (typeof body === "object" && body !== null ? body : {}) as { reason?: string; message?: string };
    return new KubeError(err.code, status.reason ?? "Unknown", `${what}: ${err.code} ${status.message ?? String(body)}`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/Unrecognized API version and kind/.test(message)) return new KubeError(404, "NotFound", `${what}: ${message}`, { cause: err });
  return new KubeError(0, "Unreachable", `${what}: ${message}`, { cause: err });
}

/** The library's structural type for an object in wire format (timestamps stay strings). */
function wire(obj: KubeObject): KubernetesObject {
  return obj as unknown as KubernetesObject;
}

/** Kinds read and written as raw objects. */
const RAW_KINDS = [
  ...MANAGED_KINDS,
  { apiVersion: "v1", kind: "Pod" },
  { apiVersion: "v1", kind: "Event" },
  { apiVersion: "coordination.k8s.io/v1", kind: "Lease" },
  { apiVersion: API_VERSION, kind: KIND },
];

export class Kube {
  private readonly objects: KubernetesObjectApi;
  private readonly custom: CustomObjectsApi;

  constructor(readonly kubeConfig: KubeConfig) {
    useRawObjects(RAW_KINDS);
    this.objects = KubernetesObjectApi.makeApiClient(kubeConfig);
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toKubeError(err, what);
    }
  }

  /** The object, or undefined when it does not exist. */
  async get(apiVersion: string, kind: string, namespace: string | undefined, name: string): Promise<KubeObject | undefined> {
    try {
      return (await this.call(`get ${kind} ${name}`, () => this.objects.read({ apiVersion, kind, metadata: { name, ...(namespace ? { namespace } : {}) } }))) as KubeObject;
    } catch (err) {
      if (err instanceof KubeError && err.notFound) return undefined;
      throw err;
    }
  }

  async list(apiVersion: string, kind: string, namespace: string | undefined, labelSelector?: string): Promise<{ items: KubeObject[]; resourceVersion: string }> {
    const list = await this.call(`list ${kind}`, () => this.objects.list(apiVersion, kind, namespace, undefined, undefined, undefined, undefined, labelSelector));
    return { items: (list.items ?? []) as KubeObject[], resourceVersion: list.metadata?.resourceVersion ?? "" };
  }

  /** Server-side apply (force: this manager owns the fields it sets). */
  async apply(obj: KubeObject, fieldManager: string): Promise<KubeObject> {
    return (await this.call(`apply ${obj.kind} ${obj.metadata.name}`, () => this.objects.patch(wire(obj), undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply))) as KubeObject;
  }

  async create(obj: KubeObject, fieldManager?: string): Promise<KubeObject> {
    return (await this.call(`create ${obj.kind} ${obj.metadata.name}`, () => this.objects.create(wire(obj), undefined, undefined, fieldManager))) as KubeObject;
  }

  /** PUT with the object's resourceVersion: a 409 KubeError when it is stale. */
  async replace(obj: KubeObject, fieldManager?: string): Promise<KubeObject> {
    return (await this.call(`update ${obj.kind} ${obj.metadata.name}`, () => this.objects.replace(wire(obj), undefined, undefined, fieldManager))) as KubeObject;
  }

  /** Deletes; a missing object is not an error. */
  async delete(obj: Pick<KubeObject, "apiVersion" | "kind"> & { metadata: { name: string; namespace?: string } }, propagationPolicy = "Background"): Promise<void> {
    try {
      await this.call(`delete ${obj.kind} ${obj.metadata.name}`, () => this.objects.delete(wire(obj as KubeObject), undefined, undefined, undefined, undefined, propagationPolicy));
    } catch (err) {
      if (err instanceof KubeError && err.notFound) return;
      throw err;
    }
  }

  /** Whether the server serves a kind (discovery); optional kinds are skipped when it does not. */
  async serves(apiVersion: string, kind: string, namespace = "default"): Promise<boolean> {
    try {
      await this.objects.list(apiVersion, kind, namespace, undefined, undefined, undefined, undefined, undefined, 1);
      return true;
    } catch (err) {
      const e = toKubeError(err, "discovery");
      // discovery resolved the kind (the list itself may be forbidden in that namespace): served
      return !e.notFound;
    }
  }

  /** Merge-patches a ModelDeployment's status; `resourceVersion` makes it fail with 409 if stale. */
  async patchModelDeploymentStatus(namespace: string, name: string, resourceVersion: string, status: unknown): Promise<KubeObject> {
    const body = { metadata: { resourceVersion }, status };
    return (await this.call(`update status of ${KIND} ${name}`, () =>
      this.custom.patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body }, setHeaderOptions("Content-Type", PatchStrategy.MergePatch)),
    )) as KubeObject;
  }

  /** Sets spec.workers.groups through the scale subresource, exactly as HPA/KEDA would. */
  async scaleModelDeployment(namespace: string, name: string, groups: number): Promise<void> {
    await this.call(`scale ${KIND} ${name}`, () =>
      this.custom.patchNamespacedCustomObjectScale({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body: { spec: { replicas: groups } } }, setHeaderOptions("Content-Type", PatchStrategy.MergePatch)),
    );
  }
}
