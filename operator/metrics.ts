/**
 * The operator's Prometheus metrics (names from contracts/metrics.ts, controller-runtime's) and its
 * small HTTP server: /metrics, /healthz (the process is alive) and /readyz (watches synced, or
 * standing by as a non-leader).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Registry, type Counter, type Gauge, type Histogram } from "prom-client";
import { OPERATOR_METRICS } from "../contracts/metrics.js";
import { registerMetric } from "../core/metrics.js";

export const CONTROLLER = "modeldeployment";

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconcileTotal = registerMetric(OPERATOR_METRICS.reconcileTotal, this.registry) as Counter;
  readonly reconcileTime = registerMetric(OPERATOR_METRICS.reconcileTime, this.registry) as Histogram;
  readonly depth = registerMetric(OPERATOR_METRICS.workqueueDepth, this.registry) as Gauge;
  readonly adds = registerMetric(OPERATOR_METRICS.workqueueAdds, this.registry) as Counter;
  readonly retries = registerMetric(OPERATOR_METRICS.workqueueRetries, this.registry) as Counter;
  readonly queueDuration = registerMetric(OPERATOR_METRICS.workqueueQueueDuration, this.registry) as Histogram;
}

export interface HealthSource {
  /** Ready: synced as leader, or standing by. */
  ready(): boolean;
}

/** Serves /metrics, /healthz and /readyz on `port` (0: any free port); resolves with the bound port. */
export async function serveMetrics(metrics: OperatorMetrics, health: HealthSource, host: string, port: number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/metrics") {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "Content-Type": metrics.registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        },
      );
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("ok\n");
      return;
    }
    if (path === "/readyz") {
      const ok = health.ready();
      res.writeHead(ok ? 200 : 503, { "Content-Type": "text/plain" });
      res.end(ok ? "ok\n" : "not ready\n");
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
