/** `latentmesh worker`: one process per GPU rank, driving the engine (or a pod's supervisor of its ranks). */
import { defineCommand } from "../core/flags.js";
import { isPodSupervisor, WORKER_FLAGS, type WorkerConfig } from "./config.js";
import { runPodSupervisor, supervisorLifeline } from "./group-pod.js";
import { runWorker } from "./main.js";

export const workerCommand = defineCommand({
  name: "worker",
  summary: "one engine rank: takes requests from NATS, batches them, streams tokens back",
  details: `
Subjects: lm.<namespace>.<deployment>.rank.<worker-id>.{generate,cancel}; load reports on
lm.<namespace>.<deployment>.load. SIGTERM drains: no new requests, accepted ones finish, then exit;
in an expert-parallel group SIGTERM to any rank drains the whole group (every rank exits 0).
With --ranks-per-pod N > 1 and neither --rank nor --local-rank this process starts one rank process
per GPU (CUDA_VISIBLE_DEVICES=<local rank>, ops ports shifted per local rank), forwards SIGTERM, and
fails as a whole when one of them dies.`,
  flags: WORKER_FLAGS,
  async run(flags, ctx) {
    // parseFlags adds the common flags (log level and format) to every command's flags
    const cfg = flags as WorkerConfig;
    // the ranks inherit this process's environment (PATH, CUDA, NCCL and NATS settings)
    if (isPodSupervisor(cfg)) return runPodSupervisor(cfg, ctx.signal, process.env);
    // a rank of a supervised pod also stops (drains) when its supervisor dies, however it died
    const lifeline = supervisorLifeline(ctx.signal, process.env);
    try {
      return await runWorker(cfg, lifeline.signal);
    } finally {
      lifeline.release();
    }
  },
});
