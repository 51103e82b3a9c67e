/** `latentmesh up`: the whole stack on this machine (nats-server, workers, router). */
import { z } from "zod";
import { defineCommand, flag, parse } from "../../core/flags.js";
import { notYet } from "../../core/not-yet.js";

export const upCommand = defineCommand({
  name: "up",
  summary: "run the whole stack locally: nats-server, CPU workers and the router",
  flags: {
    model: flag(z.string().min(1).optional(), "checkpoint directory (default: the bundled tiny demo model)", { placeholder: "DIR" }),
    port: flag(parse.int({ min: 0, max: 65535 }).default(8000), "router HTTP port", { placeholder: "N" }),
    workers: flag(parse.int({ min: 1, max: 64 }).default(1), "number of worker processes", { placeholder: "K" }),
  },
  async run() {
    notYet("up", "serving-path issue");
  },
});
