/**
 * The worker's Prometheus metrics: exactly WORKER_METRICS of contracts/metrics.ts, with vLLM's
 * semantics, on a registry of their own (served at /metrics by ops-http.ts). Every series carries
 * this rank's `model` and `worker_id` labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { registerMetrics } from "../core/metrics.js";
import { WORKER_METRICS, type MetricDef } from "../contracts/metrics.js";

type Labels = { model: string; worker_id: string };

/** The worker metrics this build updates, already bound to the rank's labels. */
export interface WorkerMetrics {
  readonly registry: Registry;
  setLoad(v: { running: number; waiting: number; kvUsage: number; slotUsage: number }): void;
  addPromptTokens(n: number): void;
  addGenerationTokens(n: number): void;
  observeTimeToFirstToken(seconds: number): void;
  observeInterTokenLatency(seconds: number): void;
  /** One sequence's verify step: `numDrafts` drafts fed, the first `numAccepted` kept (vLLM's spec_decode_* counters). */
  addSpecDecode(numDrafts: number, numAccepted: number): void;
  /** Brings latentmesh_worker_expert_tokens_total{layer,expert} up to the engine's cumulative counts. */
  setExpertTokens(v: { layers: readonly number[]; numExperts: number; counts: ArrayLike<number> }): void;
}

export function createWorkerMetrics(labels: Labels): WorkerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const made = registerMetrics(WORKER_METRICS, registry);
  const gauge = (d: MetricDef) => made.get(d.name) as Gauge;
  const counter = (d: MetricDef) => made.get(d.name) as Counter;
  const histogram = (d: MetricDef) => made.get(d.name) as Histogram;
  const m = WORKER_METRICS;
  let expertSeen: number[] = [];
  const metrics: WorkerMetrics = {
    registry,
    setLoad(v) {
      gauge(m.numRequestsRunning).set(labels, v.running);
      gauge(m.numRequestsWaiting).set(labels, v.waiting);
      gauge(m.kvCacheUsagePerc).set(labels, v.kvUsage);
      gauge(m.stateSlotsUsagePerc).set(labels, v.slotUsage);
    },
    addPromptTokens: (n) => counter(m.promptTokensTotal).inc(labels, n),
    addGenerationTokens: (n) => counter(m.generationTokensTotal).inc(labels, n),
    observeTimeToFirstToken: (s) => histogram(m.timeToFirstToken).observe(labels, s),
    observeInterTokenLatency: (s) => histogram(m.interTokenLatency).observe(labels, s),
    addSpecDecode(numDrafts, numAccepted) {
      counter(m.specDecodeNumDrafts).inc(labels, 1);
      counter(m.specDecodeNumDraftTokens).inc(labels, numDrafts);
      counter(m.specDecodeNumAcceptedTokens).inc(labels, numAccepted);
      for (let j = 0; j < numAccepted; j++) counter(m.specDecodeNumAcceptedTokensPerPos).inc({ ...labels, position: String(j) }, 1);
    },
    setExpertTokens({ layers, numExperts, counts }) {
      const c = counter(m.expertTokensTotal);
      layers.forEach((layer, l) => {
        for (let e = 0; e < numExperts; e++) {
          const i = l * numExperts + e;
          const delta = (counts[i] ?? 0) - (expertSeen[i] ?? 0);
          if (delta > 0 || expertSeen[i] === undefined) c.inc({ ...labels, layer: String(layer), expert: String(e) }, Math.max(delta, 0));
        }
      });
      expertSeen = Array.from(counts);
    },
  };
  // series a scrape shows before the first request
  metrics.setLoad({ running: 0, waiting: 0, kvUsage: 0, slotUsage: 0 });
  metrics.addPromptTokens(0);
  metrics.addGenerationTokens(0);
  return metrics;
}
