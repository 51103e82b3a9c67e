/**
 * `latentmesh up`: the whole stack on this machine — nats-server (from PATH) on a free loopback port,
 * K CPU worker processes, and the router on 127.0.0.1:N. Prints the URL once GET /health answers 200
 * (a rank is ready); Ctrl-C / SIGTERM stops every child cleanly (router, then workers, then NATS).
 * Children run in their own process groups so a terminal's Ctrl-C reaches only this process, which
 * then stops them in order.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { connect } from "node:net";
import { join, resolve } from "node:path";
import { z } from "zod";
import { LatentMeshError } from "../../contracts/errors.js";
import { defineCommand, flag, parse } from "../../core/flags.js";
import { freePort } from "../../core/net.js";
import { repoRoot } from "../../core/paths.js";

const STOP_GRACE_MS = 15_000;
const READY_TIMEOUT_MS = 180_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>, abort: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (abort.aborted) throw new LatentMeshError("cancelled", `stopped while waiting for ${what}`);
    if (Date.now() > deadline) throw new LatentMeshError("timeout", `${what} not ready after ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

const tcpOpen = (port: number) =>
  new Promise<boolean>((res) => {
    const c = connect(port, "127.0.0.1");
    c.once("connect", () => (c.destroy(), res(true)));
    c.once("error", () => res(false));
  });

const healthy = async (url: string) => {
  try {
    return (await fetch(url)).status === 200;
  } catch {
    return false;
  }
};

class Children {
  private readonly all: { name: string; proc: ChildProcess }[] = [];
  /** Aborted when any child exits on its own. */
  readonly died = new AbortController();
  private stopping = false;

  constructor() {
    process.on("exit", () => {
      for (const c of this.all) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
    });
  }

  start(name: string, cmd: string, args: string[]): ChildProcess {
    const proc = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"], detached: true });
    proc.once("error", (err) => {
      process.stderr.write(`latentmesh up: cannot start ${name}: ${err.message}\n`);
      this.died.abort(name);
    });
    proc.once("exit", (code, sig) => {
      if (this.stopping) return;
      process.stderr.write(`latentmesh up: ${name} exited (${sig ?? `code ${code}`}); stopping the stack\n`);
      this.died.abort(name);
    });
    this.all.push({ name, proc });
    return proc;
  }

  /** SIGTERM to the router, then the workers, then nats-server, each waited for (SIGKILL after a grace period). */
  async stopAll(): Promise<void> {
    this.stopping = true;
    const order = [...this.all].sort((a, b) => rank(a.name) - rank(b.name));
    for (const group of [0, 1, 2]) await Promise.all(order.filter((c) => rank(c.name) === group).map((c) => stop(c.proc)));
  }
}

const rank = (name: string) => (name === "router" ? 0 : name.startsWith("worker") ? 1 : 2);

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

export const upCommand = defineCommand({
  name: "up",
  summary: "run the whole stack locally: nats-server, CPU workers and the router",
  flags: {
    model: flag(z.string().min(1).optional(), "checkpoint directory (default: the bundled trained demo model test/fixtures/demo-chat)", { placeholder: "DIR" }),
    port: flag(parse.int({ min: 0, max: 65535 }).default(8000), "router HTTP port", { placeholder: "N" }),
    workers: flag(parse.int({ min: 1, max: 64 }).default(1), "number of worker processes", { placeholder: "K" }),
    loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights of its config", { placeholder: "FORMAT" }),
  },
  async run(flags, ctx) {
    const root = repoRoot();
    const model = resolve(flags.model ?? join(root, "test", "fixtures", "demo-chat"));
    if (!existsSync(join(model, "config.json"))) throw new LatentMeshError("invalid_config", `${model} is not a checkpoint directory (no config.json)`);
    const cli = join(root, "bin", "latentmesh");
    const children = new Children();
    const abort = AbortSignal.any([ctx.signal, children.died.signal]);
    try {
      const natsPort = await freePort();
      const natsUrl = `nats://127.0.0.1:${natsPort}`;
      children.start("nats-server", "nats-server", ["-a", "127.0.0.1", "-p", String(natsPort)]);
      await until("nats-server", 10_000, () => tcpOpen(natsPort), abort);
      const threads = Math.max(1, Math.floor(availableParallelism() / flags.workers));
      for (let i = 0; i < flags.workers; i++) {
        const args = [cli, "worker", "--model", model, "--load-format", flags.loadFormat, "--nats-url", natsUrl, "--worker-id", `w${i}`, "--group", `g${i}`];
        children.start(`worker w${i}`, process.execPath, [...args, "--ops-host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--threads", String(threads)]);
      }
      const port = flags.port || (await freePort());
      children.start("router", process.execPath, [cli, "router", "--model", model, "--nats-url", natsUrl, "--host", "127.0.0.1", "--port", String(port)]);
      const base = `http://127.0.0.1:${port}`;
      await until("the router and a worker rank", READY_TIMEOUT_MS, () => healthy(`${base}/health`), abort);
      process.stdout.write(`LatentMesh is up: ${base}/v1 (model ${model.split("/").pop()}, ${flags.workers} worker${flags.workers > 1 ? "s" : ""}, NATS ${natsUrl}); Ctrl-C stops it\n`);
      await new Promise<void>((r) => (abort.aborted ? r() : abort.addEventListener("abort", () => r(), { once: true })));
      return children.died.signal.aborted && !ctx.signal.aborted ? 1 : 0;
    } finally {
      await children.stopAll();
    }
  },
});
