/**
 * A pod of several GPU ranks (`--ranks-per-pod N` > 1 without `--rank` / `--local-rank`): this
 * process supervises one `latentmesh worker` process per GPU instead of serving itself.
 *
 * Local rank i of pod p is global rank p·N + i; it sees one GPU (CUDA_VISIBLE_DEVICES = the i-th
 * entry of the pod's list, else i) and listens on its own ops ports (`podRankPorts`). Its settings
 * are the supervisor's own, parsed once here and handed down as LATENTMESH_* variables (no command
 * line, so secrets given through the environment stay there).
 *
 * SIGTERM (or SIGINT) is forwarded to every rank as one SIGTERM (each starts the group drain; see
 * group-drain.ts) and the pod exits 0 when they all did. Ranks run in their own process group, so
 * only the supervisor gets a terminal's signals; if it exits they are killed, and if it is killed
 * outright (SIGKILL: no exit handler runs) each rank sees its stdin pipe from the supervisor close and
 * drains as on SIGTERM (`supervisorLifeline`), so no rank outlives its supervisor. A rank that exits while the pod is running fails the pod fast: a group
 * cannot run with a rank missing, so the others are stopped (SIGTERM, SIGKILL after a grace period)
 * and the pod exits 1 with one line naming the rank and its exit status. A rank exiting 0 on its own
 * means its group drained (a peer got SIGTERM): the other ranks finish at the same step, and the pod
 * exits 0 once they have.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fstatSync } from "node:fs";
import { join } from "node:path";
import { LatentMeshError } from "../contracts/errors.js";
import { rankOpsPorts } from "../contracts/model-deployment-wiring.js";
import { COMMON_FLAGS } from "../core/flags.js";
import { createLogger, type Logger } from "../core/log.js";
import { repoRoot } from "../core/paths.js";
import { WORKER_FLAGS, type WorkerConfig } from "./config.js";

/** Set in a rank's environment by its supervisor: the rank's stdin is a pipe the supervisor holds open. */
export const LIFELINE_ENV = "LATENTMESH_SUPERVISOR_LIFELINE";

/**
 * For a rank started by a pod supervisor: a signal that aborts like `signal`, and also when the
 * supervisor is gone (its end of the stdin pipe closed: the kernel closes it even after SIGKILL).
 * `release()` stops watching stdin, so the process can exit once its work is done.
 */
export function supervisorLifeline(signal: AbortSignal, env: Record<string, string | undefined>, stdin: NodeJS.ReadableStream & { destroy?(): void } = process.stdin): { signal: AbortSignal; release(): void } {
  const asked = env[LIFELINE_ENV] === "stdin";
  delete env[LIFELINE_ENV]; // for this process only: anything it starts is not a supervised rank
  // only a pipe from a supervisor is a lifeline: an inherited variable with stdin on /dev/null (which
  // ends at once) or a terminal (Ctrl-D) must not drain the worker
  if (!asked || !stdinIsPipe()) return { signal, release: () => undefined };
  const lifeline = new AbortController();
  const onAbort = () => lifeline.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  const gone = () => {
    if (lifeline.signal.aborted) return;
    process.stderr.write("latentmesh worker: the pod supervisor is gone (its pipe closed); draining\n");
    lifeline.abort("supervisor gone");
  };
  stdin.on("end", gone);
  stdin.on("close", gone);
  stdin.on("error", gone);
  stdin.on("data", () => undefined); // nothing is ever written; reading is what notices the end
  stdin.resume();
  return {
    signal: lifeline.signal,
    release() {
      signal.removeEventListener("abort", onAbort);
      stdin.off("end", gone);
      stdin.off("close", gone);
      stdin.off("error", gone);
      stdin.destroy?.();
    },
  };
}

function stdinIsPipe(): boolean {
  try {
    const st = fstatSync(0);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
}

/** After a failure (or a sibling's orderly exit), how long the other ranks get before SIGKILL. */
const STOP_GRACE_MS = 5000;

const badConfig = (message: string, param: string) => new LatentMeshError("invalid_config", message, param);

/** One rank process of a pod. */
export interface PodRank {
  readonly localRank: number;
  /** Global rank in the group: podIndex × ranksPerPod + localRank. */
  readonly rank: number;
  readonly httpPort: number;
  readonly grpcPort: number;
  /** CUDA_VISIBLE_DEVICES of the process: its one GPU. */
  readonly device: string;
  /** Its environment on top of the supervisor's (undefined: removed). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** Ops ports of local rank i (the wiring contract's rankOpsPorts: 9100/9101 → 9102/9103 for local rank 1). */
export const podRankPorts = rankOpsPorts;

/** The LATENTMESH_* variable core/flags reads for flag `key`. */
export function flagEnvName(key: string): string {
  return `LATENTMESH_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Every worker setting as the variables a child parses back to the same values (undefined: unset). */
export function configEnv(cfg: WorkerConfig): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const key of Object.keys({ ...COMMON_FLAGS, ...WORKER_FLAGS })) {
    const value = (cfg as unknown as Record<string, unknown>)[key];
    env[flagEnvName(key)] = value === undefined ? undefined : Array.isArray(value) ? value.join(",") : String(value);
  }
  return env;
}

/**
 * The rank processes of this pod (pure). `visibleDevices`: the pod's CUDA_VISIBLE_DEVICES, if set.
 * Throws invalid_config when the pod's ranks do not fit the group or its ports.
 */
export function planPodRanks(cfg: WorkerConfig, visibleDevices: string | undefined): PodRank[] {
  const n = cfg.ranksPerPod;
  const first = cfg.podIndex * n;
  if (first + n > cfg.worldSize) {
    throw badConfig(`pod ${cfg.podIndex} with ${n} ranks per pod holds ranks ${first}..${first + n - 1}, outside the group's world size ${cfg.worldSize}`, "world-size");
  }
  const devices = visibleDevices?.trim() ? visibleDevices.split(",").map((d) => d.trim()) : null;
  if (devices && devices.length < n) throw badConfig(`CUDA_VISIBLE_DEVICES lists ${devices.length} GPUs (${visibleDevices}), the pod runs ${n} ranks`, "ranks-per-pod");
  const base = configEnv(cfg);
  return Array.from({ length: n }, (_, i) => {
    const ports = podRankPorts(cfg.httpPort, cfg.grpcPort, i);
    for (const [what, port] of Object.entries(ports)) {
      if (port > 65535) throw badConfig(`local rank ${i}'s ${what === "httpPort" ? "HTTP" : "gRPC"} port would be ${port} (> 65535); choose lower --http-port / --grpc-port`, what === "httpPort" ? "http-port" : "grpc-port");
    }
    const device = devices ? (devices[i] as string) : String(i);
    return {
      localRank: i,
      rank: first + i,
      ...ports,
      device,
      env: {
        ...base,
        [flagEnvName("rank")]: undefined,
        [flagEnvName("localRank")]: String(i),
        [flagEnvName("httpPort")]: String(ports.httpPort),
        [flagEnvName("grpcPort")]: String(ports.grpcPort),
        [flagEnvName("workerId")]: cfg.workerId === undefined ? undefined : `${cfg.workerId}-${i}`,
        CUDA_VISIBLE_DEVICES: device,
      },
    };
  });
}

interface Child {
  readonly plan: PodRank;
  readonly proc: ChildProcess;
  readonly exited: Promise<ExitStatus>;
  status: ExitStatus | null;
}

interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly error?: string;
}

/**
 * Which of a pod's failed ranks (in the order they were reaped) caused the failure: the first killed by a
 * signal the supervisor did not send (`external`: a crash, the OOM killer, a kill -9), else the first.
 * Ranks whose peer vanished exit within milliseconds and can be reaped before it.
 */
export function failureCause<T extends { readonly external: boolean }>(failures: readonly T[]): T | undefined {
  return failures.find((f) => f.external) ?? failures[0];
}

function describe(s: ExitStatus): string {
  if (s.error) return `failed to start: ${s.error}`;
  return s.signal ? `was killed by ${s.signal}` : `exited with status ${s.code}`;
}

/**
 * Runs the pod's rank processes until they have all exited; resolves with the pod's exit code.
 * `env`: the environment the ranks inherit (the supervisor's).
 */
export async function runPodSupervisor(cfg: WorkerConfig, signal: AbortSignal, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  const log = createLogger({ name: "worker-pod", level: cfg.logLevel, format: cfg.logFormat }).child({ group: cfg.group, pod: cfg.podIndex });
  const plan = planPodRanks(cfg, env.CUDA_VISIBLE_DEVICES);
  const cli = join(repoRoot(), "bin", "latentmesh");
  const children = plan.map((p) => startRank(cli, p, env, log));
  // a supervisor that dies (a second SIGTERM, a crash) must not leave ranks behind
  const killAll = () => {
    for (const c of children) if (c.status === null) c.proc.kill("SIGKILL");
  };
  process.once("exit", killAll);
  log.info({ ranks: plan.map((p) => ({ rank: p.rank, localRank: p.localRank, pid: children[p.localRank]?.proc.pid, device: p.device, httpPort: p.httpPort, grpcPort: p.grpcPort })) }, "pod ranks started");

  // running → signalled (SIGTERM forwarded) or drained (a rank finished on its own: its group drained);
  // any rank exiting uncleanly makes the pod failed, whatever the state
  const pod: { state: "running" | "signalled" | "drained" | "failed" } = { state: "running" };
  let graceTimer: NodeJS.Timeout | null = null;
  const signalAll = (sig: NodeJS.Signals) => {
    for (const c of children) if (c.status === null) c.proc.kill(sig);
  };
  let sentKill = false;
  const killAfterGrace = () => {
    graceTimer ??= setTimeout(() => {
      sentKill = true;
      killAll();
    }, STOP_GRACE_MS);
  };
  // Failed ranks in the order they were reaped. Once every rank has exited the fatal line names the
  // cause: a rank killed by a signal this supervisor did not send (a crash, the OOM killer, a kill -9)
  // over ranks that exited because that peer vanished (their collectives fail within milliseconds and
  // may be reaped first).
  const failures: { readonly child: Child; readonly status: ExitStatus; readonly external: boolean }[] = [];
  const onSignal = () => {
    if (pod.state !== "running") return;
    pod.state = "signalled";
    log.info({ signal: String(signal.reason ?? "SIGTERM") }, "forwarding the signal to the pod's ranks");
    signalAll("SIGTERM");
  };
  if (signal.aborted) onSignal();
  else signal.addEventListener("abort", onSignal, { once: true });

  for (const c of children) {
    void c.exited.then((status) => {
      const clean = status.code === 0 && !status.error;
      if (!clean) failures.push({ child: c, status, external: status.signal !== null && status.signal !== "SIGTERM" && !(status.signal === "SIGKILL" && sentKill) });
      if (pod.state === "failed") return;
      if (clean) {
        if (pod.state !== "running") return;
        // its group drained (a peer was stopped): the others finish at the same step
        pod.state = "drained";
        log.info({ rank: c.plan.rank, localRank: c.plan.localRank }, "a rank finished (its group drained); waiting for the others");
        setTimeout(() => {
          signalAll("SIGTERM");
          killAfterGrace();
        }, STOP_GRACE_MS).unref();
        return;
      }
      pod.state = "failed";
      log.warn({ rank: c.plan.rank, localRank: c.plan.localRank, code: status.code, signal: status.signal }, `rank ${c.plan.rank} (local rank ${c.plan.localRank}) ${describe(status)}; stopping the pod's other ranks`);
      signalAll("SIGTERM");
      killAfterGrace();
    });
  }
  await Promise.all(children.map((c) => c.exited));
  if (graceTimer) clearTimeout(graceTimer);
  signal.removeEventListener("abort", onSignal);
  process.off("exit", killAll);
  if (pod.state === "failed") {
    const cause = failureCause(failures);
    if (cause) {
      const { child: c, status } = cause;
      log.fatal({ rank: c.plan.rank, localRank: c.plan.localRank, code: status.code, signal: status.signal }, `rank ${c.plan.rank} (local rank ${c.plan.localRank}) ${describe(status)}; stopping the pod (a group cannot run with a rank missing)`);
    }
    return 1;
  }
  log.info("pod stopped");
  return 0;
}

function startRank(cli: string, plan: PodRank, parentEnv: Readonly<Record<string, string | undefined>>, log: Logger): Child {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...parentEnv, ...plan.env })) if (v !== undefined) env[k] = v;
  env[LIFELINE_ENV] = "stdin";
  // its own process group: a terminal's Ctrl-C reaches only the supervisor, which forwards one SIGTERM
  // (a rank that got both would take the second signal as "exit now" and skip the drain); stdin is the
  // lifeline: a pipe this process holds open until it dies
  const proc = spawn(process.execPath, [cli, "worker"], { env, stdio: ["pipe", "inherit", "inherit"], detached: true });
  proc.stdin?.on("error", () => undefined); // EPIPE once the rank has exited
  const child: Child = {
    plan,
    proc,
    status: null,
    exited: new Promise((resolve) => {
      proc.once("error", (e) => {
        log.error({ err: e, rank: plan.rank }, "cannot start a rank process");
        if (proc.pid === undefined) resolve({ code: null, signal: null, error: e.message });
      });
      proc.once("exit", (code, signal) => resolve({ code, signal }));
    }),
  };
  void child.exited.then((s) => (child.status = s));
  return child;
}
