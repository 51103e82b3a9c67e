/** `latentmesh router`: the OpenAI-compatible HTTP entry point. */
import { defineCommand } from "../core/flags.js";
import { ROUTER_FLAGS, type RouterConfig } from "./config.js";
import { runRouter } from "./main.js";

export const routerCommand = defineCommand({
  name: "router",
  summary: "OpenAI-compatible HTTP API; schedules requests onto worker ranks over NATS",
  details: `
Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (SSE with "stream": true),
GET /health (200 once a rank is ready), GET /metrics (Prometheus).`,
  flags: ROUTER_FLAGS,
  async run(flags, ctx) {
    // parseFlags adds the common flags (log level and format) to every command's flags
    return runRouter(flags as RouterConfig, ctx.signal);
  },
});
