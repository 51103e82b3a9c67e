/** Registers metrics from their one definition in contracts/metrics.ts with prom-client. */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { MetricDef } from "../contracts/metrics.js";

export type AnyMetric = Counter | Gauge | Histogram;

/** Creates the prom-client metric `d` describes, registered in `registry`. */
export function registerMetric(d: MetricDef, registry: Registry): AnyMetric {
  const common = { name: d.name, help: d.help, labelNames: [...d.labels], registers: [registry] };
  switch (d.type) {
    case "counter":
      return new Counter(common);
    case "gauge":
      return new Gauge(common);
    case "histogram":
      return new Histogram({ ...common, buckets: [...(d.buckets ?? [])] });
  }
}

/** Every metric of a contracts/metrics.ts group, by name. */
export function registerMetrics(defs: Record<string, MetricDef>, registry: Registry): Map<string, AnyMetric> {
  const made = new Map<string, AnyMetric>();
  for (const d of Object.values(defs)) made.set(d.name, registerMetric(d, registry));
  return made;
}
