/**
 * The rank's small ops HTTP port: `/metrics` (Prometheus text), `/healthz` (the process and its loop
 * are alive) and `/readyz` (engine loaded, NATS connected, not draining).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface OpsProbe {
  readonly isLive: () => boolean;
  readonly isReady: () => boolean;
}

/** Listens on host:port (0 = any free port); resolves with the server and the bound port. */
export async function startOpsHttp(host: string, port: number, registry: Registry, probe: OpsProbe): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const text = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "content-type": type });
      res.end(body);
    };
    if (req.method !== "GET") return text(405, "method not allowed\n");
    switch (path) {
      case "/metrics":
        registry.metrics().then(
          (body) => text(200, body, registry.contentType),
          (err: unknown) => text(500, `metrics failed: ${String(err)}\n`),
        );
        return;
      case "/healthz":
        return probe.isLive() ? text(200, "ok\n") : text(503, "not live\n");
      case "/readyz":
        return probe.isReady() ? text(200, "ready\n") : text(503, "not ready\n");
      default:
        return text(404, "not found\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
