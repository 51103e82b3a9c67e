/** `latentmesh worker`: one process per GPU rank, driving the engine. */
import { defineCommand } from "../core/flags.js";
import { WORKER_FLAGS, type WorkerConfig } from "./config.js";
import { runWorker } from "./main.js";

export const workerCommand = defineCommand({
  name: "worker",
  summary: "one engine rank: takes requests from NATS, batches them, streams tokens back",
  details: `
Subjects: lm.<namespace>.<deployment>.rank.<worker-id>.{generate,cancel}; load reports on
lm.<namespace>.<deployment>.load. SIGTERM drains: no new requests, accepted ones finish, then exit.`,
  flags: WORKER_FLAGS,
  async run(flags, ctx) {
    // parseFlags adds the common flags (log level and format) to every command's flags
    return runWorker(flags as WorkerConfig, ctx.signal);
  },
});
