/**
 * The object store behind the test API server: resourceVersions, generations, optimistic
 * concurrency (409), merge patch, a server-side-apply emulation, watch history, finalizers and
 * ownerReference garbage collection.
 *
 * Server-side apply is emulated per field manager: the manager's last applied configuration is
 * remembered, fields it applied before and omits now are removed, the rest is merged in (maps
 * recursively, lists atomically). With the one manager the operator uses this matches the real
 * semantics; multi-manager conflict detection is not modelled (writes behave as `force: true`).
 */
import { randomUUID } from "node:crypto";
import { matchesFields, matchesLabels, parseLabelSelector } from "./k8s-selectors.js";
import type { ResourceType } from "./k8s-resources.js";

export type Obj = Record<string, unknown> & { metadata: Meta };
export type Meta = Record<string, unknown> & {
  name: string;
  namespace?: string;
  uid: string;
  resourceVersion: string;
  generation?: number;
  labels?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: { uid: string; kind: string; name: string }[];
  deletionTimestamp?: string;
};

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";
export interface WatchEvent {
  readonly rv: number;
  readonly type: WatchEventType;
  readonly resource: ResourceType;
  readonly object: Obj;
}

/** An error the server answers with a Kubernetes Status. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly causes: string[] = [],
  ) {
    super(message);
  }
}

/** Validates (and defaults/prunes) an object of a resource before it is stored; throws ApiError 422. */
export type Admit = (resource: ResourceType, obj: Obj) => Obj;

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlain(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isPlain(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Removes from `live` what `prev` (a manager's previous apply) set and `next` no longer sets. */
function dropReleased(live: unknown, prev: unknown, next: unknown): unknown {
  if (!isPlain(live) || !isPlain(prev)) return live;
  const out: Record<string, unknown> = { ...live };
  const nextObj = isPlain(next) ? next : {};
  for (const key of Object.keys(prev)) {
    if (!(key in nextObj)) delete out[key];
    else if (isPlain(prev[key]) && isPlain(nextObj[key])) out[key] = dropReleased(out[key], prev[key], nextObj[key]);
  }
  return out;
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlain(over) || !isPlain(base)) return structuredClone(over);
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(out[k], v);
  return out;
}

function withoutVolatile(o: Obj): unknown {
  const { resourceVersion: _rv, managedFields: _mf, ...meta } = o.metadata;
  return { ...o, metadata: meta };
}

function specPart(o: Obj): string {
  const { metadata: _m, status: _s, ...rest } = o;
  return JSON.stringify(rest);
}

function key(ns: string | undefined, name: string): string {
  return `${ns ?? ""}/${name}`;
}

export class K8sStore {
  private rv = 1;
  private readonly objects = new Map<ResourceType, Map<string, Obj>>();
  private readonly applied = new Map<string, unknown>();
  private readonly history: WatchEvent[] = [];
  private readonly listeners = new Set<(e: WatchEvent) => void>();

  constructor(
    readonly resources: ResourceType[],
    private readonly admit: Admit,
  ) {}

  get resourceVersion(): string {
    return String(this.rv);
  }

  private bucket(r: ResourceType): Map<string, Obj> {
    let b = this.objects.get(r);
    if (!b) this.objects.set(r, (b = new Map()));
    return b;
  }

  private emit(type: WatchEventType, resource: ResourceType, object: Obj) {
    const e: WatchEvent = { rv: Number(object.metadata.resourceVersion), type, resource, object: structuredClone(object) };
    this.history.push(e);
    for (const l of this.listeners) l(e);
  }

  list(r: ResourceType, ns?: string, labelSelector?: string, fieldSelector?: string): { items: Obj[]; resourceVersion: string } {
    const reqs = labelSelector ? parseLabelSelector(labelSelector) : [];
    const items = [...this.bucket(r).values()]
      .filter((o) => (ns === undefined || o.metadata.namespace === ns) && matchesLabels(reqs, o.metadata.labels) && matchesFields(fieldSelector, o))
      .sort((a, b) => key(a.metadata.namespace, a.metadata.name).localeCompare(key(b.metadata.namespace, b.metadata.name)));
    return { items: structuredClone(items), resourceVersion: this.resourceVersion };
  }

  get(r: ResourceType, ns: string | undefined, name: string): Obj {
    const o = this.bucket(r).get(key(ns, name));
    if (!o) throw new ApiError(404, "NotFound", `${r.plural}${r.group ? `.${r.group}` : ""} "${name}" not found`);
    return structuredClone(o);
  }

  tryGet(r: ResourceType, ns: string | undefined, name: string): Obj | undefined {
    const o = this.bucket(r).get(key(ns, name));
    return o ? structuredClone(o) : undefined;
  }

  create(r: ResourceType, ns: string | undefined, input: Record<string, unknown>): Obj {
    const meta = { ...((input.metadata as Record<string, unknown> | undefined) ?? {}) };
    if (!meta.name && typeof meta.generateName === "string") meta.name = `${meta.generateName}${randomUUID().slice(0, 5)}`;
    if (typeof meta.name !== "string" || meta.name === "") throw new ApiError(422, "Invalid", "metadata.name: Required value", ["metadata.name: Required value"]);
    if (this.bucket(r).has(key(ns, meta.name))) throw new ApiError(409, "AlreadyExists", `${r.plural} "${meta.name}" already exists`);
    const obj = { ...input, metadata: { ...meta, namespace: r.namespaced ? ns : undefined } } as Obj;
    if (!r.namespaced) delete obj.metadata.namespace;
    if (r.statusSubresource && r.group !== "" && !r.group.endsWith(".k8s.io")) delete obj.status;
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = new Date().toISOString();
    obj.metadata.generation = 1;
    delete obj.metadata.deletionTimestamp;
    const admitted = this.admit(r, obj);
    admitted.metadata.resourceVersion = String(++this.rv);
    this.bucket(r).set(key(ns, admitted.metadata.name), admitted);
    this.emit("ADDED", r, admitted);
    return structuredClone(admitted);
  }

  /**
   * Stores `next` as the new state of an existing object, keeping what the subresource may not
   * change. A no-op write keeps the resourceVersion and emits nothing (like the API server).
   */
  private commit(r: ResourceType, prev: Obj, next: Obj, subresource: "" | "status"): Obj {
    let candidate: Obj = structuredClone(next);
    // identity fields are the server's
    candidate.metadata = { ...candidate.metadata, name: prev.metadata.name, uid: prev.metadata.uid, creationTimestamp: prev.metadata.creationTimestamp, generation: prev.metadata.generation };
    if (prev.metadata.namespace !== undefined) candidate.metadata.namespace = prev.metadata.namespace;
    if (prev.metadata.deletionTimestamp) candidate.metadata.deletionTimestamp = prev.metadata.deletionTimestamp;
    if (subresource === "status") candidate = { ...prev, status: candidate.status } as Obj;
    else if (r.statusSubresource) {
      if (prev.status === undefined) delete candidate.status;
      else candidate.status = prev.status;
    }
    candidate = this.admit(r, candidate);
    if (specPart(candidate) !== specPart(prev)) candidate.metadata.generation = (prev.metadata.generation ?? 0) + 1;
    if (JSON.stringify(withoutVolatile(candidate)) === JSON.stringify(withoutVolatile(prev))) return structuredClone(prev);
    if (candidate.metadata.deletionTimestamp && (candidate.metadata.finalizers ?? []).length === 0) {
      candidate.metadata.resourceVersion = String(++this.rv);
      return this.remove(r, candidate);
    }
    candidate.metadata.resourceVersion = String(++this.rv);
    this.bucket(r).set(key(prev.metadata.namespace, prev.metadata.name), candidate);
    this.emit("MODIFIED", r, candidate);
    return structuredClone(candidate);
  }

  private checkVersion(r: ResourceType, prev: Obj, given: unknown) {
    if (given !== undefined && given !== "" && given !== prev.metadata.resourceVersion) {
      throw new ApiError(409, "Conflict", `Operation cannot be fulfilled on ${r.plural} "${prev.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
  }

  /** PUT: replaces the object; a stale metadata.resourceVersion is a 409. */
  update(r: ResourceType, ns: string | undefined, name: string, input: Obj, subresource: "" | "status" = ""): Obj {
    const prev = this.get(r, ns, name);
    this.checkVersion(r, prev, input.metadata?.resourceVersion);
    return this.commit(r, prev, input, subresource);
  }

  /** PATCH application/merge-patch+json (also used for strategic merge patch). */
  patch(r: ResourceType, ns: string | undefined, name: string, body: Record<string, unknown>, subresource: "" | "status" = ""): Obj {
    const prev = this.get(r, ns, name);
    this.checkVersion(r, prev, (body.metadata as Record<string, unknown> | undefined)?.resourceVersion);
    return this.commit(r, prev, mergePatch(prev, body) as Obj, subresource);
  }

  /** PATCH application/apply-patch+yaml, creating the object when missing. */
  apply(r: ResourceType, ns: string | undefined, name: string, config: Record<string, unknown>, manager: string, subresource: "" | "status" = ""): Obj {
    const prev = this.tryGet(r, ns, name);
    if (!prev) {
      const created = this.create(r, ns, config);
      this.applied.set(`${created.metadata.uid}/${manager}/${subresource}`, config);
      return created;
    }
    const appliedKey = `${prev.metadata.uid}/${manager}/${subresource}`;
    const base = dropReleased(prev, this.applied.get(appliedKey) ?? {}, config);
    const next = deepMerge(base, config) as Obj;
    next.metadata.resourceVersion = prev.metadata.resourceVersion;
    const out = this.commit(r, prev, next, subresource);
    this.applied.set(appliedKey, config);
    return out;
  }

  /** DELETE: finalizers defer it; dependents are garbage-collected unless orphaned. */
  delete(r: ResourceType, ns: string | undefined, name: string, propagation = "Background"): Obj {
    const prev = this.get(r, ns, name);
    if ((prev.metadata.finalizers ?? []).length > 0) {
      if (prev.metadata.deletionTimestamp) return prev;
      prev.metadata.deletionTimestamp = new Date().toISOString();
      prev.metadata.resourceVersion = String(++this.rv);
      this.bucket(r).set(key(ns, name), prev);
      this.emit("MODIFIED", r, prev);
      return structuredClone(prev);
    }
    prev.metadata.resourceVersion = String(++this.rv);
    return this.remove(r, prev, propagation);
  }

  private remove(r: ResourceType, obj: Obj, propagation = "Background"): Obj {
    this.bucket(r).delete(key(obj.metadata.namespace, obj.metadata.name));
    this.emit("DELETED", r, obj);
    this.collectGarbage(obj.metadata.uid, propagation === "Orphan");
    return structuredClone(obj);
  }

  /** Deletes (or orphans) every object whose owners are all gone once `uid` is. */
  private collectGarbage(uid: string, orphan: boolean) {
    const live = new Set<string>();
    for (const b of this.objects.values()) for (const o of b.values()) live.add(o.metadata.uid);
    for (const r of this.resources) {
      for (const o of [...this.bucket(r).values()]) {
        const owners = o.metadata.ownerReferences ?? [];
        if (!owners.some((ref) => ref.uid === uid)) continue;
        if (orphan) {
          this.commit(r, o, { ...o, metadata: { ...o.metadata, ownerReferences: owners.filter((ref) => ref.uid !== uid) } }, "");
        } else if (owners.every((ref) => !live.has(ref.uid))) {
          this.delete(r, o.metadata.namespace, o.metadata.name);
        }
      }
    }
  }

  /** Events after `fromRv` (all current objects as ADDED when fromRv is empty or "0"). */
  eventsSince(r: ResourceType, fromRv: string | undefined): WatchEvent[] {
    if (!fromRv || fromRv === "0") {
      return [...this.bucket(r).values()].map((o) => ({ rv: Number(o.metadata.resourceVersion), type: "ADDED" as const, resource: r, object: structuredClone(o) }));
    }
    const since = Number(fromRv);
    if (!Number.isFinite(since)) throw new ApiError(400, "BadRequest", `invalid resourceVersion ${fromRv}`);
    if (since < this.compactedAt) throw new ApiError(410, "Expired", `too old resource version: ${since} (${this.compactedAt})`);
    if (since > this.rv) throw new ApiError(504, "Timeout", `Too large resource version: ${since}, current: ${this.rv}`);
    return this.history.filter((e) => e.resource === r && e.rv > since);
  }

  subscribe(listener: (e: WatchEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Drops the watch history up to now: watches from an older resourceVersion get 410 Gone. */
  compact(): void {
    this.history.length = 0;
    this.compactedAt = this.rv;
  }
  compactedAt = 0;
}
