/**
 * `latentmesh bench engine|mtp|router`: benchmarks that print a table of ratios (see bench/).
 * `engine` drives the native engine directly; `mtp` measures MTP verify/decode cost ratios and
 * projected speedups (bench/mtp.ts); `router` runs bench/router.ts (arguments after `--`).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, copyFileSync, existsSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { defineCommand, flag, parse } from "../../core/flags.js";
import { createLogger } from "../../core/log.js";

export const benchCommand = defineCommand({
  name: "bench",
  summary: "run a benchmark and print a table of ratios (see bench/README.md)",
  positionals: "engine|mtp|router [-- router args]",
  details: `Examples:
  latentmesh bench engine --backend cuda --load-format dummy --config nemotron-3-nano-30b-a3b.config.json
  latentmesh bench engine --model test/fixtures/tiny-chat --batches 1,8 --context 256 --prefill 512
  latentmesh bench mtp --config CONFIG_WITH_MTP.json --batches 1,8,32 --context 256 --ks 0,1,2,3
  latentmesh bench router -- --rate 500 --seconds 3`,
  flags: {
    model: flag(z.string().min(1).optional(), "checkpoint directory (or use --config with dummy weights)", { placeholder: "DIR", env: null }),
    config: flag(z.string().min(1).optional(), "a config.json file to benchmark with dummy weights", { placeholder: "FILE", env: null }),
    loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights", { placeholder: "FORMAT", env: null }),
    backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
    batches: flag(parse.intList({ min: 1 }).default([1, 8, 32, 256]), "decode batch sizes", { placeholder: "LIST", env: null }),
    context: flag(parse.int({ min: 1 }).default(1024), "context length of each decoding sequence", { placeholder: "N", env: null }),
    prefill: flag(parse.intList({ min: 1 }).default([512, 2048, 8192]), "prefill lengths", { placeholder: "LIST", env: null }),
    steps: flag(parse.int({ min: 1 }).default(10), "timed decode steps per batch size", { placeholder: "N", env: null }),
    threads: flag(parse.int({ min: 0 }).default(0), "CPU threads (0 = all cores)", { placeholder: "N", env: null }),
    ks: flag(parse.intList({ min: 0 }).default([0, 1, 2, 3]), "mtp: draft depths to time", { placeholder: "LIST", env: null }),
    acceptance: flag(
      z
        .string()
        .regex(/^\d+(\.\d+)?(,\d+(\.\d+)?)*$/, "expected comma-separated numbers")
        .transform((s) => s.split(",").map(Number))
        .default([2.0, 2.8, 3.45]),
      "mtp: mean accepted lengths (tokens per step at k = 3) to project speedups for",
      { placeholder: "LIST", env: null },
    ),
  },
  async run(f, ctx) {
    const [suite, ...rest] = ctx.args;
    if (suite === "router") {
      const script = fileURLToPath(new URL("../../bench/router.js", import.meta.url));
      const r = spawnSync(process.execPath, [script, ...rest], { stdio: "inherit" });
      return r.status ?? 1;
    }
    if (suite !== "engine" && suite !== "mtp") throw invalid(`unknown benchmark '${suite ?? ""}' (engine, mtp or router)`, "suite");
    if (rest.length) throw invalid(`unexpected argument '${rest[0]}'`);
    let modelDir = f.model;
    let loadFormat = f.loadFormat;
    if (f.config) {
      if (!existsSync(f.config)) throw invalid(`--config ${f.config} does not exist`, "config");
      modelDir = mkdtempSync(join(tmpdir(), "lm-bench-"));
      copyFileSync(f.config, join(modelDir, "config.json"));
      loadFormat = "dummy";
    }
    if (!modelDir) throw invalid("give --model DIR or --config FILE", "model");
    const log = createLogger({ name: "bench", level: f.logLevel, format: f.logFormat });
    if (suite === "mtp") {
      const { runMtpBench } = await import("../../bench/mtp.js");
      const table = await runMtpBench({
        modelDir: resolve(modelDir), loadFormat, backend: f.backend, batches: f.batches, ks: f.ks, context: f.context, steps: f.steps,
        threads: f.threads || availableParallelism(), acceptance: f.acceptance, progress: (line) => log.info(line),
      });
      process.stdout.write(`${table}\n`);
      return;
    }
    const { runEngineBench } = await import("../../bench/engine.js");
    const table = await runEngineBench({
      modelDir: resolve(modelDir),
      loadFormat,
      backend: f.backend,
      batches: f.batches,
      context: f.context,
      prefill: f.prefill,
      steps: f.steps,
      threads: f.threads || availableParallelism(),
      progress: (line) => log.info(line),
    });
    process.stdout.write(`${table}\n`);
  },
});
