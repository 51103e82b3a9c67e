/**
 * The router's Prometheus metrics: exactly ROUTER_METRICS of contracts/metrics.ts (Dynamo's frontend
 * names under our prefix), on a registry of their own, served at the router's /metrics.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { registerMetrics } from "../core/metrics.js";
import { ROUTER_METRICS, type MetricDef } from "../contracts/metrics.js";

/** A histogram already bound to its labels. */
export interface Observer {
  observe(value: number): void;
}

export interface RouterMetrics {
  readonly registry: Registry;
  readonly routingOverhead: Observer;
  readonly timeToFirstToken: Observer;
  readonly interTokenLatency: Observer;
  readonly requestDuration: Observer;
  readonly inputSequenceTokens: Observer;
  readonly outputSequenceTokens: Observer;
  finished(status: string): void;
  rejected(reason: string): void;
  migrations(type: "new_request" | "ongoing_request"): void;
  addOutputTokens(n: number): void;
  setInflight(n: number): void;
  setQueued(n: number): void;
  setSpecAcceptance(workerId: string, value: number): void;
  forgetWorker(workerId: string): void;
}

export function createRouterMetrics(model: string): RouterMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const made = registerMetrics(ROUTER_METRICS, registry);
  const m = ROUTER_METRICS;
  const counter = (d: MetricDef) => made.get(d.name) as Counter;
  const gauge = (d: MetricDef) => made.get(d.name) as Gauge;
  const histogram = (d: MetricDef): Observer => {
    const h = (made.get(d.name) as Histogram).labels({ model });
    return { observe: (v) => h.observe(v) };
  };
  // children bound to their labels once: no label hashing per request
  const inflight = gauge(m.inflightRequests).labels({ model });
  const queued = gauge(m.queuedRequests).labels({ model });
  const outputTokens = counter(m.outputTokensTotal).labels({ model });
  const finished = new Map<string, { inc(): void }>();
  inflight.set(0);
  queued.set(0);
  outputTokens.inc(0);
  return {
    registry,
    routingOverhead: histogram(m.routingOverhead),
    timeToFirstToken: histogram(m.timeToFirstToken),
    interTokenLatency: histogram(m.interTokenLatency),
    requestDuration: histogram(m.requestDuration),
    inputSequenceTokens: histogram(m.inputSequenceTokens),
    outputSequenceTokens: histogram(m.outputSequenceTokens),
    finished: (status) => {
      let c = finished.get(status);
      if (!c) finished.set(status, (c = counter(m.requestsTotal).labels({ model, status })));
      c.inc();
    },
    rejected: (reason) => counter(m.rejectedRequestsTotal).inc({ model, reason }),
    migrations: (type) => counter(m.migrationsTotal).inc({ model, migration_type: type }),
    addOutputTokens: (n) => outputTokens.inc(n),
    setInflight: (n) => inflight.set(n),
    setQueued: (n) => queued.set(n),
    setSpecAcceptance: (workerId, v) => gauge(m.specAcceptanceLength).set({ model, worker_id: workerId }, v),
    forgetWorker: (workerId) => gauge(m.specAcceptanceLength).remove({ model, worker_id: workerId }),
  };
}
