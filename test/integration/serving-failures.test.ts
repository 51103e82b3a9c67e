import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import OpenAI, { APIError } from "openai";
import { MODEL, startStack, type Stack } from "../support/proc-stack.js";

const user = (content: string) => [{ role: "user" as const, content }];
const long = { model: MODEL, messages: user("tell me everything"), max_tokens: 3000, ignore_eos: true, stream: true } as never;

/** The value of one series in Prometheus text, 0 when absent. */
async function metric(stack: Stack, series: RegExp): Promise<number> {
  const text = await (await fetch(`${stack.baseUrl}/metrics`)).text();
  const m = series.exec(text);
  return m ? Number(m[1]) : 0;
}

describe("serving failures", () => {
  const stacks: Stack[] = [];
  const track = (s: Stack) => (stacks.push(s), s);
  after(async () => {
    await Promise.all(stacks.map((s) => s.stop()));
  });

  it("worker killed mid-stream: the request completes on the other worker through migration", async () => {
    const stack = track(await startStack({ workers: 2 }));
    const { data: stream, response } = await stack.client.chat.completions.create({ ...(long as object), stream_options: { include_usage: true } } as never).withResponse();
    const serving = response.headers.get("x-latentmesh-worker-id");
    const victim = stack.workers.find((w) => w.name === `worker ${serving}`);
    assert.ok(victim, `serving worker ${serving} is one of ours`);
    let chunks = 0;
    let usage: { completion_tokens: number } | undefined;
    let finish: string | null = null;
    for await (const c of stream as unknown as AsyncIterable<{ choices: { finish_reason: string | null }[]; usage?: { completion_tokens: number } }>) {
      if (++chunks === 5) victim.proc.kill("SIGKILL");
      finish = c.choices[0]?.finish_reason ?? finish;
      if (c.usage) usage = c.usage;
    }
    assert.equal(finish, "length");
    assert.equal(usage?.completion_tokens, 3000, "every token arrives exactly once across the migration");
    assert.ok((await metric(stack, /latentmesh_router_migrations_total\{model="tiny-chat",migration_type="ongoing_request"\} (\d+)/)) >= 1);
    // the dead rank is gone from the table; new requests go to the survivor
    const r = await stack.client.chat.completions.create({ model: MODEL, messages: user("still there?"), max_tokens: 4 });
    assert.equal(r.choices.length, 1);
  });

  it("no live rank: 503 with an OpenAI error body, and 200 on /health once a worker joins", async () => {
    const stack = track(await startStack({ workers: 1 }));
    await stack.workers[0]?.stop("SIGKILL");
    const dead = await stack.router.waitForLog((l) => l.msg === "rank dead", 10_000);
    assert.equal(dead.workerId, "w0");
    await assert.rejects(stack.client.chat.completions.create({ model: MODEL, messages: user("x"), max_tokens: 2 }), (e: unknown) => e instanceof APIError && e.status === 503);
    assert.equal((await fetch(`${stack.baseUrl}/health`)).status, 503);
    await stack.addWorker("w1");
    await stack.waitForRanks(2);
    const r = await stack.client.chat.completions.create({ model: MODEL, messages: user("x"), max_tokens: 2 });
    assert.equal(r.choices.length, 1);
  });

  it("queue full: 429 with Retry-After while the router is at --max-inflight", async () => {
    const stack = track(await startStack({ workers: 1, routerArgs: ["--max-inflight", "1"] }));
    const ac = new AbortController();
    const stream = await stack.client.chat.completions.create(long, { signal: ac.signal });
    const it0 = (stream as unknown as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    await it0.next(); // the first request is in flight
    const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: MODEL, messages: user("me too"), max_tokens: 2 }) });
    assert.equal(res.status, 429);
    assert.equal(res.headers.get("retry-after"), "1");
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "queue_full");
    ac.abort();
    await it0.return?.();
  });

  it("API keys: 401 without or with a wrong key, 200 with a key from the file or the environment", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lm-keys-"));
    writeFileSync(join(dir, "keys"), "# keys\nfile-key-1\n");
    const stack = track(await startStack({ workers: 1, routerArgs: ["--api-keys-file", join(dir, "keys")], routerEnv: { LATENTMESH_API_KEYS: "env-key-1,env-key-2" }, apiKey: "file-key-1" }));
    const noKey = await fetch(`${stack.baseUrl}/v1/models`);
    assert.equal(noKey.status, 401);
    assert.equal(((await noKey.json()) as { error: { type: string } }).error.type, "authentication_error");
    const wrong = new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "nope", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof APIError && e.status === 401);
    assert.equal((await stack.client.models.list()).data[0]?.id, MODEL);
    const env = new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "env-key-2", maxRetries: 0 });
    assert.equal((await env.chat.completions.create({ model: MODEL, messages: user("x"), max_tokens: 2 })).choices.length, 1);
    assert.ok(!stack.router.lines.some((l) => JSON.stringify(l).includes("env-key") || JSON.stringify(l).includes("file-key")), "no key in the logs");
  });

  it("NATS authentication: router and worker connect with a token from the environment", async () => {
    const env = { LATENTMESH_NATS_TOKEN: "s3cret-token" };
    const stack = track(await startStack({ workers: 1, natsArgs: ["--auth", "s3cret-token"], routerEnv: env, workerEnv: env }));
    const r = await stack.client.completions.create({ model: MODEL, prompt: "hi", max_tokens: 3 });
    assert.equal(r.choices.length, 1);
    assert.ok(![...stack.router.lines, ...(stack.workers[0]?.lines ?? [])].some((l) => JSON.stringify(l).includes("s3cret")), "no token in the logs");
  });
});
