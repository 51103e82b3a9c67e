/**
 * Kernel benchmark (issue 9): runs kernels/build/bench-kernels, then every other kernels/build/bench-*
 * (bench-attention among them, when built) and bench/torch-baselines.py in one session, reads their `BENCH {json}` lines
 * (kernels/bench/README.md) and sets each kernel against its limit — the copy bandwidth and bf16
 * matmul rate measured in the same run (bench-kernels prints them as ceiling_copy and
 * ceiling_matmul, the way the engine benchmark measures them), the issue's target, or the named
 * PyTorch baseline — then prints the table and returns the metrics for bench/results/*.json.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { LatentMeshError } from "../contracts/errors.js";
import { ceilingsOf, parseBenchLines, ratioOf, type BenchLine, type Ceilings, type Metric } from "./results-json.js";

/** Issue 9's SSD scan target, tokens/s per layer. */
export const SSD_TARGET_TOKENS_PER_S = 3e7;

/** What each kernel is held to (issue 9's table); keys not listed get a roofline ratio when they count bytes or FLOPs. */
export const KERNEL_TARGETS: Record<string, { readonly target: number; readonly text: string }> = {
  ssd_scan_8k: { target: 1, text: "≥ 3e7 tokens/s per layer" },
  ssu_b32: { target: 0.8, text: "≥ 80 % of copy bandwidth" },
  attn_prefill_8k: { target: 0.9, text: "≥ 0.9× torch SDPA's best backend" },
  attn_decode_b64_8k: { target: 0.7, text: "≥ 70 % of copy bandwidth on KV bytes" },
  moe_gemm_8k: { target: 0.85, text: "≥ 85 % of roofline, faster than torch._grouped_mm" },
  moe_gemm_64k: { target: 0.7, text: "≥ 70 % of the bf16 matmul rate" },
};

export interface KernelRow {
  readonly key: string;
  readonly measured: string;
  readonly limit: string;
  readonly metric: Metric;
  readonly target: string;
}

const num = (x: unknown): number | undefined => (typeof x === "number" && Number.isFinite(x) ? x : undefined);

/** The run's ceilings: bench-kernels' lines, else torch's (GB/s, TFLOP/s); null when neither ran. */
export function kernelCeilings(byKey: ReadonlyMap<string, BenchLine>): { copyGBps: number; matmulTflops: number; source: string } | null {
  const copy = byKey.get("ceiling_copy")?.value ?? null;
  const mm = byKey.get("ceiling_matmul")?.value ?? null;
  if (copy && mm) return { copyGBps: copy, matmulTflops: mm, source: "lm::measure_roofline (as the engine benchmark)" };
  const tcopy = byKey.get("baseline_copy")?.value ?? null;
  const tmm = byKey.get("baseline_matmul")?.value ?? null;
  if (tcopy && tmm) return { copyGBps: tcopy, matmulTflops: tmm, source: "torch" };
  return null;
}

/** Roofline time of a line that counts bytes and/or FLOPs: the larger of bytes ÷ bandwidth and FLOPs ÷ rate. */
export function rooflineMs(l: Pick<BenchLine, "bytes" | "flops">, copyGBps: number, matmulTflops: number): number | null {
  const t = Math.max(l.bytes ? (l.bytes / (copyGBps * 1e9)) * 1e3 : 0, l.flops ? (l.flops / (matmulTflops * 1e12)) * 1e3 : 0);
  return t > 0 ? t : null;
}

const fmt = (v: number | null, unit: string) => (v === null ? "—" : `${Math.abs(v) >= 1e5 ? v.toExponential(3) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 3)} ${unit}`);

/** Every measured line → its metric and table row (ceilings and baselines of their own rows too). */
export function kernelMetrics(byKey: ReadonlyMap<string, BenchLine>, ceil: { copyGBps: number; matmulTflops: number }): KernelRow[] {
  const rows: KernelRow[] = [];
  for (const l of byKey.values()) {
    if (l.key === "device" || l.key.startsWith("ceiling_")) continue;
    const base = { value: l.value, unit: l.unit, ...(l.ms !== undefined ? { ms: l.ms } : {}), ...(l.bytes !== undefined ? { bytes: l.bytes } : {}), ...(l.flops !== undefined ? { flops: l.flops } : {}) };
    const gbps = l.bytes && l.ms ? l.bytes / (l.ms * 1e-3) / 1e9 : null;
    const roof = rooflineMs(l, ceil.copyGBps, ceil.matmulTflops);
    let metric: Metric;
    let limit: string;
    if (l.key === "ssd_scan_8k") {
      metric = { ...base, ratio: ratioOf(l.value, SSD_TARGET_TOKENS_PER_S), against: "issue 9's target, 3e7 tokens/s per layer" };
      limit = "target 3e7 tok/s";
    } else if (/^ssu_b\d+$/.test(l.key) || l.key === "attn_decode_b64_8k") {
      metric = { ...base, ratio: ratioOf(gbps, ceil.copyGBps), against: "measured copy bandwidth", gbps };
      limit = `copy ${ceil.copyGBps.toFixed(0)} GB/s`;
    } else if (l.key === "attn_prefill_8k") {
      const sdpa = byKey.get("baseline_sdpa_8k");
      const vsRate = l.flops && l.ms ? ratioOf(l.flops / (l.ms * 1e-3) / 1e12, ceil.matmulTflops) : null;
      if (sdpa?.ms !== undefined && l.ms !== undefined) {
        metric = { ...base, ratio: ratioOf(sdpa.ms, l.ms), against: `torch SDPA, best backend (${String(sdpa.backend ?? "?")})`, baseline_ms: sdpa.ms, vs_matmul_rate: vsRate };
        limit = `SDPA ${sdpa.ms.toFixed(3)} ms`;
      } else {
        metric = { ...base, ratio: vsRate, against: "measured matmul rate (no SDPA baseline in this run)" };
        limit = `matmul ${ceil.matmulTflops.toFixed(0)} TFLOP/s`;
      }
    } else if (l.key === "baseline_copy" || l.key === "baseline_matmul") {
      const ours = l.key === "baseline_copy" ? ceil.copyGBps : ceil.matmulTflops;
      metric = { ...base, ratio: ratioOf(l.value, ours), against: "the run's ceiling as the engine measures it" };
      limit = fmt(ours, l.unit);
    } else if (l.key.startsWith("baseline_")) {
      metric = { ...base, ratio: null, against: "a baseline" };
      limit = "";
    } else {
      const baseline = byKey.get(l.key.replace(/^moe_gemm_/, "baseline_grouped_mm_"));
      const vsBaseline = /^moe_gemm_/.test(l.key) && baseline?.ms !== undefined && l.ms !== undefined ? ratioOf(baseline.ms, l.ms) : null;
      metric = {
        ...base,
        ratio: roof !== null && l.ms !== undefined ? ratioOf(roof, l.ms) : null,
        against: "roofline: max(bytes ÷ copy bandwidth, FLOPs ÷ matmul rate)",
        ...(roof !== null ? { roofline_ms: roof } : {}),
        ...(vsBaseline !== null ? { vs_grouped_mm: vsBaseline, baseline_ms: baseline?.ms } : {}),
      };
      limit = roof !== null ? `roofline ${roof.toFixed(3)} ms${vsBaseline !== null ? `; torch._grouped_mm ${baseline?.ms?.toFixed(3)} ms (ours ${vsBaseline.toFixed(2)}× as fast)` : ""}` : "";
    }
    const ms = num(l.ms);
    rows.push({ key: l.key, measured: `${fmt(l.value, l.unit)}${ms !== undefined && ms > 0 ? ` (${ms.toFixed(3)} ms)` : ""}${l.oom ? " out of memory" : ""}`, limit, metric, target: KERNEL_TARGETS[l.key]?.text ?? "" });
  }
  return rows;
}

export interface KernelBenchOptions {
  /** Repository root: kernels/build/ and bench/ are found there. */
  readonly repoDir: string;
  /** Python with torch for bench/torch-baselines.py; null: skip the baselines. */
  readonly python: string | null;
  readonly progress: (line: string) => void;
}

export interface KernelBenchReport {
  readonly text: string;
  readonly device: string | null;
  readonly ceilings: Ceilings;
  readonly metrics: Record<string, Metric>;
}

/** Runs one program, echoes its non-BENCH lines as progress and returns its stdout ("" if it failed to start). */
function runProgram(cmd: string, args: readonly string[], cwd: string, progress: (line: string) => void): { out: string; note: string | null } {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 << 20 });
  if (r.error) return { out: "", note: `${cmd}: ${r.error.message}` };
  for (const line of (r.stdout ?? "").split("\n")) if (line.trim() && !line.startsWith("BENCH ")) progress(line);
  return { out: r.stdout ?? "", note: r.status === 0 ? null : `${cmd} exited with ${r.status ?? r.signal}` };
}

export function runKernelBench(o: KernelBenchOptions): KernelBenchReport {
  const exe = (name: string) => join(o.repoDir, "kernels", "build", name);
  if (!existsSync(exe("bench-kernels"))) {
    throw new LatentMeshError("invalid_config", `${exe("bench-kernels")} is missing: build the CUDA backend first (LM_CUDA=ON node scripts/build-native.mjs)`, "bench");
  }
  const outputs: string[] = [];
  const notes: string[] = [];
  // bench-kernels first (it measures the ceilings), then every other kernels/bench/*.cc executable.
  const others = readdirSync(join(o.repoDir, "kernels", "build"))
    .filter((n) => /^bench-[a-z0-9-]+$/.test(n) && n !== "bench-kernels")
    .sort();
  const programs: [string, string[]][] = [[exe("bench-kernels"), []], ...others.map((n): [string, string[]] => [exe(n), []])];
  if (!others.includes("bench-attention")) notes.push("kernels/build/bench-attention is not built: no attention rows");
  if (o.python) programs.push([o.python, [join(o.repoDir, "bench", "torch-baselines.py")]]);
  for (const [cmd, args] of programs) {
    o.progress(`running ${[cmd, ...args].join(" ")}`);
    const r = runProgram(cmd, args, o.repoDir, o.progress);
    outputs.push(r.out);
    if (r.note) notes.push(r.note);
  }
  const { byKey, errors } = parseBenchLines(outputs.join("\n"));
  notes.push(...errors);
  const ceil = kernelCeilings(byKey);
  if (!ceil) throw new LatentMeshError("engine_error", `no ceilings measured (bench-kernels printed no ceiling lines${notes.length ? `; ${notes.join("; ")}` : ""})`);
  const rows = kernelMetrics(byKey, ceil);
  const device = byKey.get("device");
  const text = [
    `device ${String(device?.name ?? "?")}; ceilings measured in this run (${ceil.source}): copy ${ceil.copyGBps.toFixed(1)} GB/s, bf16 GEMM ${ceil.matmulTflops.toFixed(1)} TFLOP/s`,
    ...notes,
    "",
    "| kernel | measured | limit or baseline | ratio | target |",
    "|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.key} | ${r.measured} | ${r.limit} | ${r.metric.ratio?.toFixed(3) ?? ""} | ${r.target} |`),
  ].join("\n");
  return { text, device: typeof device?.name === "string" ? device.name : null, ceilings: ceilingsOf(ceil.copyGBps, ceil.matmulTflops), metrics: Object.fromEntries(rows.map((r) => [r.key, r.metric])) };
}
