/** `latentmesh worker`: one process per GPU rank, driving the engine. */
import { z } from "zod";
import { defineCommand, flag, parse } from "../core/flags.js";
import { notYet } from "../core/not-yet.js";

export const workerCommand = defineCommand({
  name: "worker",
  summary: "one engine rank: takes requests from NATS, batches them, streams tokens back",
  flags: {
    model: flag(z.string().min(1).optional(), "checkpoint directory (config.json + safetensors)", { placeholder: "DIR" }),
    loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights of its config", { placeholder: "FORMAT" }),
    backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
    natsUrl: flag(parse.url(["nats", "tls", "ws", "wss"]).default("nats://127.0.0.1:4222"), "NATS server URL", { placeholder: "URL" }),
  },
  async run() {
    notYet("worker", "serving-path issue");
  },
});
