/**
 * One worker rank end to end: load the engine (with progress lines), join NATS, serve requests, expose
 * the ops ports, and on SIGTERM drain — stop taking requests, finish accepted ones, exit.
 */
import { existsSync, writeFileSync } from "node:fs";
import { basename, resolve } from "node:path";
import { availableParallelism } from "node:os";
import type { NatsConnection } from "nats";
import { LatentMeshError } from "../contracts/errors.js";
import { GROUP_DRAIN_MESSAGE, TERMINATION_MESSAGE_PATH } from "../contracts/model-deployment-wiring.js";
import { deploymentSubjects } from "../contracts/subjects.js";
import { createLogger, type Logger } from "../core/log.js";
import { connectNats } from "../core/nats.js";
import { startAdminGrpc } from "./admin-grpc.js";
import { workerRank, type WorkerConfig } from "./config.js";
import type { LoadedEngine } from "./engine-port.js";
import { Engine } from "./engine.js";
import { attachGroupDrain, GroupDrain, groupControlSubject, GroupStepper } from "./group-drain.js";
import { EngineLoop } from "./loop.js";
import { createWorkerMetrics } from "./metrics.js";
import { startOpsHttp } from "./ops-http.js";
import { Scheduler } from "./scheduler.js";
import { SpeculationPolicy } from "./speculation.js";
import { contiguousShardPlan, readShardPlan } from "./shard-plan.js";
import { WorkerService } from "./service.js";
import { KvBlockPool, SlotPool } from "./slots.js";

/** How often a draining group rank repeats its control messages. */
const GROUP_DRAIN_REPUBLISH_MS = 100;

/** Runs until `signal` aborts, then drains and resolves with the exit code. */
export async function runWorker(cfg: WorkerConfig, signal: AbortSignal): Promise<number> {
  const log = createLogger({ name: "worker", level: cfg.logLevel, format: cfg.logFormat });
  if (!cfg.model) throw new LatentMeshError("invalid_config", "--model is required (a checkpoint directory)");
  const modelDir = resolve(cfg.model);
  if (cfg.localRank !== undefined && cfg.localRank >= cfg.ranksPerPod) throw new LatentMeshError("invalid_config", `local rank ${cfg.localRank} is outside the pod's ${cfg.ranksPerPod} ranks`, "local-rank");
  const rank = workerRank(cfg);
  if (rank >= cfg.worldSize) throw new LatentMeshError("invalid_config", `rank ${rank} is outside the group's world size ${cfg.worldSize}`, "rank");
  if (cfg.worldSize > 1 && !cfg.leaderAddress) throw new LatentMeshError("invalid_config", "--leader-address is required when --world-size > 1", "leader-address");
  const group = cfg.worldSize > 1
    ? { rank, worldSize: cfg.worldSize, leaderAddress: cfg.leaderAddress as string, shardPlan: cfg.shardPlan ? readShardPlan(cfg.shardPlan) : contiguousShardPlan(cfg.worldSize), collectiveTimeoutMs: cfg.collectiveTimeoutMs, rendezvousTimeoutMs: cfg.rendezvousTimeoutS * 1000 }
    : undefined;
  const workerId = cfg.workerId ?? `${cfg.group}-${rank}`;
  const model = cfg.servedModelName ?? basename(modelDir);
  const numKvBlocks = cfg.numKvBlocks > 0 ? cfg.numKvBlocks : cfg.maxSlots * Math.ceil(cfg.maxContextTokens / cfg.kvBlockSize);
  const wlog = log.child({ workerId });

  wlog.info({ modelDir, loadFormat: cfg.loadFormat, backend: cfg.backend }, "loading engine");
  const t0 = performance.now();
  const engine: LoadedEngine = await Engine.load({
    modelDir,
    loadFormat: cfg.loadFormat,
    backend: cfg.backend,
    maxSlots: cfg.maxSlots,
    kvBlockSize: cfg.kvBlockSize,
    numKvBlocks,
    threads: cfg.threads > 0 ? cfg.threads : availableParallelism(),
    dummySeed: cfg.dummySeed,
    onProgress: (line) => wlog.info(`load: ${line}`),
    ...(group ? { group } : {}),
    ...(cfg.mtpMaxDraftTokens > 0 ? { mtp: "auto" as const } : {}),
  });
  const speculation = engine.mtp ? new SpeculationPolicy({ mode: "auto", max: cfg.mtpMaxDraftTokens }) : null;
  const kvLimit = engine.config.pattern.includes("*") ? numKvBlocks * cfg.kvBlockSize : Infinity;
  const maxContextTokens = Math.min(cfg.maxContextTokens, engine.config.maxPositionEmbeddings, kvLimit);
  wlog.info({ seconds: +((performance.now() - t0) / 1000).toFixed(2), parameters: engine.info.numParameters, maxContextTokens, eosTokenIds: engine.eosTokenIds, mtpMaxDraftTokens: speculation ? cfg.mtpMaxDraftTokens : 0 }, "engine loaded");

  const nc = await connectNats(cfg, `latentmesh-worker-${workerId}`);
  const subjects = deploymentSubjects(cfg.namespace, cfg.deployment);
  const scheduler = new Scheduler(
    { maxRunning: cfg.maxSlots, stepTokenBudget: Math.max(cfg.stepTokenBudget, cfg.maxSlots) },
    new SlotPool(cfg.maxSlots),
    new KvBlockPool(numKvBlocks, cfg.kvBlockSize),
  );
  const metrics = createWorkerMetrics({ model, worker_id: workerId });
  const groupFailed = new AbortController();
  // in a group the loop steps through a counter that lets the group agree on its last step (group-drain.ts)
  const stepper = group ? new GroupStepper(engine) : null;
  // the service is the loop's sink and the loop is the service's; the sink forwards (called only after start)
  const loop = new EngineLoop(
    stepper ?? engine,
    scheduler,
    { onStep: (o) => svc.onStep(o), onCancelled: (s) => svc.onCancelled(s), onFailed: (s, e) => svc.onFailed(s, e), onGroupFailed: (e) => groupFailed.abort(e) },
    wlog,
    undefined,
    group ? { idleTickMs: cfg.groupIdleTickMs } : null,
    speculation,
  );
  const svc = new WorkerService(
    nc,
    subjects,
    { workerId, model, group: cfg.group, rank, maxContextTokens },
    { vocabSize: engine.config.vocabSize, eosTokenIds: engine.eosTokenIds, maxWaiting: cfg.maxWaiting },
    scheduler,
    loop,
    metrics,
    wlog,
    cfg.reportIntervalMs,
  );
  const groupDrain = group && stepper ? startGroupDrain(nc, subjects.prefix, cfg, group, stepper, svc, wlog) : null;
  loop.start();
  const expertTimer = setInterval(() => metrics.setExpertTokens(engine.expertTokenCounts()), cfg.reportIntervalMs);
  expertTimer.unref();
  const healthy = () => !nc.isClosed() && !groupFailed.signal.aborted;
  const ops = await startOpsHttp(cfg.opsHost, cfg.httpPort, metrics.registry, { isLive: healthy, isReady: () => healthy() && svc.isReady });
  const admin = await startAdminGrpc(cfg.opsHost, cfg.grpcPort, { isServing: () => svc.isReady, stats: () => svc.currentLoad(), drain: () => svc.drain() });
  await svc.start();
  wlog.info({ model, subject: subjects.generate(workerId), httpPort: ops.port, grpcPort: admin.port, maxSlots: cfg.maxSlots, numKvBlocks }, "worker ready");

  await Promise.race([aborted(signal), aborted(groupFailed.signal), groupDrain ? groupDrain.requested : new Promise<never>(() => undefined)]);
  // a drain this rank was asked for by a peer, not by its own signal (eviction, liveness probe, supervisor gone)
  const drainedByPeer = !signal.aborted && !groupFailed.signal.aborted;
  clearInterval(expertTimer);
  const stopAll = async () => {
    groupDrain?.close();
    await svc.stop();
    await loop.stop();
    await nc.drain().catch(() => undefined);
    ops.server.close();
    admin.server.forceShutdown();
    engine.close();
  };
  let drained = false;
  if (!groupFailed.signal.aborted) {
    // SIGTERM (or, in a group, a peer's drain): no new requests, accepted ones finish; a group drains as a
    // whole and every rank stops after the same step
    if (groupDrain && signal.aborted) groupDrain.start(String(signal.reason ?? "SIGTERM"));
    const outcome = await settled(groupDrain ? groupDrain.finished : svc.drain(), cfg.drainTimeoutS * 1000, groupFailed.signal);
    drained = outcome === "done";
    if (outcome === "timeout") wlog.warn({ timeoutS: cfg.drainTimeoutS }, "drain timed out; exiting with work unfinished");
  }
  if (groupFailed.signal.aborted) {
    // a broken group restarts as a unit: stop taking work (the router migrates what this rank held) and exit non-zero
    wlog.fatal({ err: groupFailed.signal.reason as Error }, "expert-parallel group failed; exiting");
    await stopAll();
    return 1;
  }
  await stopAll();
  if (drained && drainedByPeer) writeTerminationMessage(GROUP_DRAIN_MESSAGE, wlog);
  wlog.info("worker stopped");
  return drained ? 0 : 1;
}

/**
 * Writes the container's termination message (Kubernetes reads it into the container status) when the
 * file exists: the kubelet creates it in containers; elsewhere LATENTMESH_TERMINATION_MESSAGE_PATH may name one.
 */
function writeTerminationMessage(message: string, log: Logger): void {
  const path = process.env.LATENTMESH_TERMINATION_MESSAGE_PATH ?? TERMINATION_MESSAGE_PATH;
  if (!existsSync(path)) return;
  try {
    writeFileSync(path, message);
  } catch (err) {
    log.warn({ err, path }, "cannot write the termination message");
  }
}

/** Resolves when `signal` aborts (at once if it has); never rejects. */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** How `work` ended: it settled, `ms` passed first, or `abort` aborted first (no timer is left behind). */
function settled(work: Promise<unknown>, ms: number, abort: AbortSignal): Promise<"done" | "timeout" | "aborted"> {
  return new Promise((resolve) => {
    const finish = (how: "done" | "timeout" | "aborted") => {
      clearTimeout(timer);
      abort.removeEventListener("abort", onAbort);
      resolve(how);
    };
    const onAbort = () => finish("aborted");
    const timer = setTimeout(() => finish("timeout"), ms);
    if (abort.aborted) return finish("aborted");
    abort.addEventListener("abort", onAbort, { once: true });
    work.then(() => finish("done"), () => finish("done"));
  });
}

/** The group drain protocol of this rank, listening on the group's control subject. */
function startGroupDrain(nc: NatsConnection, prefix: string, cfg: WorkerConfig, group: { rank: number; worldSize: number; collectiveTimeoutMs: number }, stepper: GroupStepper, svc: WorkerService, log: Logger): GroupDrain {
  const wire = attachGroupDrain(nc, groupControlSubject(prefix, cfg.group), log);
  const drain = new GroupDrain(
    { rank: group.rank, worldSize: group.worldSize, republishMs: GROUP_DRAIN_REPUBLISH_MS, ackTimeoutMs: Math.max(50, Math.floor(group.collectiveTimeoutMs / 2)) },
    stepper,
    () => svc.drain(),
    wire.publish,
    log,
  );
  wire.listen(drain);
  return drain;
}
