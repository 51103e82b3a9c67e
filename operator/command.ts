/** `latentmesh operator`: reconciles ModelDeployments into router and worker-group objects. */
import { z } from "zod";
import { defineCommand, flag, parse } from "../core/flags.js";
import { notYet } from "../core/not-yet.js";

export const operatorCommand = defineCommand({
  name: "operator",
  summary: "Kubernetes operator: reconciles ModelDeployment objects",
  flags: {
    namespace: flag(z.string().optional(), "watch only this namespace (default: all)", { placeholder: "NS" }),
    metricsPort: flag(parse.int({ min: 0, max: 65535 }).default(8080), "port for /metrics and /healthz", { placeholder: "N" }),
  },
  async run() {
    notYet("operator", "operator issue");
  },
});
