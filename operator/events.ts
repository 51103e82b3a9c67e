/**
 * Kubernetes Events about ModelDeployments (core/v1), as `kubectl describe` shows them. Recording
 * never fails a reconcile: a refused Event is logged and dropped. Identical events in a short window
 * are collapsed, like client-go's recorder.
 */
import type { Logger } from "../core/log.js";
import { API_VERSION, KIND } from "../contracts/model-deployment.js";
import { FIELD_MANAGER } from "./desired/meta.js";
import type { Kube } from "./kube/client.js";

export interface EventTarget {
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
}

export class EventRecorder {
  private readonly recent = new Map<string, number>();

  constructor(
    private readonly kube: Kube,
    private readonly identity: string,
    private readonly log: Logger,
    private readonly dedupeMs = 60_000,
  ) {}

  async record(target: EventTarget, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const now = Date.now();
    const key = `${target.namespace}/${target.name}/${type}/${reason}/${message}`;
    const last = this.recent.get(key);
    if (last !== undefined && now - last < this.dedupeMs) return;
    this.recent.set(key, now);
    if (this.recent.size > 1000) this.recent.clear();
    const time = new Date(now).toISOString();
    try {
      await this.kube.create({
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${target.name}.${(BigInt(now) * 1_000_000n).toString(16)}${Math.floor(Math.random() * 4096).toString(16)}`, namespace: target.namespace },
        involvedObject: { apiVersion: API_VERSION, kind: KIND, name: target.name, namespace: target.namespace, uid: target.uid, resourceVersion: target.resourceVersion },
        type,
        reason,
        message,
        source: { component: FIELD_MANAGER },
        reportingComponent: `${API_VERSION.split("/")[0]}/operator`,
        reportingInstance: this.identity,
        firstTimestamp: time,
        lastTimestamp: time,
        count: 1,
      });
    } catch (err) {
      this.log.warn({ err: err instanceof Error ? err.message : String(err), reason }, "could not record an event");
    }
  }
}
