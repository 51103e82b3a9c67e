/**
 * Router overhead benchmark: the latency the router adds (p50/p99) over calling a rank directly over
 * NATS, at a fixed offered rate, and the most requests/s it serves.
 *
 * The rank is an in-process echo rank speaking the wire contract (ack, then a final message with one
 * token, plus load reports), so the numbers measure the router and NATS, not the engine:
 *   direct:  bench ──NATS GenerateRequest──► echo rank ──final──► bench
 *   routed:  bench ──HTTP /v1/completions──► router process ──NATS──► echo rank ──► router ──► bench
 *
 * Usage (after `npm run build:ts`): node dist/bench/router.js [--rate 500] [--seconds 5] [--concurrency 32]
 */
import http from "node:http";
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "nats";
import { GenerateRequest, decodeMessage, encodeMessage, type LoadReport } from "../contracts/messages.js";
import { deploymentSubjects } from "../contracts/subjects.js";
import { CliProcess } from "../test/support/proc-cli.js";
import { freePort, startNatsServer } from "../test/support/nats-server.js";
import { TINY_CHAT } from "../test/support/proc-stack.js";

const { values: args } = parseArgs({ options: { rate: { type: "string", default: "500" }, seconds: { type: "string", default: "5" }, concurrency: { type: "string", default: "32" } } });
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const CONCURRENCY = Number(args.concurrency);
const subjects = deploymentSubjects("default", "local");
const WORKER = "echo0";

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

/** One direct request: GenerateRequest to the rank, resolved at its final message. */
function directClient(nc: NatsConnection): () => Promise<void> {
  const waiting = new Map<string, () => void>();
  nc.subscribe(subjects.replyWildcard("bench"), { callback: (_e, m) => waiting.get(m.subject)?.() });
  let n = 0;
  return async () => {
    const id = `d${n++}`;
    const replySubject = subjects.reply("bench", id);
    const done = new Promise<void>((r) => waiting.set(replySubject, r));
    const req = { type: "generate", requestId: id, attempt: 0, replySubject, model: "tiny-chat", promptTokens: [262, 290], maxTokens: 1, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, ignoreEos: false, stopTokenIds: [] };
    await nc.request(subjects.generate(WORKER), encodeMessage(req), { timeout: 5000 });
    await done;
    waiting.delete(replySubject);
  };
}

/** One routed request: POST /v1/completions through the router. */
function routedClient(port: number): () => Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const body = JSON.stringify({ model: "tiny-chat", prompt: "hi", max_tokens: 1, temperature: 0 });
  return () =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, path: "/v1/completions", method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end(body);
    });
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/** Open loop: `rate` requests/s for `seconds`; latencies in ms. */
async function openLoop(call: () => Promise<void>, rate: number, seconds: number): Promise<{ lat: number[]; errors: number; achieved: number }> {
  const lat: number[] = [];
  let errors = 0;
  const total = Math.round(rate * seconds);
  const start = performance.now();
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    inflight.push(call().then(() => void lat.push(performance.now() - t0), () => void errors++));
  }
  await Promise.all(inflight);
  return { lat: lat.sort((a, b) => a - b), errors, achieved: (total / (performance.now() - start)) * 1000 };
}

/** Closed loop: `concurrency` callers back to back for `seconds`; requests/s. */
async function closedLoop(call: () => Promise<void>, concurrency: number, seconds: number): Promise<number> {
  let n = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await call();
      n++;
    }
  }));
  return n / seconds;
}

async function main(): Promise<void> {
  const nats = await startNatsServer();
  const rank = await startEchoRank(nats.url);
  const port = await freePort();
  const router = new CliProcess("router", ["router", "--model", TINY_CHAT, "--nats-url", nats.url, "--port", String(port), "--log-level", process.env.BENCH_ROUTER_LOG_LEVEL ?? "info"]);
  try {
    await waitHealthy(port);
    const direct = directClient(rank);
    const routed = routedClient(port);
    for (let i = 0; i < 300; i++) await routed(); // warm up (JIT, connections)
    for (let i = 0; i < 300; i++) await direct();
    const d = await openLoop(direct, RATE, SECONDS);
    const r = await openLoop(routed, RATE, SECONDS);
    const maxRouted = await closedLoop(routed, CONCURRENCY, SECONDS);
    const maxDirect = await closedLoop(direct, CONCURRENCY, SECONDS);
    const row = (name: string, x: { lat: number[]; errors: number; achieved: number }) => `| ${name} | ${x.achieved.toFixed(0)} | ${pct(x.lat, 50).toFixed(3)} | ${pct(x.lat, 99).toFixed(3)} | ${x.errors} |`;
    const lines = [
      `router overhead, echo rank, ${RATE} req/s offered for ${SECONDS} s, node ${process.version}`,
      "",
      "| path | req/s | p50 ms | p99 ms | errors |",
      "|---|---|---|---|---|",
      row("direct: NATS → rank", d),
      row("routed: HTTP → router → NATS → rank", r),
      `| added by the router | | ${(pct(r.lat, 50) - pct(d.lat, 50)).toFixed(3)} | ${(pct(r.lat, 99) - pct(d.lat, 99)).toFixed(3)} | |`,
      `| ratio routed / direct | | ${(pct(r.lat, 50) / pct(d.lat, 50)).toFixed(2)} | ${(pct(r.lat, 99) / pct(d.lat, 99)).toFixed(2)} | |`,
      "",
      `| closed loop, ${CONCURRENCY} callers | req/s |`,
      "|---|---|",
      `| direct | ${maxDirect.toFixed(0)} |`,
      `| routed | ${maxRouted.toFixed(0)} |`,
      `| ratio routed / direct | ${(maxRouted / maxDirect).toFixed(2)} |`,
    ];
    process.stdout.write(lines.join("\n") + "\n");
  } finally {
    await router.stop("SIGKILL");
    await rank.close();
    await nats.stop();
  }
}

/** Polls the router's /health until a rank is ready (the router has no event to await from outside). */
async function waitHealthy(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.status === 200, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("router not healthy after 15 s");
}

main().catch((err: unknown) => {
  process.stderr.write(`bench router: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
