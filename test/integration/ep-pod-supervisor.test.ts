/**
 * Pods of several ranks: `latentmesh worker --ranks-per-pod 2` with no local rank supervises one
 * rank process per GPU. Two such pods form a 4-rank expert-parallel group on a real nats-server;
 * each rank process has its own GPU, global rank and ops ports, serves a lone worker's greedy
 * tokens, SIGTERM to one pod drains the whole group (both pods exit 0), and a rank that dies fails
 * its pod fast (exit 1 with a line naming the rank) and with it the group; a supervisor killed
 * outright (SIGKILL) leaves no rank behind: they finish their accepted work and exit.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { connect, type NatsConnection } from "nats";
import type { CliProcess, LogLine } from "../support/proc-cli.js";
import { freePort, startNatsServer, type NatsServer } from "../support/nats-server.js";
import { place, startWorker } from "./ep-rank-client.js";

const PROMPT = [5, 17, 300, 42, 9, 77];
const TOKENS = 24;

/** A base port with `n` consecutive free ports on loopback. */
async function freePortRun(n: number): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    if (base + n > 65535) continue;
    let ok = true;
    for (let p = base; ok && p < base + n; p++) ok = await free(p);
    if (ok) return base;
  }
  throw new Error(`no run of ${n} free ports`);
}

interface PodRankInfo {
  readonly rank: number;
  readonly localRank: number;
  readonly pid: number;
  readonly device: string;
  readonly httpPort: number;
  readonly grpcPort: number;
}

function startPod(nats: NatsServer, group: string, podIndex: number, leader: string, extra: readonly string[] = []): CliProcess {
  return startWorker(`${group} pod ${podIndex}`, nats, [
    "--group", group, "--ranks-per-pod", "2", "--pod-index", String(podIndex), "--world-size", "4", "--leader-address", leader, "--collective-timeout-ms", "3000", ...extra,
  ]);
}

/** Waits until both ranks of `pod` are ready; returns what the supervisor reported about them. */
async function podReady(pod: CliProcess): Promise<PodRankInfo[]> {
  const started = await pod.waitForLog((l) => l.msg === "pod ranks started", 30_000);
  await pod.waitFor(() => (pod.lines.filter((l) => l.msg === "worker ready").length >= 2 ? true : undefined), "two ready ranks", 60_000);
  return started.ranks as PodRankInfo[];
}

function environOf(pid: number): Map<string, string> {
  const env = new Map<string, string>();
  for (const kv of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
    const i = kv.indexOf("=");
    if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1));
  }
  return env;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe("worker pods with several ranks", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let lone: number[];
  const procs: CliProcess[] = [];

  before(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    const w = startWorker("lone", nats, ["--group", "lone"]);
    procs.push(w);
    await w.waitForLog((l) => l.msg === "worker ready", 60_000);
    lone = (await (await place(nc, "lone-0", "lone", PROMPT, TOKENS)).done).tokens;
    assert.equal(lone.length, TOKENS);
    assert.equal((await w.stop("SIGTERM")).code, 0);
  });
  after(async () => {
    await nc?.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    await nats?.stop();
  });

  it("two pods of two rank processes form a 4-rank group: own GPU, rank and ports per process, the lone worker's tokens on every rank; SIGTERM to one pod drains both, exit 0", async () => {
    const leader = `127.0.0.1:${await freePort()}`;
    const base = await freePortRun(4);
    const pods = [startPod(nats, "p", 0, leader, ["--http-port", String(base), "--grpc-port", String(base + 1)]), startPod(nats, "p", 1, leader)];
    procs.push(...pods);
    const infos = await Promise.all(pods.map(podReady));

    assert.deepEqual(infos.map((ranks) => ranks.map((r) => [r.rank, r.localRank, r.device])), [[[0, 0, "0"], [1, 1, "1"]], [[2, 0, "0"], [3, 1, "1"]]]);
    assert.deepEqual(infos[0]?.map((r) => [r.httpPort, r.grpcPort]), [[base, base + 1], [base + 2, base + 3]]);
    for (const r of infos.flat()) {
      const env = environOf(r.pid);
      assert.equal(env.get("CUDA_VISIBLE_DEVICES"), String(r.localRank), `rank ${r.rank}`);
      assert.equal(env.get("LATENTMESH_LOCAL_RANK"), String(r.localRank), `rank ${r.rank}`);
    }
    // the second rank process of pod 0 serves its own ops port
    const metrics = await (await fetch(`http://127.0.0.1:${base + 2}/metrics`)).text();
    assert.match(metrics, /worker_id="p-1"/);

    const placed = await Promise.all([0, 1, 2, 3].map((r) => place(nc, `p-${r}`, `p-${r}`, PROMPT, TOKENS)));
    for (const p of placed) assert.equal(p.ack.type, "accepted", JSON.stringify(p.ack));
    const outs = await Promise.all(placed.map((p) => p.done));
    for (const o of outs) assert.deepEqual(o.tokens, lone);

    // requests in flight on every rank, then SIGTERM to pod 1 only
    const running = await Promise.all([0, 1, 2, 3].map((r) => place(nc, `p-${r}`, `p-run-${r}`, PROMPT, 300)));
    await Promise.all(running.map((p) => p.firstToken));
    pods[1]?.proc.kill("SIGTERM");
    const ends = await withTimeout(Promise.all(running.map((p) => p.done)), 30_000, "requests still running");
    for (const e of ends) assert.equal(e.tokens.length, 300, JSON.stringify(e.final));
    const exits = await withTimeout(Promise.all(pods.map((p) => p.exited)), 30_000, "pods still running");
    assert.deepEqual(exits.map((e) => e.code), [0, 0], pods.map((p) => p.rawErr.join("\n")).join("\n"));
    for (const p of pods) assert.equal(p.lines.filter((l) => l.msg === "worker stopped").length, 2, `${p.name}: both ranks stop in order`);
  });

  it("a rank process that dies fails its pod at once (exit 1, one line naming the rank and its status) and the group with it", async () => {
    const leader = `127.0.0.1:${await freePort()}`;
    const pods = [startPod(nats, "q", 0, leader), startPod(nats, "q", 1, leader)];
    procs.push(...pods);
    const infos = await Promise.all(pods.map(podReady));
    const victim = infos[1]?.[1] as PodRankInfo;
    assert.equal(victim.rank, 3);
    const t0 = performance.now();
    process.kill(victim.pid, "SIGKILL");

    const exits = await withTimeout(Promise.all(pods.map((p) => p.exited)), 20_000, "pods still running");
    assert.deepEqual(exits.map((e) => e.code), [1, 1]);
    assert.ok(performance.now() - t0 < 15_000);
    const fatal = (pods[1] as CliProcess).lines.filter((l: LogLine) => l.level === 60 && l.name === "worker-pod");
    assert.equal(fatal.length, 1, JSON.stringify(fatal));
    assert.match(fatal[0]?.msg ?? "", /^rank 3 \(local rank 1\) was killed by SIGKILL; stopping the pod/);
    // pod 0's ranks lose their peer: its supervisor names the first of them to fail
    const other = (pods[0] as CliProcess).lines.find((l) => l.level === 60 && l.name === "worker-pod");
    assert.match(other?.msg ?? "", /^rank [01] \(local rank [01]\) exited with status 1; stopping the pod/);
    for (const r of infos.flat()) assert.throws(() => process.kill(r.pid, 0), `rank ${r.rank} (pid ${r.pid}) is still running`);
  });

  it("a supervisor killed with SIGKILL leaves no rank behind: its ranks see the pipe close, finish accepted work and exit", async () => {
    const leader = `127.0.0.1:${await freePort()}`;
    const pod = startWorker("k pod 0", nats, ["--group", "k", "--ranks-per-pod", "2", "--pod-index", "0", "--world-size", "2", "--leader-address", leader, "--collective-timeout-ms", "3000"]);
    procs.push(pod);
    const ranks = await podReady(pod);
    const running = await Promise.all([0, 1].map((r) => place(nc, `k-${r}`, `k-run-${r}`, PROMPT, 200)));
    await Promise.all(running.map((p) => p.firstToken));
    pod.proc.kill("SIGKILL");
    const ends = await withTimeout(Promise.all(running.map((p) => p.done)), 30_000, "accepted requests lost");
    for (const e of ends) assert.equal(e.tokens.length, 200, JSON.stringify(e.final));
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await withTimeout(
      (async () => {
        while (ranks.some((r) => alive(r.pid))) await new Promise((r) => setTimeout(r, 100));
      })(),
      30_000,
      `ranks ${ranks.filter((r) => alive(r.pid)).map((r) => r.pid).join(", ")} still running`,
    );
    assert.ok(pod.rawErr.join("\n").includes("the pod supervisor is gone"), pod.rawErr.join("\n"));
  });
});
