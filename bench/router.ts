/**
 * Router overhead benchmark: the latency the router adds (matched percentiles p50/p90/p99/p99.9 of
 * routed minus direct) at a fixed offered rate, and the most requests/s it serves.
 *
 * The rank is an in-process echo rank speaking the wire contract (ack, then a final message with one
 * token, plus load reports), so the numbers measure the router and NATS, not the engine:
 *   direct:  bench ──NATS GenerateRequest──► echo rank ──ack, final──► bench
 *   floor:   bench ──HTTP POST──► bench/router-floor.ts process ──NATS──► echo rank ──► … ──► bench
 *   routed:  bench ──HTTP POST──► router process ──NATS──► echo rank ──► router ──HTTP──► bench
 * The floor is a bare forwarder (no validation, tokenizer, logs or metrics): floor − direct is what
 * one more process and HTTP hop cost on this machine, routed − floor what the router's own work costs.
 *
 * Fairness: one load generator (bench/router-load.ts) drives every path open-loop at the same rate,
 * with the same NATS ack handling (router/ack-inbox.ts) on the direct path as in the router; each
 * path is warmed up at that rate first; measurement rotates short rounds of the paths (reversing
 * the order every round) so drifting background load hits all alike; the router's logs go to a file
 * (at its default level, as deployed) instead of being parsed by the load generator's process.
 *
 * Usage (after `npm run build:ts`):
 *   node dist/bench/router.js [--rate 500] [--seconds 5] [--round-s 0.5] [--warmup-s 1] [--closed-s S]
 *     [--concurrency 32] [--endpoint completions|chat] [--router-log FILE] [--router-node-args ARGS]
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { openSync, readFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "nats";
import { GenerateRequest, decodeMessage, encodeMessage, type LoadReport } from "../contracts/messages.js";
import { deploymentSubjects } from "../contracts/subjects.js";
import { AckInbox } from "../router/ack-inbox.js";
import { freePort, startNatsServer } from "../test/support/nats-server.js";
import { CLI, REPO_ROOT } from "../test/support/paths.js";
import { TINY_CHAT } from "../test/support/proc-stack.js";
import { closedLoop, emptySamples, openLoop, percentile, sortedCopy, type Call, type Samples } from "./router-load.js";

const { values: args } = parseArgs({
  options: {
    rate: { type: "string", default: "500" },
    seconds: { type: "string", default: "5" },
    "round-s": { type: "string", default: "0.5" },
    "warmup-s": { type: "string", default: "1" },
    concurrency: { type: "string", default: "32" },
    "closed-s": { type: "string" },
    endpoint: { type: "string", default: "completions" },
    "router-log": { type: "string", default: join(tmpdir(), "latentmesh-bench-router.log") },
    "router-node-args": { type: "string", default: "" },
  },
});
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const ROUND_S = Number(args["round-s"]);
const WARMUP_S = Number(args["warmup-s"]);
const CONCURRENCY = Number(args.concurrency);
const CLOSED_S = Number(args["closed-s"] ?? args.seconds);
const subjects = deploymentSubjects("default", "local");
const WORKER = "echo0";
const PERCENTILES = [50, 90, 99, 99.9] as const;

/** A rank that answers every request at once with one token. */
async function startEchoRank(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url });
  nc.subscribe(subjects.generate(WORKER), {
    callback: (_e, msg) => {
      const d = decodeMessage(GenerateRequest, msg.data, "GenerateRequest");
      if (!d.ok) return msg.respond(encodeMessage({ type: "rejected", requestId: "unknown", code: "invalid_request", message: d.error }));
      const r = d.value;
      msg.respond(encodeMessage({ type: "accepted", requestId: r.requestId, workerId: WORKER }));
      nc.publish(r.replySubject, encodeMessage({ type: "final", requestId: r.requestId, attempt: r.attempt, seq: 0, tokens: [72], finishReason: "length", usage: { promptTokens: r.promptTokens.length, completionTokens: 1 } }));
    },
  });
  let seq = 0;
  const report = (): LoadReport => ({
    type: "load", workerId: WORKER, model: "tiny-chat", group: "g0", rank: 0, seq: seq++, ready: true, draining: false, running: 0, waiting: 0,
    maxSlots: 256, freeSlots: 256, totalKvBlocks: 100000, freeKvBlocks: 100000, kvBlockSize: 16, maxContextTokens: 4096, stepTokenBudget: 4096,
    pendingPrefillTokens: 0, meanRemainingTokens: 0, stepTimeMs: 1, tokensPerSecond: 0, mtpAcceptance: 1,
  });
  const timer = setInterval(() => nc.publish(subjects.load, encodeMessage(report())), 250);
  nc.closed().then(() => clearInterval(timer), () => clearInterval(timer));
  nc.publish(subjects.load, encodeMessage(report()));
  return nc;
}

/** One direct request: GenerateRequest to the rank (request/reply ack), resolved at its final message. */
function directClient(nc: NatsConnection): Call {
  const acks = new AckInbox(nc);
  acks.start();
  const waiting = new Map<string, () => void>();
  nc.subscribe(subjects.replyWildcard("bench"), { callback: (_e, m) => waiting.get(m.subject)?.() });
  let n = 0;
  return async () => {
    const id = `d${n++}`;
    const replySubject = subjects.reply("bench", id);
    const done = new Promise<void>((r) => waiting.set(replySubject, r));
    const req = { type: "generate", requestId: id, attempt: 0, replySubject, model: "tiny-chat", promptTokens: [262, 290], maxTokens: 1, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, ignoreEos: false, stopTokenIds: [] };
    await acks.request(subjects.generate(WORKER), encodeMessage(req), 5000);
    await done;
    waiting.delete(replySubject);
  };
}

/** One HTTP request: POST /v1/completions (or /v1/chat/completions) to `port`. */
function httpClient(port: number, endpoint: string): Call {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const chat = endpoint === "chat";
  const path = chat ? "/v1/chat/completions" : "/v1/completions";
  const body = JSON.stringify(chat ? { model: "tiny-chat", messages: [{ role: "user", content: "hi" }], max_tokens: 1, temperature: 0 } : { model: "tiny-chat", prompt: "hi", max_tokens: 1, temperature: 0 });
  const headers = { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) };
  return () =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, path, method: "POST", agent, headers }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end(body);
    });
}

interface Child {
  cpuMs(): number;
  stop(): Promise<void>;
}

/** A node process (`script args`) with its output in `logFile`; stopped gracefully. */
function startNode(script: string, scriptArgs: string[], logFile: string, nodeArgs: string[]): Child {
  const out = openSync(logFile, "w");
  const proc = spawn(process.execPath, [...nodeArgs, script, ...scriptArgs], { stdio: ["ignore", out, out], env: { ...process.env, LATENTMESH_LOG_FORMAT: "json" } });
  const exited = once(proc, "exit");
  return {
    cpuMs: () => processCpuMs(proc.pid ?? 0),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM"); // graceful, so --cpu-prof and friends write their output
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** CPU time (user + system) a process has used, ms, from /proc (NaN elsewhere). */
function processCpuMs(pid: number): number {
  try {
    // fields after the parenthesised command name; utime and stime are the 12th and 13th, in clock ticks
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS_PER_S;
  } catch {
    return NaN;
  }
}
const CLOCK_TICKS_PER_S = 100;

/** Polls GET /health until it answers 200 (the router's once a rank is ready). */
async function waitHealthy(port: number, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.status === 200, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not healthy after 15 s`);
}

/** One measured path: its client, its samples, and the CPU its serving process used. */
interface Path {
  readonly name: string;
  readonly call: Call;
  readonly samples: Samples;
  readonly server: Child | null;
  cpuMs: number;
}

const ms = (x: number) => x.toFixed(3);

function report(paths: { direct: Path; floor: Path; routed: Path }, closed: { direct: number; routed: number }): string {
  const sorted = new Map(Object.values(paths).map((p) => [p, sortedCopy(p.samples.latMs)]));
  const at = (p: Path, q: number) => percentile(sorted.get(p) ?? [], q);
  const cells = (f: (q: number) => string) => PERCENTILES.map(f).join(" | ");
  const row = (p: Path) => {
    const s = p.samples;
    const cpu = p.server ? ((p.cpuMs / s.sent) * 1000).toFixed(0) : "";
    return `| ${p.name} | ${((s.sent / s.elapsedMs) * 1000).toFixed(0)} | ${s.latMs.length} | ${cells((q) => ms(at(p, q)))} | ${s.errors} | ${ms(percentile(sortedCopy(s.lagMs), 99))} | ${cpu} |`;
  };
  const diff = (name: string, a: Path, b: Path, bold = false) => `| ${name} | | | ${cells((q) => (bold ? `**${ms(at(a, q) - at(b, q))}**` : ms(at(a, q) - at(b, q))))} | | | |`;
  const ratio = (name: string, a: Path, b: Path) => `| ${name} | | | ${cells((q) => (at(a, q) / at(b, q)).toFixed(2))} | | | |`;
  const { direct, floor, routed } = paths;
  return [
    `router overhead, echo rank, ${RATE} req/s offered, ${SECONDS} s per path in rotating ${ROUND_S} s rounds after ${WARMUP_S} s warm-up, /v1/${args.endpoint === "chat" ? "chat/completions" : "completions"}, node ${process.version}`,
    "",
    `| path | req/s | samples | ${PERCENTILES.map((q) => `p${q} ms`).join(" | ")} | errors | send lag p99 ms | server CPU µs/req |`,
    `|---|---|---|${PERCENTILES.map(() => "---").join("|")}|---|---|---|`,
    row(direct),
    row(floor),
    row(routed),
    diff("**added by the router** (routed − direct)", routed, direct, true),
    diff("extra process + HTTP hop (floor − direct)", floor, direct),
    diff("router's own work (routed − floor)", routed, floor),
    ratio("ratio routed / direct", routed, direct),
    ratio("ratio floor / direct", floor, direct),
    "",
    `| closed loop, ${CONCURRENCY} callers, ${CLOSED_S} s | req/s |`,
    "|---|---|",
    `| direct | ${closed.direct.toFixed(0)} |`,
    `| routed | ${closed.routed.toFixed(0)} |`,
    `| ratio routed / direct | ${(closed.routed / closed.direct).toFixed(2)} |`,
  ].join("\n");
}

async function main(): Promise<void> {
  const nats = await startNatsServer();
  const rank = await startEchoRank(nats.url);
  const nodeArgs = args["router-node-args"].split(/\s+/).filter(Boolean);
  const routerPort = await freePort();
  const router = startNode(CLI, ["router", "--model", TINY_CHAT, "--nats-url", nats.url, "--port", String(routerPort)], args["router-log"], nodeArgs);
  const floorPort = await freePort();
  const floor = startNode(join(REPO_ROOT, "dist", "bench", "router-floor.js"), ["--nats-url", nats.url, "--port", String(floorPort)], `${args["router-log"]}.floor`, []);
  try {
    await waitHealthy(routerPort, "router");
    await waitHealthy(floorPort, "floor forwarder");
    const mk = (name: string, call: Call, server: Child | null): Path => ({ name, call, samples: emptySamples(), server, cpuMs: 0 });
    const paths = {
      direct: mk("direct: NATS → rank", directClient(rank), null),
      floor: mk("floor: HTTP → bare forwarder → NATS → rank", httpClient(floorPort, args.endpoint), floor),
      routed: mk("routed: HTTP → router → NATS → rank", httpClient(routerPort, args.endpoint), router),
    };
    const order = [paths.direct, paths.floor, paths.routed];
    for (const p of order) for (let i = 0; i < 200; i++) await p.call(); // connections, first compilations
    for (const p of order) await openLoop(p.call, RATE, WARMUP_S); // JIT tiers at the measured rate
    const rounds = Math.max(1, Math.round(SECONDS / ROUND_S));
    for (let i = 0; i < rounds; i++) {
      for (const p of i % 2 === 0 ? order : [...order].reverse()) {
        const cpu0 = p.server?.cpuMs() ?? 0;
        await openLoop(p.call, RATE, ROUND_S, p.samples);
        p.cpuMs += (p.server?.cpuMs() ?? 0) - cpu0;
      }
    }
    const closedRouted = CLOSED_S > 0 ? await closedLoop(paths.routed.call, CONCURRENCY, CLOSED_S) : NaN;
    const closedDirect = CLOSED_S > 0 ? await closedLoop(paths.direct.call, CONCURRENCY, CLOSED_S) : NaN;
    process.stdout.write(report(paths, { direct: closedDirect, routed: closedRouted }) + "\n");
  } finally {
    await router.stop();
    await floor.stop();
    await rank.close();
    await nats.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench router: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
