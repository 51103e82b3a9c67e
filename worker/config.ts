/**
 * The worker's flags (each also read from LATENTMESH_<NAME>), parsed once by core/flags.ts into a
 * readonly WorkerConfig that main.ts passes down.
 */
import { z } from "zod";
import { flag, parse, type CommonFlags, type ParsedFlags } from "../core/flags.js";
import { NATS_FLAGS } from "../core/nats.js";
import { SubjectToken } from "../contracts/subjects.js";

/** host:port, or [IPv6 literal]:port (an unbracketed IPv6 literal is ambiguous); port 1..65535. */
export const LeaderAddress = z
  .string()
  .trim()
  .regex(/^(\[[^\]\s]+\]|[^\s:[\]]+):\d{1,5}$/, "expected host:port or [ipv6]:port")
  .refine((s) => {
    const port = Number(s.slice(s.lastIndexOf(":") + 1));
    return port >= 1 && port <= 65535;
  }, "the port must be 1..65535");

const name = (help: string, def: string) => flag(SubjectToken.default(def), help, { placeholder: "NAME" });

export const WORKER_FLAGS = {
  model: flag(z.string().min(1).optional(), "checkpoint directory (config.json + safetensors + tokenizer)", { placeholder: "DIR" }),
  servedModelName: flag(z.string().min(1).optional(), "model name clients ask for (default: the checkpoint directory's name)", { placeholder: "NAME" }),
  loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights of its config", { placeholder: "FORMAT" }),
  dummySeed: flag(parse.int({ min: 0 }).default(0), "seed of dummy weights", { placeholder: "N" }),
  backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
  threads: flag(parse.int({ min: 0 }).default(0), "CPU threads for the cpu backend (0: all cores)", { placeholder: "N" }),
  ...NATS_FLAGS,
  namespace: name("deployment namespace (NATS subject prefix)", "default"),
  deployment: name("deployment name (NATS subject prefix)", "local"),
  group: name("worker group", "g0"),
  rank: flag(parse.int({ min: 0 }).optional(), "rank within the group (default: pod index × ranks per pod + local rank)", { placeholder: "N" }),
  podIndex: flag(parse.int({ min: 0 }).default(0), "this pod's ordinal in its group (the operator sets it from the StatefulSet pod index)", { placeholder: "N" }),
  ranksPerPod: flag(parse.int({ min: 1, max: 64 }).default(1), "ranks (processes, GPUs) per pod", { placeholder: "N" }),
  localRank: flag(parse.int({ min: 0 }).optional(), "this process's rank within its pod (absent with --ranks-per-pod > 1: this process supervises one rank process per GPU)", { placeholder: "N" }),
  worldSize: flag(parse.int({ min: 1, max: 1024 }).default(1), "ranks in the expert-parallel group (1: no group)", { placeholder: "N" }),
  leaderAddress: flag(LeaderAddress.optional(), "host:port or [ipv6]:port of rank 0's rendezvous endpoint (required when --world-size > 1)", { placeholder: "ADDR" }),
  shardPlan: flag(z.string().min(1).optional(), "shard plan JSON: routed expert → ranks (default: contiguous, no replicas)", { placeholder: "FILE" }),
  collectiveTimeoutMs: flag(parse.int({ min: 100 }).default(30_000), "a group collective not finished in this time fails the whole group", { placeholder: "MS" }),
  rendezvousTimeoutS: flag(parse.int({ min: 1 }).default(600), "how long loading waits for every rank of the group", { placeholder: "S" }),
  groupIdleTickMs: flag(parse.int({ min: 1, max: 1000 }).default(5), "with a group: idle ranks step an empty batch this often (heartbeat; bounds the wake-up delay)", { placeholder: "MS" }),
  workerId: flag(SubjectToken.optional(), "unique id of this rank (default: <group>-<rank>)", { placeholder: "ID" }),
  maxSlots: flag(parse.int({ min: 1, max: 4096 }).default(16), "sequences running at once (state slots)", { placeholder: "N" }),
  maxContextTokens: flag(parse.int({ min: 1 }).default(4096), "prompt + output tokens per sequence at most (capped by the model)", { placeholder: "N" }),
  kvBlockSize: flag(parse.int({ min: 1, max: 1024 }).default(16), "tokens per KV-cache block", { placeholder: "N" }),
  numKvBlocks: flag(parse.int({ min: 0 }).default(0), "KV-cache blocks (0: enough for every slot at full context)", { placeholder: "N" }),
  stepTokenBudget: flag(parse.int({ min: 1 }).default(512), "tokens per engine step at most (chunked prefill budget)", { placeholder: "N" }),
  mtpMaxDraftTokens: flag(parse.int({ min: 0, max: 16 }).default(0), "MTP speculation: drafts per sequence per step at most, the depth chosen each step from batch size, measured step times and acceptance (0: off; needs a checkpoint with MTP layers)", { placeholder: "N" }),
  maxWaiting: flag(parse.int({ min: 0 }).default(256), "waiting sequences beyond which requests are refused (queue_full)", { placeholder: "N" }),
  reportIntervalMs: flag(parse.int({ min: 20, max: 5000 }).default(250), "load report period", { placeholder: "MS" }),
  opsHost: flag(z.string().default("0.0.0.0"), "address of the ops HTTP and gRPC ports", { placeholder: "ADDR" }),
  httpPort: flag(parse.int({ min: 0, max: 65535 }).default(9100), "ops HTTP port: /metrics /healthz /readyz (0: any free port)", { placeholder: "N" }),
  grpcPort: flag(parse.int({ min: 0, max: 65535 }).default(9101), "gRPC admin port: health, Drain, Stats (0: any free port)", { placeholder: "N" }),
  drainTimeoutS: flag(parse.int({ min: 0 }).default(600), "on SIGTERM, seconds to finish accepted work before exiting anyway", { placeholder: "S" }),
};

export type WorkerConfig = ParsedFlags<typeof WORKER_FLAGS> & CommonFlags;

/** This process's rank in its group: --rank, else pod index × ranks per pod + local rank (0 when absent). */
export function workerRank(cfg: Pick<WorkerConfig, "rank" | "podIndex" | "ranksPerPod" | "localRank">): number {
  return cfg.rank ?? cfg.podIndex * cfg.ranksPerPod + (cfg.localRank ?? 0);
}

/** This process supervises its pod's rank processes: several ranks per pod and neither --rank nor --local-rank. */
export function isPodSupervisor(cfg: Pick<WorkerConfig, "rank" | "ranksPerPod" | "localRank">): boolean {
  return cfg.ranksPerPod > 1 && cfg.localRank === undefined && cfg.rank === undefined;
}
