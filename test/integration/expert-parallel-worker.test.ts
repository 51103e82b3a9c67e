/**
 * A worker group of two expert-parallel ranks behind the router: both ranks (each holding half of
 * tiny-chat's routed experts) serve requests in lockstep, greedy output equals a lone worker's,
 * both export per-expert token counters, and when one rank is SIGKILLed the other fails with a
 * clear error and exits non-zero (the group restarts as a unit) instead of hanging.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { freePort } from "../support/nats-server.js";
import { MODEL, startStack, type Stack } from "../support/proc-stack.js";

const PROMPT = "the quick brown fox";

describe("expert-parallel worker group", () => {
  let stack: Stack;
  let lone: string;

  before(async () => {
    stack = await startStack({ workers: 1 });
    await stack.waitForRanks(1);
    const r = await stack.client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0, ignore_eos: true } as never);
    lone = r.choices[0]?.text ?? "";
    await (stack.workers[0]?.stop("SIGTERM"));
    const leader = `127.0.0.1:${await freePort()}`;
    const group = ["--world-size", "2", "--leader-address", leader, "--collective-timeout-ms", "3000", "--group", "g1"];
    await Promise.all([stack.addWorker("r0", [...group, "--rank", "0"]), stack.addWorker("r1", [...group, "--rank", "1"])]);
    await stack.waitForRanks(3);
  });
  after(() => stack?.stop());

  it("serves requests on both ranks with the lone worker's greedy output", async () => {
    const outs = await Promise.all(Array.from({ length: 6 }, () => stack.client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0, ignore_eos: true } as never)));
    for (const o of outs) assert.equal(o.choices[0]?.text, lone);
  });

  it("exports latentmesh_worker_expert_tokens_total{layer,expert}", async () => {
    const [r0] = stack.workers.slice(-2);
    const port = r0?.lines.find((l) => l.msg === "worker ready")?.httpPort as number;
    await new Promise((r) => setTimeout(r, 300));
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const series = text.split("\n").filter((l) => l.startsWith("latentmesh_worker_expert_tokens_total{"));
    assert.ok(series.length > 0, "no expert token series");
    assert.match(series[0] ?? "", /layer="\d+",expert="\d+"/);
  });

  it("a killed rank makes the other exit non-zero with an error naming the group", async () => {
    const [r0, r1] = stack.workers.slice(-2);
    assert.ok(r0 && r1);
    await r1.stop("SIGKILL");
    const t0 = performance.now();
    const { code } = await Promise.race([r0.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error("rank 0 still running 8 s after rank 1 died")), 8000))]);
    assert.equal(code, 1);
    assert.ok(performance.now() - t0 < 8000);
    assert.ok(r0.lines.some((l) => l.msg === "expert-parallel group failed; exiting"), "no group failure log line");
  });
});
