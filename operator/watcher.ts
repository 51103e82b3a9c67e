/**
 * List-then-watch of one kind (client-go's reflector, reduced): list, hand every object over, watch
 * from the list's resourceVersion, resume after a stream ends, re-list after `410 Gone` or an error
 * (with backoff). Handlers only enqueue keys; the reconciler reads the world itself.
 */
import { Watch } from "@kubernetes/client-node";
import type { Logger } from "../core/log.js";
import type { Kube, KubeObject } from "./kube/client.js";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "SYNC";

export interface WatchTarget {
  readonly apiVersion: string;
  readonly kind: string;
  readonly plural: string;
  /** undefined = all namespaces. */
  readonly namespace: string | undefined;
  readonly labelSelector?: string;
}

export interface WatcherOptions {
  /** Server-side timeout of one watch request; the watch then resumes. */
  readonly watchTimeoutSeconds: number;
  readonly retryDelayMs: number;
}

function collectionPath(t: WatchTarget): string {
  const base = t.apiVersion.includes("/") ? `/apis/${t.apiVersion}` : `/api/${t.apiVersion}`;
  return t.namespace ? `${base}/namespaces/${t.namespace}/${t.plural}` : `${base}/${t.plural}`;
}

export class Watcher {
  private controller: AbortController | undefined;
  private stopped = false;
  private synced = false;
  private syncedWaiters: (() => void)[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;

  constructor(
    private readonly kube: Kube,
    private readonly target: WatchTarget,
    private readonly onEvent: (type: WatchEventType, obj: KubeObject) => void,
    private readonly opts: WatcherOptions,
    private readonly log: Logger,
  ) {}

  /** Resolves after the first successful list. */
  whenSynced(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((resolve) => this.syncedWaiters.push(resolve));
  }

  start(): void {
    void this.listAndWatch();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.controller?.abort();
    for (const w of this.syncedWaiters) w();
    this.syncedWaiters = [];
  }

  private retry(err: unknown) {
    if (this.stopped) return;
    this.failures++;
    const delay = Math.min(30_000, this.opts.retryDelayMs * 2 ** Math.min(this.failures - 1, 8));
    this.log.warn({ kind: this.target.kind, err: err instanceof Error ? err.message : String(err), retryInMs: delay }, "watch failed; re-listing");
    this.retryTimer = setTimeout(() => void this.listAndWatch(), delay);
  }

  private async listAndWatch(): Promise<void> {
    if (this.stopped) return;
    let resourceVersion: string;
    try {
      const list = await this.kube.list(this.target.apiVersion, this.target.kind, this.target.namespace, this.target.labelSelector);
      if (this.stopped) return;
      for (const obj of list.items) this.onEvent("SYNC", obj);
      resourceVersion = list.resourceVersion;
      if (!this.synced) {
        this.synced = true;
        for (const w of this.syncedWaiters) w();
        this.syncedWaiters = [];
      }
    } catch (err) {
      return this.retry(err);
    }
    await this.watchFrom(resourceVersion);
  }

  private async watchFrom(resourceVersion: string): Promise<void> {
    if (this.stopped) return;
    let rv = resourceVersion;
    let gone = false;
    const params: Record<string, string | number | boolean | undefined> = { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: this.opts.watchTimeoutSeconds };
    if (this.target.labelSelector) params.labelSelector = this.target.labelSelector;
    try {
      this.controller = await new Watch(this.kube.kubeConfig).watch(
        collectionPath(this.target),
        params,
        (type: string, obj: KubeObject & { code?: number }) => {
          if (type === "ERROR") {
            if (obj.code === 410) gone = true;
            return;
          }
          if (obj?.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
          if (type === "ADDED" || type === "MODIFIED" || type === "DELETED") this.onEvent(type, obj);
        },
        (err: unknown) => {
          if (this.stopped) return;
          if (err && !(err instanceof Error && err.name === "AbortError")) return this.retry(err);
          this.failures = 0;
          // a stream that ended normally resumes where it stopped; 410 Gone means list again
          if (gone) void this.listAndWatch();
          else void this.watchFrom(rv);
        },
      );
    } catch (err) {
      this.retry(err);
    }
  }
}
