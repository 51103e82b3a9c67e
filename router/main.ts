/**
 * The router process: load the tokenizer, join NATS, follow the ranks' load reports, serve the OpenAI
 * API; on SIGTERM stop listening, let in-flight requests finish (bounded), exit.
 */
import { basename, resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { LoadReport, decodeMessage } from "../contracts/messages.js";
import { LatentMeshError } from "../contracts/errors.js";
import { deploymentSubjects } from "../contracts/subjects.js";
import { createLogger } from "../core/log.js";
import { connectNats } from "../core/nats.js";
import { ApiKeys } from "./auth.js";
import type { RouterConfig } from "./config.js";
import { Dispatcher } from "./dispatch.js";
import { RouterContext } from "./http/context.js";
import { createRouterServer } from "./http/server.js";
import { createRouterMetrics } from "./metrics.js";
import { DEFAULT_PICK_OPTIONS } from "./pick-rank.js";
import { RankTable } from "./ranks.js";
import { TextCodec } from "./tokenizer.js";

const SHUTDOWN_GRACE_MS = 10_000;

export async function runRouter(cfg: RouterConfig, signal: AbortSignal): Promise<number> {
  const log = createLogger({ name: "router", level: cfg.logLevel, format: cfg.logFormat });
  if (!cfg.model) throw new LatentMeshError("invalid_config", "--model is required (the checkpoint directory holding tokenizer.json)");
  const modelDir = resolve(cfg.model);
  const model = cfg.servedModelName ?? basename(modelDir);
  const codec = TextCodec.load(modelDir);
  const keys = ApiKeys.load(cfg.apiKeys, cfg.apiKeysFile);
  const metrics = createRouterMetrics(model);
  const subjects = deploymentSubjects(cfg.namespace, cfg.deployment);
  const nc = await connectNats(cfg, "latentmesh-router");

  const ranks = new RankTable(cfg.rankDeadAfterMs);
  ranks.onDeath((workerId, why) => {
    log.warn({ workerId, why }, "rank dead");
    metrics.forgetWorker(workerId);
  });
  ranks.start();
  const loadSub = nc.subscribe(subjects.load, {
    callback: (_e, msg) => {
      const d = decodeMessage(LoadReport, msg.data, "LoadReport");
      if (!d.ok) return log.warn({ error: d.error }, "invalid load report");
      if (!ranks.isLive(d.value.workerId)) log.info({ workerId: d.value.workerId, model: d.value.model, ready: d.value.ready }, "rank joined");
      ranks.update(d.value);
      metrics.setSpecAcceptance(d.value.workerId, d.value.mtpAcceptance);
    },
  });
  const dispatcher = new Dispatcher(nc, subjects, ranks, { maxMigrations: cfg.maxMigrations, submitTimeoutMs: cfg.submitTimeoutMs, pick: { ...DEFAULT_PICK_OPTIONS, affinitySlack: cfg.affinitySlack } }, metrics, log, cfg.routerId);
  dispatcher.start();
  const ctx = new RouterContext(cfg, model, codec, ranks, dispatcher, metrics);
  const server = createRouterServer(ctx, keys, log);
  server.requestTimeout = cfg.requestTimeoutS * 1000;
  await new Promise<void>((res, rej) => {
    server.once("error", (err) => rej(new LatentMeshError("invalid_config", `cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`)));
    server.listen(cfg.port, cfg.host, () => res());
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ url: `http://${cfg.host}:${port}/v1`, port, model, routerId: dispatcher.routerId, apiKeys: keys.enabled }, "router listening");

  await new Promise<void>((r) => (signal.aborted ? r() : signal.addEventListener("abort", () => r(), { once: true })));
  log.info({ inflight: ctx.inflight }, "shutting down");
  server.close();
  const deadline = Date.now() + SHUTDOWN_GRACE_MS;
  while (ctx.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  server.closeAllConnections();
  dispatcher.stop();
  loadSub.unsubscribe();
  ranks.stop();
  await nc.drain().catch(() => undefined);
  log.info("router stopped");
  return 0;
}
