/** `latentmesh bench`: benchmarks (engine step, router overhead); see bench/. */
import { z } from "zod";
import { defineCommand, flag } from "../../core/flags.js";
import { notYet } from "../../core/not-yet.js";

export const benchCommand = defineCommand({
  name: "bench",
  summary: "run a benchmark and print a table of ratios (see bench/README.md)",
  flags: {
    suite: flag(z.enum(["engine", "router", "kernels"]).default("engine"), "which benchmark", { placeholder: "NAME" }),
  },
  async run() {
    notYet("bench", "engine issues");
  },
});
