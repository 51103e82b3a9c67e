/**
 * `latentmesh bench engine|kernels|mtp|router`: benchmarks that print a table of ratios (see bench/).
 * `engine` drives the native engine directly (bench/engine.ts) and `kernels` runs the kernel
 * benchmarks with their PyTorch baselines (bench/kernels.ts); both also write one JSON file per run
 * into --json-dir (bench/results/). `mtp` measures MTP verify/decode cost ratios and projected
 * speedups (bench/mtp.ts); `mtp-demo` serves the trained demo model with and without speculation
 * (bench/mtp-demo.ts) and `router` runs bench/router.ts (both take their arguments after `--`).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, copyFileSync, existsSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { boolFlag, defineCommand, flag, parse } from "../../core/flags.js";
import { createLogger } from "../../core/log.js";
import { repoRoot } from "../../core/paths.js";

const CASE_LIST = z
  .string()
  .trim()
  .regex(/^(decode_b\d+_ctx\d+k?|mixed_b\d+_\d+k?)(\s*,\s*(decode_b\d+_ctx\d+k?|mixed_b\d+_\d+k?))*$/, "expected comma-separated cases: decode_bB_ctxN[k], mixed_bB_N[k] (e.g. decode_b64_ctx8k,mixed_b64_2k)")
  .transform((s) => s.split(",").map((x) => x.trim()));

const NUMBER_LIST = z
  .string()
  .trim()
  .regex(/^\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*$/, "expected comma-separated non-negative numbers")
  .transform((s) => s.split(",").map((x) => Number(x.trim())));

export const benchCommand = defineCommand({
  name: "bench",
  summary: "run a benchmark and print a table of ratios (see bench/README.md)",
  positionals: "engine|kernels|mtp|mtp-demo|router [-- mtp-demo or router args]",
  details: `Examples:
  latentmesh bench engine --backend cuda --load-format dummy --config nemotron-3-nano-30b-a3b.config.json
  latentmesh bench engine --backend cuda --config CONFIG --cases decode_b64_ctx8k,mixed_b64_2k --profile --route-skew 0,1 --transformers
  latentmesh bench engine --model test/fixtures/tiny-chat --batches 1,8 --context 256 --prefill 512
  latentmesh bench kernels            (GPU machine, after LM_CUDA=ON node scripts/build-native.mjs)
  latentmesh bench mtp --config CONFIG_WITH_MTP.json --batches 1,8,32 --context 256 --ks 0,1,2,3
  latentmesh bench mtp-demo -- --batches 1,8,32 --reps 10
  latentmesh bench router -- --rate 500 --seconds 3
engine and kernels write <date>-<kind>-<device>-<commit>.json into --json-dir (commit: --commit / LATENTMESH_COMMIT, else git).`,
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
    cases: flag(CASE_LIST.optional(), "engine: extra cases, e.g. decode_b64_ctx8k (batch 64 at context 8192), mixed_b64_2k (decode batch 64 + a 2048-token prefill chunk)", {
      placeholder: "LIST",
      env: null,
    }),
    cudaGraphs: flag(z.enum(["replay", "padded", "off"]).optional(), "engine, cuda backend: decode graphs replayed, padded but eager, or off (default replay)", { placeholder: "MODE", env: null }),
    profile: boolFlag("engine: also time each component of the decode steps, prefills and mixed cases on a profiling engine", false, { env: null }),
    routeSkew: flag(NUMBER_LIST.default([0]), "engine, dummy weights: expert-popularity skews to run every case at (0 uniform, 1 Zipf-like), e.g. 0,1", { placeholder: "LIST", env: null }),
    fill: flag(z.enum(["auto", "prefill", "fast"]).default("auto"), "engine: how decode sequences reach their context (auto: prefill up to 2048, fast beyond)", { placeholder: "MODE", env: null }),
    transformers: boolFlag("engine: also run bench/transformers-baseline.py (torch + transformers, cuda) after the engine", false, { env: null }),
    torchBaselines: boolFlag("kernels: also run bench/torch-baselines.py", true, { env: null }),
    python: flag(z.string().min(1).default("python3"), "Python with torch (and transformers) for the baselines", { placeholder: "PATH", env: null }),
    json: boolFlag("engine, kernels: write the run's JSON file (--no-json: only the table)", true, { env: null }),
    jsonDir: flag(z.string().min(1).optional(), "engine, kernels: where to write the JSON file (default: bench/results of the repository)", { placeholder: "DIR", env: null }),
    commit: flag(z.string().regex(/^[0-9A-Za-z_.-]+$/, "expected a commit id").optional(), "commit recorded in the JSON (default: git HEAD, -dirty when tracked files differ; set it where the copy has no or a stale .git)", { placeholder: "ID", env: "LATENTMESH_COMMIT" }),
    ks: flag(parse.intList({ min: 0 }).default([0, 1, 2, 3]), "mtp: draft depths to time", { placeholder: "LIST", env: null }),
    rounds: flag(parse.int({ min: 1, max: 10 }).default(1), "mtp: load the plain and the MTP engine in turn this many times and keep each cell's fastest round (GPU clocks drift as it warms)", {
      placeholder: "N",
      env: null,
    }),
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
    if (suite === "mtp-demo") {
      const { main } = await import("../../bench/mtp-demo.js");
      return main(rest);
    }
    if (suite !== "engine" && suite !== "mtp" && suite !== "kernels") throw invalid(`unknown benchmark '${suite ?? ""}' (engine, kernels, mtp, mtp-demo or router)`, "suite");
    if (rest.length) throw invalid(`unexpected argument '${rest[0]}'`);
    const log = createLogger({ name: "bench", level: f.logLevel, format: f.logFormat });
    const root = repoRoot();
    const started = new Date().toISOString();
    const { deviceName, resolveCommit, writeResults } = await import("../../bench/results-json.js");
    const jsonDir = f.jsonDir ? resolve(f.jsonDir) : join(root, "bench", "results");
    if (suite === "kernels") {
      const { runKernelBench } = await import("../../bench/kernels.js");
      const report = runKernelBench({ repoDir: root, python: f.torchBaselines ? f.python : null, progress: (line) => log.info(line) });
      process.stdout.write(`${report.text}\n`);
      if (f.json) {
        const path = writeResults(jsonDir, "kernels", {
          device: report.device ?? deviceName("cuda"),
          date: started,
          commit: resolveCommit(root, f.commit),
          ceilings: report.ceilings,
          metrics: report.metrics,
          command: `latentmesh bench kernels${f.torchBaselines ? "" : " --no-torch-baselines"}`,
        });
        process.stdout.write(`wrote ${path}\n`);
      }
      return;
    }
    let modelDir = f.model;
    let loadFormat = f.loadFormat;
    if (f.config) {
      if (!existsSync(f.config)) throw invalid(`--config ${f.config} does not exist`, "config");
      modelDir = mkdtempSync(join(tmpdir(), "lm-bench-"));
      copyFileSync(f.config, join(modelDir, "config.json"));
      loadFormat = "dummy";
    }
    if (!modelDir) throw invalid("give --model DIR or --config FILE", "model");
    if (suite === "mtp") {
      const { runMtpBench } = await import("../../bench/mtp.js");
      const table = await runMtpBench({
        modelDir: resolve(modelDir), loadFormat, backend: f.backend, batches: f.batches, ks: f.ks, context: f.context, steps: f.steps, rounds: f.rounds,
        threads: f.threads || availableParallelism(), acceptance: f.acceptance, progress: (line) => log.info(line),
      });
      process.stdout.write(`${table}\n`);
      return;
    }
    const { parseCase, runEngineBench } = await import("../../bench/engine.js");
    const cases = (f.cases ?? []).map((name) => {
      const c = parseCase(name);
      if (!c) throw invalid(`--cases: '${name}' needs a batch and a size of at least 1`, "cases");
      return c;
    });
    if (f.cudaGraphs && f.backend !== "cuda") throw invalid("--cuda-graphs applies to the cuda backend", "cuda-graphs");
    if (f.routeSkew.some((s) => s !== 0) && loadFormat !== "dummy") throw invalid("--route-skew needs dummy weights (--load-format dummy or --config)", "route-skew");
    if (f.transformers && f.backend !== "cuda") throw invalid("--transformers compares on the GPU: use it with --backend cuda", "transformers");
    const report = await runEngineBench({
      modelDir: resolve(modelDir),
      loadFormat,
      backend: f.backend,
      batches: f.batches,
      context: f.context,
      prefill: f.prefill,
      steps: f.steps,
      threads: f.threads || availableParallelism(),
      progress: (line) => log.info(line),
      cases,
      ...(f.cudaGraphs ? { cudaGraphs: f.cudaGraphs } : {}),
      profile: f.profile,
      routeSkews: [...new Set(f.routeSkew)],
      fill: f.fill,
      transformers: f.transformers ? { python: f.python, script: join(root, "bench", "transformers-baseline.py") } : null,
    });
    process.stdout.write(`${report.text}\n`);
    if (f.json) {
      const path = writeResults(jsonDir, "engine", {
        device: deviceName(f.backend),
        date: started,
        commit: resolveCommit(root, f.commit),
        ceilings: report.ceilings,
        metrics: report.metrics,
        command: `latentmesh ${process.argv.slice(2).join(" ")}`,
        backend: f.backend,
        model: f.config ?? f.model,
        parameters: report.numParameters,
        ...(Object.keys(report.profile).length ? { profile: report.profile } : {}),
      });
      process.stdout.write(`wrote ${path}\n`);
    }
  },
});
