/**
 * The machine-readable side of the benchmarks (issue 9): one JSON file per run in bench/results/,
 *
 *   {"device", "date", "commit", "ceilings": {"copy_tbps", "bf16_tflops"},
 *    "metrics": {KEY: {"value", "unit", "ratio", ...}}, ...}
 *
 * named `<date>-<kind>-<device slug>-<commit>.json`, where `ratio` is achieved ÷ limit (or ÷ the
 * named baseline for rows measured against one; null when nothing bounds it). Also the `BENCH
 * {json}` line format the kernel benchmarks and the Python baselines print (kernels/bench/README.md).
 * Everything here but resolveCommit and writeResults is pure.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { z } from "zod";

/** One metric of a run. Extra fields (what it was measured against, a baseline's figure) are allowed. */
export interface Metric {
  readonly value: number | null;
  readonly unit: string;
  /** achieved ÷ limit, or ÷ the named baseline; null when there is neither. */
  readonly ratio: number | null;
  /** What `ratio` divides by, in words ("copy bandwidth", "roofline", "torch SDPA (cuDNN)"). */
  readonly against?: string;
  readonly [extra: string]: unknown;
}

export interface Ceilings {
  /** Device-to-device copy, bytes read + written, TB/s. */
  readonly copy_tbps: number;
  /** bf16 GEMM rate, TFLOP/s (fp32 GEMM on the cpu backend). */
  readonly bf16_tflops: number;
}

export interface BenchResults {
  readonly device: string;
  /** ISO 8601 UTC timestamp of the run's start. */
  readonly date: string;
  readonly commit: string;
  readonly ceilings: Ceilings;
  readonly metrics: Record<string, Metric>;
  readonly [extra: string]: unknown;
}

/** The metric keys issue 9 names; runs may add more. */
export const ENGINE_KEYS = ["decode_b1_ctx1k", "decode_b32_ctx1k", "decode_b256_ctx1k", "decode_b64_ctx8k", "prefill_8k", "mixed_b64_2k"] as const;
export const KERNEL_KEYS = ["ssd_scan_8k", "ssu_b32", "attn_prefill_8k", "attn_decode_b64_8k", "moe_gemm_8k", "moe_gemm_64k"] as const;

/** 8192 → "8k", 512 → "512": token counts as they appear in metric keys. */
export function sizeKey(n: number): string {
  return n % 1024 === 0 ? `${n / 1024}k` : String(n);
}
export function decodeKey(batch: number, context: number): string {
  return `decode_b${batch}_ctx${sizeKey(context)}`;
}
export function prefillKey(tokens: number): string {
  return `prefill_${sizeKey(tokens)}`;
}
export function mixedKey(batch: number, chunk: number): string {
  return `mixed_b${batch}_${sizeKey(chunk)}`;
}

/** "NVIDIA H100 80GB HBM3" → "nvidia-h100-80gb-hbm3". */
export function deviceSlug(device: string): string {
  const s = device
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
  return s || "unknown-device";
}

/** "2026-11-24T10:15:09.123Z" → "2026-11-24T101509Z" (sorts by time, safe in file names). */
export function fileDate(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})/.exec(iso);
  if (!m) throw new Error(`not an ISO timestamp: ${iso}`);
  return `${m[1]}T${m[2]}${m[3]}${m[4]}Z`;
}

/** `<date>-<kind>-<device slug>-<commit>.json`. */
export function resultFileName(kind: string, r: Pick<BenchResults, "date" | "device" | "commit">): string {
  const commit = r.commit.replace(/[^0-9A-Za-z_.-]+/g, "") || "unknown";
  return `${fileDate(r.date)}-${kind}-${deviceSlug(r.device)}-${commit}.json`;
}

/** a ÷ b, or null when either is missing or the quotient is not a finite number. */
export function ratioOf(achieved: number | null | undefined, limit: number | null | undefined): number | null {
  if (achieved === null || achieved === undefined || limit === null || limit === undefined || limit === 0) return null;
  const r = achieved / limit;
  return Number.isFinite(r) ? r : null;
}

/** One parsed `BENCH {json}` line. */
export const BenchLineSchema = z
  .object({
    key: z.string().regex(/^[A-Za-z0-9_.-]+$/, "keys are letters, digits, '_', '.', '-'"),
    value: z.number().finite().nullable(),
    unit: z.string(),
    ms: z.number().finite().nonnegative().optional(),
    bytes: z.number().finite().nonnegative().optional(),
    flops: z.number().finite().nonnegative().optional(),
    oom: z.boolean().optional(),
    error: z.string().optional(),
  })
  .passthrough();
export type BenchLine = z.infer<typeof BenchLineSchema>;

/**
 * The `BENCH {json}` lines of a program's output, in order (a later line with the same key wins
 * in byKey), and one message per malformed BENCH line; every other line is ignored.
 */
export function parseBenchLines(text: string): { lines: BenchLine[]; byKey: Map<string, BenchLine>; errors: string[] } {
  const lines: BenchLine[] = [];
  const errors: string[] = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const m = /^\s*BENCH\s+(.*)$/.exec(raw);
    if (!m) continue;
    let json: unknown;
    try {
      json = JSON.parse(m[1] as string);
    } catch {
      errors.push(`line ${i + 1}: BENCH line is not JSON: ${raw.slice(0, 120)}`);
      continue;
    }
    const p = BenchLineSchema.safeParse(json);
    if (!p.success) {
      const issue = p.error.issues[0];
      errors.push(`line ${i + 1}: BENCH line ${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "invalid"}: ${raw.slice(0, 120)}`);
      continue;
    }
    lines.push(p.data);
  }
  return { lines, byKey: new Map(lines.map((l) => [l.key, l])), errors };
}

/** Ceilings as the JSON stores them, from GB/s and TFLOP/s. */
export function ceilingsOf(copyGBps: number, matmulTflops: number): Ceilings {
  return { copy_tbps: copyGBps / 1e3, bf16_tflops: matmulTflops };
}

/** Validates the shape issue 9 asks for (used before writing and by the tests). */
export const BenchResultsSchema = z
  .object({
    device: z.string().min(1),
    date: z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/),
    commit: z.string().min(1),
    ceilings: z.object({ copy_tbps: z.number().finite().positive(), bf16_tflops: z.number().finite().positive() }),
    metrics: z.record(z.string(), z.object({ value: z.number().finite().nullable(), unit: z.string(), ratio: z.number().finite().nullable() }).passthrough()),
  })
  .passthrough();

/**
 * The commit to record: `explicit` when given (--commit / LATENTMESH_COMMIT: the GPU machine's copy
 * of the tree may carry no .git, or a stale one), else git's short HEAD with "-dirty" when tracked
 * files differ from it, else "unknown".
 */
export function resolveCommit(repoDir: string, explicit: string | undefined): string {
  if (explicit?.trim()) return explicit.trim();
  const head = spawnSync("git", ["rev-parse", "--short=12", "HEAD"], { cwd: repoDir, encoding: "utf8" });
  const hash = head.status === 0 ? head.stdout.trim() : "";
  if (!/^[0-9a-f]{7,40}$/.test(hash)) return "unknown";
  const status = spawnSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: repoDir, encoding: "utf8" });
  return status.status === 0 && status.stdout.trim() === "" ? hash : `${hash}-dirty`;
}

/** The GPU's name from nvidia-smi (cuda), the processor's model (cpu); "unknown" when neither answers. */
export function deviceName(backend: "cpu" | "cuda"): string {
  if (backend === "cuda") {
    const r = spawnSync("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader"], { encoding: "utf8" });
    const name = r.status === 0 ? (r.stdout.split("\n")[0] ?? "").trim() : "";
    if (name) return name;
  }
  return backend === "cpu" ? (cpus()[0]?.model.trim() ?? "unknown cpu") : "unknown";
}

/** Writes `dir/<resultFileName>` and returns its path. */
export function writeResults(dir: string, kind: string, r: BenchResults): string {
  BenchResultsSchema.parse(r);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, resultFileName(kind, r));
  writeFileSync(path, `${JSON.stringify(r, null, 2)}\n`);
  return path;
}
