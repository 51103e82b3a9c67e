/**
 * A Kubernetes API server for tests, over real HTTP, speaking enough of the REST and watch protocol
 * for @kubernetes/client-node and the operator: discovery, get/list/watch (label and field
 * selectors, resourceVersion), create (generateName), update with optimistic concurrency (409),
 * merge and apply patches, delete with finalizers and ownerReference garbage collection, the status
 * and scale subresources, and validation of custom resources against their CRD's structural schema
 * (defaulting, pruning, CEL rules) answered with 422 like the real server.
 *
 * Not modelled: authn/authz (any bearer token is accepted), admission webhooks, controllers (no
 * pods appear for a StatefulSet: tests create them), protobuf, pagination (limit/continue ignored).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { parse as parseYaml } from "yaml";
import { applyDefaults, prune, validateSchema, type Schema } from "./k8s-openapi.js";
import { BUILTIN_RESOURCES, discoveryDocument, groupVersion, SERVICE_MONITOR, type ResourceType } from "./k8s-resources.js";
import { matchesLabels, parseLabelSelector } from "./k8s-selectors.js";
import { ApiError, K8sStore, type Obj, type WatchEvent } from "./k8s-store.js";

export interface K8sApiServerOptions {
  /** CustomResourceDefinition objects to serve (e.g. parsed from crds/). */
  readonly crds?: readonly Record<string, unknown>[];
  /** Evaluate CEL x-kubernetes-validations (default true; false mimics a server without CEL). */
  readonly celValidation?: boolean;
  /** Serve monitoring.coreos.com/v1 ServiceMonitor (default false: no prometheus-operator). */
  readonly serviceMonitors?: boolean;
}

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "apply" | "delete";

/** One answered request, for assertions. */
export interface RequestRecord {
  readonly verb: Verb;
  readonly plural: string;
  readonly subresource: string;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly status: number;
  readonly fieldManager: string | undefined;
}

/** Fails matching requests with `status` (once, or `times` times) before they reach the store. */
export interface Fault {
  readonly verb: Verb;
  readonly plural: string;
  readonly subresource?: string;
  readonly status: number;
  times?: number;
}

interface Route {
  readonly resource: ResourceType;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly subresource: string;
}

function getPath(obj: unknown, path: string): unknown {
  return path.split(".").filter(Boolean).reduce<unknown>((o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), obj);
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split(".").filter(Boolean);
  let cur = obj;
  keys.slice(0, -1).forEach((k) => {
    if (typeof cur[k] !== "object" || cur[k] === null) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  });
  cur[keys[keys.length - 1] as string] = value;
}

function resourceFromCrd(crd: Record<string, unknown>): { resource: ResourceType; schema: Schema } {
  const spec = crd.spec as Record<string, unknown>;
  const names = spec.names as Record<string, string>;
  const version = (spec.versions as Record<string, unknown>[])[0] as Record<string, unknown>;
  const sub = (version.subresources ?? {}) as Record<string, unknown>;
  const resource: ResourceType = {
    group: spec.group as string,
    version: version.name as string,
    kind: names.kind as string,
    plural: names.plural as string,
    namespaced: spec.scope === "Namespaced",
    statusSubresource: sub.status !== undefined,
    ...(sub.scale ? { scale: sub.scale as ResourceType["scale"] & object } : {}),
  };
  return { resource, schema: (version.schema as Record<string, Schema>).openAPIV3Schema as Schema };
}

export class K8sApiServer {
  readonly store: K8sStore;
  readonly requests: RequestRecord[] = [];
  private readonly faults: Fault[] = [];
  private readonly schemas = new Map<ResourceType, Schema>();
  private readonly watches = new Set<ServerResponse>();
  private server: Server | undefined;
  private port = 0;

  private constructor(private readonly options: K8sApiServerOptions) {
    const resources = [...BUILTIN_RESOURCES, ...(options.serviceMonitors ? [SERVICE_MONITOR] : [])];
    for (const crd of options.crds ?? []) {
      const { resource, schema } = resourceFromCrd(crd);
      resources.push(resource);
      this.schemas.set(resource, schema);
    }
    this.store = new K8sStore(resources, (r, obj) => this.admit(r, obj));
  }

  static async start(options: K8sApiServerOptions = {}): Promise<K8sApiServer> {
    const s = new K8sApiServer(options);
    s.server = createServer((req, res) => void s.handle(req, res));
    await new Promise<void>((resolve) => s.server?.listen(0, "127.0.0.1", resolve));
    s.port = (s.server.address() as AddressInfo).port;
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A KubeConfig pointing at this server, as a client in a cluster would have. */
  kubeConfig(namespace = "default"): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "test", server: this.url, skipTLSVerify: true }],
      users: [{ name: "test", token: "test-token" }],
      contexts: [{ name: "test", cluster: "test", user: "test", namespace }],
      currentContext: "test",
    });
    return kc;
  }

  resource(plural: string): ResourceType {
    const r = this.store.resources.find((x) => x.plural === plural);
    if (!r) throw new Error(`no resource ${plural}`);
    return r;
  }

  injectFault(fault: Fault): void {
    this.faults.push({ ...fault, times: fault.times ?? 1 });
  }

  /** Ends every open watch stream (clients must re-list or resume). */
  dropWatches(): void {
    for (const w of this.watches) w.end();
    this.watches.clear();
  }

  /** Resolves once `check()` is truthy, re-checking after every stored change; rejects after timeoutMs. */
  async waitFor<T>(what: string, check: () => T | undefined | false | null, timeoutMs = 10_000): Promise<T> {
    const first = check();
    if (first) return first;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        unsubscribe();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const unsubscribe = this.store.subscribe(() => {
        const v = check();
        if (v) {
          clearTimeout(timer);
          unsubscribe();
          resolve(v);
        }
      });
    });
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  private admit(r: ResourceType, obj: Obj): Obj {
    const schema = this.schemas.get(r);
    if (!schema) return obj;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    const out: Obj = { ...obj };
    for (const part of ["spec", "status"] as const) {
      const sub = props[part];
      if (sub && out[part] !== undefined) out[part] = prune(sub, applyDefaults(sub, out[part]));
    }
    const errors: string[] = [];
    for (const key of (schema.required as string[] | undefined) ?? []) if (out[key] === undefined) errors.push(`${key}: Required value`);
    for (const part of ["spec", "status"] as const) {
      const sub = props[part];
      if (sub && out[part] !== undefined) errors.push(...validateSchema(sub, out[part], part, this.options.celValidation !== false));
    }
    if (errors.length > 0) {
      throw new ApiError(422, "Invalid", `${r.kind}.${r.group} "${obj.metadata.name}" is invalid: ${errors.join(", ")}`, errors);
    }
    return out;
  }

  private route(url: URL): Route | "discovery" | undefined {
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    let gv: string;
    let rest: string[];
    if (parts[0] === "api" && parts[1]) {
      gv = parts[1];
      rest = parts.slice(2);
    } else if (parts[0] === "apis" && parts[1] && parts[2]) {
      gv = `${parts[1]}/${parts[2]}`;
      rest = parts.slice(3);
    } else return undefined;
    if (rest.length === 0) return "discovery";
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const resource = this.store.resources.find((r) => groupVersion(r) === gv && r.plural === rest[0]);
    if (!resource) return undefined;
    return { resource, namespace, name: rest[1], subresource: rest[2] ?? "" };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    let record: Omit<RequestRecord, "status"> | undefined;
    const reply = (status: number, body: unknown) => {
      if (record) this.requests.push({ ...record, status });
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    };
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const raw = Buffer.concat(chunks).toString("utf8");
      if (url.pathname === "/api") return reply(200, { kind: "APIVersions", versions: ["v1"] });
      const route = this.route(url);
      if (route === "discovery") {
        const gv = url.pathname.replace(/^\/apis?\//, "");
        const doc = discoveryDocument(this.store.resources, gv);
        return doc ? reply(200, doc) : reply(404, status(404, "NotFound", `the server could not find the requested resource`));
      }
      if (!route) return reply(404, status(404, "NotFound", `the server could not find the requested resource (${req.method} ${url.pathname})`));
      const contentType = (req.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
      const verb = verbOf(req.method ?? "GET", route, url, contentType);
      record = { verb, plural: route.resource.plural, subresource: route.subresource, namespace: route.namespace, name: route.name, fieldManager: url.searchParams.get("fieldManager") ?? undefined };
      const fault = this.faults.find((f) => f.verb === verb && f.plural === route.resource.plural && (f.subresource ?? "") === route.subresource && (f.times ?? 0) > 0);
      if (fault) {
        fault.times = (fault.times ?? 1) - 1;
        const reason = fault.status === 409 ? "Conflict" : fault.status === 500 ? "InternalError" : "Failure";
        return reply(fault.status, status(fault.status, reason, `injected fault: ${verb} ${route.resource.plural}`));
      }
      const body = raw === "" ? undefined : ((contentType === "application/apply-patch+yaml" ? parseYaml(raw) : JSON.parse(raw)) as Record<string, unknown>);
      if (verb === "watch") return this.watch(route, url, res, () => record && this.requests.push({ ...record, status: 200 }));
      const result = this.execute(verb, route, url, body);
      return reply(verb === "create" ? 201 : 200, result);
    } catch (err) {
      if (err instanceof ApiError) return reply(err.code, status(err.code, err.reason, err.message, err.causes));
      return reply(500, status(500, "InternalError", err instanceof Error ? err.message : String(err)));
    }
  }

  private execute(verb: Verb, route: Route, url: URL, body: Record<string, unknown> | undefined): unknown {
    const { resource: r, namespace: ns, name, subresource } = route;
    const store = this.store;
    if (subresource === "scale") return this.scale(verb, route, body);
    const sub = subresource === "status" ? "status" : "";
    if (subresource !== "" && subresource !== "status") throw new ApiError(404, "NotFound", `no subresource ${subresource}`);
    if (sub === "status" && !r.statusSubresource) throw new ApiError(404, "NotFound", `${r.plural} has no status subresource`);
    switch (verb) {
      case "list": {
        const { items, resourceVersion } = store.list(r, ns, url.searchParams.get("labelSelector") ?? undefined, url.searchParams.get("fieldSelector") ?? undefined);
        return { apiVersion: groupVersion(r), kind: `${r.kind}List`, metadata: { resourceVersion }, items: items.map((o) => withKind(r, o)) };
      }
      case "get":
        return withKind(r, store.get(r, ns, name as string));
      case "create":
        return withKind(r, store.create(r, ns, requireBody(body)));
      case "update":
        return withKind(r, store.update(r, ns, name as string, requireBody(body) as Obj, sub));
      case "patch":
        return withKind(r, store.patch(r, ns, name as string, requireBody(body), sub));
      case "apply": {
        const manager = url.searchParams.get("fieldManager");
        if (!manager) throw new ApiError(422, "Invalid", "fieldManager: Required value: is required for apply patch");
        return withKind(r, store.apply(r, ns, name as string, requireBody(body), manager, sub));
      }
      case "delete": {
        if (name === undefined) {
          const { items } = store.list(r, ns, url.searchParams.get("labelSelector") ?? undefined);
          for (const o of items) store.delete(r, ns, o.metadata.name);
          return { apiVersion: groupVersion(r), kind: `${r.kind}List`, metadata: {}, items: items.map((o) => withKind(r, o)) };
        }
        const propagation = url.searchParams.get("propagationPolicy") ?? (body?.propagationPolicy as string | undefined) ?? "Background";
        store.delete(r, ns, name, propagation);
        return status(200, "", "", [], "Success");
      }
      default:
        throw new ApiError(405, "MethodNotAllowed", `${verb} is not supported`);
    }
  }

  /** autoscaling/v1 Scale of a custom resource with a scale subresource. */
  private scale(verb: Verb, route: Route, body: Record<string, unknown> | undefined): unknown {
    const { resource: r, namespace: ns, name } = route;
    const paths = r.scale;
    if (!paths || !name) throw new ApiError(404, "NotFound", `${r.plural} has no scale subresource`);
    const view = (o: Obj) => ({
      apiVersion: "autoscaling/v1",
      kind: "Scale",
      metadata: { name: o.metadata.name, namespace: o.metadata.namespace, uid: o.metadata.uid, resourceVersion: o.metadata.resourceVersion, creationTimestamp: o.metadata.creationTimestamp },
      spec: { replicas: getPath(o, paths.specReplicasPath) ?? 0 },
      status: { replicas: getPath(o, paths.statusReplicasPath) ?? 0, selector: getPath(o, paths.labelSelectorPath) ?? "" },
    });
    const current = this.store.get(r, ns, name);
    if (verb === "get") return view(current);
    if (verb !== "patch" && verb !== "update") throw new ApiError(405, "MethodNotAllowed", `${verb} on scale`);
    const replicas = getPath(body, "spec.replicas");
    if (typeof replicas !== "number") throw new ApiError(422, "Invalid", "spec.replicas: Required value");
    const rv = getPath(body, "metadata.resourceVersion");
    const next = structuredClone(current);
    setPath(next, paths.specReplicasPath, replicas);
    if (typeof rv === "string") next.metadata.resourceVersion = rv;
    return view(this.store.update(r, ns, name, next));
  }

  private watch(route: Route, url: URL, res: ServerResponse, onStart: () => void): void {
    const { resource: r, namespace: ns } = route;
    const selector = url.searchParams.get("labelSelector") ?? undefined;
    const reqs = selector ? parseLabelSelector(selector) : [];
    // (the real server also turns an object leaving the selector into DELETED; not modelled)
    const labelMatch = (e: WatchEvent) => matchesLabels(reqs, e.object.metadata.labels);
    const match = (e: WatchEvent) => e.resource === r && (ns === undefined || e.object.metadata.namespace === ns) && labelMatch(e);
    const backlog = this.store.eventsSince(r, url.searchParams.get("resourceVersion") ?? undefined).filter(match);
    onStart();
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
    res.flushHeaders();
    const send = (e: WatchEvent) => res.write(`${JSON.stringify({ type: e.type, object: withKind(r, e.object) })}\n`);
    backlog.forEach(send);
    const unsubscribe = this.store.subscribe((e) => match(e) && send(e));
    this.watches.add(res);
    const timeout = Number(url.searchParams.get("timeoutSeconds") ?? 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on("close", () => {
      unsubscribe();
      if (timer) clearTimeout(timer);
      this.watches.delete(res);
    });
  }
}

function verbOf(method: string, route: Route, url: URL, contentType: string): Verb {
  switch (method) {
    case "GET":
      if (url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1") return "watch";
      return route.name === undefined ? "list" : "get";
    case "POST":
      return "create";
    case "PUT":
      return "update";
    case "PATCH":
      if (contentType === "application/apply-patch+yaml") return "apply";
      if (contentType === "application/json-patch+json") throw new ApiError(415, "UnsupportedMediaType", "json patch is not supported by the test API server");
      return "patch";
    case "DELETE":
      return "delete";
    default:
      throw new ApiError(405, "MethodNotAllowed", `${method} is not supported`);
  }
}

function requireBody(body: Record<string, unknown> | undefined): Record<string, unknown> {
  if (!body) throw new ApiError(400, "BadRequest", "request body required");
  return body;
}

function withKind(r: ResourceType, o: Obj): Obj {
  return { apiVersion: groupVersion(r), kind: r.kind, ...o };
}

function status(code: number, reason: string, message: string, causes: string[] = [], outcome = "Failure") {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: outcome,
    message,
    reason,
    code,
    ...(causes.length > 0 ? { details: { causes: causes.map((c) => ({ message: c, field: c.split(":")[0] })) } } : {}),
  };
}
