/** `latentmesh router`: the OpenAI-compatible HTTP entry point. */
import { z } from "zod";
import { defineCommand, flag, parse } from "../core/flags.js";
import { notYet } from "../core/not-yet.js";

export const routerCommand = defineCommand({
  name: "router",
  summary: "OpenAI-compatible HTTP API; schedules requests onto worker ranks over NATS",
  flags: {
    host: flag(z.string().default("127.0.0.1"), "address to listen on", { placeholder: "ADDR" }),
    port: flag(parse.int({ min: 0, max: 65535 }).default(8000), "HTTP port", { placeholder: "N" }),
    natsUrl: flag(parse.url(["nats", "tls", "ws", "wss"]).default("nats://127.0.0.1:4222"), "NATS server URL", { placeholder: "URL" }),
  },
  async run() {
    notYet("router", "serving-path issue");
  },
});
