/**
 * Every subcommand of `bin/latentmesh`, in help order. A command's module (and with it its
 * dependencies: the Kubernetes client, NATS, the tokenizer, the native addon) is imported only when
 * that command runs, so `latentmesh logits` starts fast and needs only zod and pino.
 */
import type { CommandSpec } from "../core/flags.js";

export interface CommandEntry {
  readonly name: string;
  /** One line for `latentmesh --help`; equals the command's own summary (a test keeps them equal). */
  readonly summary: string;
  load(): Promise<CommandSpec>;
}

const spec = (m: Record<string, unknown>, key: string) => m[key] as CommandSpec;

export const COMMANDS: readonly CommandEntry[] = [
  { name: "operator", summary: "Kubernetes operator: reconciles ModelDeployment objects", load: async () => spec(await import("../operator/command.js"), "operatorCommand") },
  { name: "router", summary: "OpenAI-compatible HTTP API; schedules requests onto worker ranks over NATS", load: async () => spec(await import("../router/command.js"), "routerCommand") },
  { name: "worker", summary: "one engine rank: takes requests from NATS, batches them, streams tokens back", load: async () => spec(await import("../worker/command.js"), "workerCommand") },
  { name: "up", summary: "run the whole stack locally: nats-server, CPU workers and the router", load: async () => spec(await import("./commands/up.js"), "upCommand") },
  { name: "logits", summary: "parity tool: write a checkpoint's prefill and decode logits as float32 files", load: async () => spec(await import("./commands/logits.js"), "logitsCommand") },
  { name: "generate", summary: "generate text from a checkpoint on this machine and print it as it is produced", load: async () => spec(await import("./commands/generate.js"), "generateCommand") },
  { name: "render", summary: "print, as a YAML stream, every object the operator creates for a ModelDeployment file", load: async () => spec(await import("./commands/render.js"), "renderCommand") },
  { name: "bench", summary: "run a benchmark and print a table of ratios (see bench/README.md)", load: async () => spec(await import("./commands/bench.js"), "benchCommand") },
];
