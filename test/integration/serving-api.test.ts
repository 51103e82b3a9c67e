import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { APIError } from "openai";
import { MODEL, startStack, type Stack } from "../support/proc-stack.js";

const user = (content: string) => [{ role: "user" as const, content }];

async function post(stack: Stack, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${stack.baseUrl}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

function assertOpenAIError(r: { status: number; json: Record<string, unknown> }, status: number, code: string) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  const e = r.json.error as Record<string, unknown>;
  assert.equal(typeof e.message, "string");
  assert.equal(typeof e.type, "string");
  assert.ok("param" in e);
  assert.equal(e.code, code);
}

describe("serving API (router + 2 workers + nats-server)", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ workers: 2, workerArgs: ["--log-level", "debug"] });
  });
  after(async () => {
    await stack?.stop();
  });

  it("GET /v1/models lists the served model", async () => {
    const models = await stack.client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      [MODEL],
    );
  });

  it("a non-streaming chat completion returns text, a finish reason and usage", async () => {
    const r = await stack.client.chat.completions.create({ model: MODEL, messages: user("hello"), max_tokens: 12, temperature: 0 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0]?.message.role, "assistant");
    assert.equal(typeof r.choices[0]?.message.content, "string");
    assert.ok(["stop", "length"].includes(r.choices[0]?.finish_reason ?? ""));
    assert.ok((r.usage?.prompt_tokens ?? 0) > 0);
    assert.ok((r.usage?.completion_tokens ?? 0) >= 1 && (r.usage?.completion_tokens ?? 0) <= 12);
    assert.equal(r.usage?.total_tokens, (r.usage?.prompt_tokens ?? 0) + (r.usage?.completion_tokens ?? 0));
  });

  it("max_completion_tokens bounds the output exactly when eos is ignored", async () => {
    const r = await stack.client.chat.completions.create({ model: MODEL, messages: user("count"), max_completion_tokens: 7, ignore_eos: true } as never);
    assert.equal((r as { usage?: { completion_tokens: number } }).usage?.completion_tokens, 7);
    assert.equal((r as { choices: { finish_reason: string }[] }).choices[0]?.finish_reason, "length");
  });

  it("a streamed chat completion sends a role delta, content deltas, a finish chunk and a usage chunk", async () => {
    const stream = await stack.client.chat.completions.create({ model: MODEL, messages: user("hi"), max_tokens: 10, stream: true, stream_options: { include_usage: true }, temperature: 0 });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks[0]?.choices[0]?.delta.role, "assistant");
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finish.length, 1);
    const last = chunks.at(-1);
    assert.deepEqual(last?.choices, []);
    assert.ok((last?.usage?.completion_tokens ?? 0) >= 1);
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    const whole = await stack.client.chat.completions.create({ model: MODEL, messages: user("hi"), max_tokens: 10, temperature: 0 });
    assert.equal(text, whole.choices[0]?.message.content, "streamed text equals the non-streamed text (greedy)");
  });

  it("a completion (non-streaming and streaming) agrees greedily and reports usage", async () => {
    const whole = await stack.client.completions.create({ model: MODEL, prompt: "The sky is", max_tokens: 16, temperature: 0 });
    assert.equal(whole.object, "text_completion");
    const stream = await stack.client.completions.create({ model: MODEL, prompt: "The sky is", max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: { completion_tokens: number } | null | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.text ?? "";
      if (c.usage) usage = c.usage;
    }
    assert.equal(text, whole.choices[0]?.text);
    assert.equal(usage?.completion_tokens, whole.usage?.completion_tokens);
  });

  it("a seeded sampled request is reproducible, and n choices differ by seed", async () => {
    const ask = () => stack.client.completions.create({ model: MODEL, prompt: "Once upon a time", max_tokens: 24, temperature: 1, top_p: 0.95, seed: 1234, ignore_eos: true } as never);
    const [a, b] = await Promise.all([ask(), ask()]);
    assert.equal((a as { choices: { text: string }[] }).choices[0]?.text, (b as { choices: { text: string }[] }).choices[0]?.text);
    const two = await stack.client.completions.create({ model: MODEL, prompt: "Once upon a time", max_tokens: 24, temperature: 1, seed: 7, n: 2, ignore_eos: true } as never);
    const texts = (two as { choices: { index: number; text: string }[] }).choices;
    assert.deepEqual(texts.map((c) => c.index), [0, 1]);
    assert.notEqual(texts[0]?.text, texts[1]?.text);
    assert.equal((two as { usage: { completion_tokens: number } }).usage.completion_tokens, 48);
  });

  it("stop strings are cut exactly and never leak, streamed or not", async () => {
    const base = await stack.client.completions.create({ model: MODEL, prompt: "abc", max_tokens: 40, temperature: 0, ignore_eos: true } as never);
    const full = (base as { choices: { text: string }[] }).choices[0]?.text ?? "";
    // a stop string from the middle of the greedy output, spanning whatever tokens it spans
    const start = Math.floor(full.length / 2);
    const stop = full.slice(start, start + 3);
    assert.ok(stop.length === 3, `greedy output too short: ${JSON.stringify(full)}`);
    const expected = full.slice(0, full.indexOf(stop));
    const cut = await stack.client.completions.create({ model: MODEL, prompt: "abc", max_tokens: 40, temperature: 0, ignore_eos: true, stop: [stop] } as never);
    const c0 = (cut as { choices: { text: string; finish_reason: string }[] }).choices[0];
    assert.equal(c0?.text, expected);
    assert.equal(c0?.finish_reason, "stop");
    const stream = await stack.client.completions.create({ model: MODEL, prompt: "abc", max_tokens: 40, temperature: 0, ignore_eos: true, stop, stream: true } as never);
    let text = "";
    let finish: string | null | undefined;
    for await (const c of stream as unknown as AsyncIterable<{ choices: { text: string; finish_reason: string | null }[] }>) {
      text += c.choices[0]?.text ?? "";
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, expected);
    assert.equal(finish, "stop");
  });

  it("32 concurrent requests all complete with their own usage", async () => {
    const rs = await Promise.all(
      Array.from({ length: 32 }, (_, i) => stack.client.chat.completions.create({ model: MODEL, messages: user(`request ${i}`), max_tokens: 16, ignore_eos: true, seed: i } as never)),
    );
    for (const r of rs as unknown as { usage: { completion_tokens: number }; choices: unknown[] }[]) {
      assert.equal(r.usage.completion_tokens, 16);
      assert.equal(r.choices.length, 1);
    }
  });

  it("x-latentmesh-slo-ms is placed against the prediction and reported in x-latentmesh-slo", async () => {
    // a day is longer than any prediction for 8 tokens; 0.5 ms is below the router's 1 ms floor on a step
    const roomy = await stack.client.chat.completions.create({ model: MODEL, messages: user("slo"), max_tokens: 8 }, { headers: { "x-latentmesh-slo-ms": "86400000" } }).withResponse();
    assert.equal(roomy.response.headers.get("x-latentmesh-slo"), "on-track");
    const tight = await stack.client.chat.completions.create({ model: MODEL, messages: user("slo"), max_tokens: 8, stream: true }, { headers: { "x-latentmesh-slo-ms": "0.5" } }).withResponse();
    assert.equal(tight.response.headers.get("x-latentmesh-slo"), "at-risk");
    let chunks = 0;
    for await (const _c of tight.data) chunks++;
    assert.ok(chunks > 0, "a request predicted to miss its SLO is still served");
    const none = await stack.client.chat.completions.create({ model: MODEL, messages: user("slo"), max_tokens: 4 }).withResponse();
    assert.equal(none.response.headers.get("x-latentmesh-slo"), null);
  });

  it("a client abort cancels the sequence on its worker", async () => {
    const ac = new AbortController();
    const { data: stream, response } = await stack.client.chat.completions
      .create({ model: MODEL, messages: user("go on forever"), max_tokens: 3500, ignore_eos: true, stream: true } as never, { signal: ac.signal })
      .withResponse();
    const requestId = response.headers.get("x-request-id");
    let n = 0;
    try {
      for await (const _c of stream as unknown as AsyncIterable<unknown>) if (++n === 3) ac.abort();
    } catch {
      // an aborted stream may end by throwing or by ending
    }
    assert.ok(n < 3500, "the stream ended early");
    assert.ok(requestId);
    const cancelled = (w: (typeof stack.workers)[number]) => w.lines.find((l) => l.msg === "finished" && l.how === "cancelled" && l.requestId === requestId);
    await Promise.race(stack.workers.map((w) => w.waitFor(() => cancelled(w), "cancel on the worker", 10_000)));
  });

  describe("bad input is a 4xx with an OpenAI error body, and the router stays up", () => {
    const chat = (o: Record<string, unknown>) => ({ model: MODEL, messages: user("x"), ...o });
    const cases: { name: string; path?: string; body: unknown; headers?: Record<string, string>; status: number; code: string; param?: string }[] = [
      { name: "a body that is not JSON", body: "{not json", status: 400, code: "invalid_request" },
      { name: "messages missing", body: { model: MODEL }, status: 400, code: "invalid_request", param: "messages" },
      { name: "an empty messages list", body: chat({ messages: [] }), status: 400, code: "invalid_request", param: "messages" },
      { name: "an unknown role", body: chat({ messages: [{ role: "wizard", content: "x" }] }), status: 400, code: "invalid_request", param: "messages.0.role" },
      { name: "temperature out of range", body: chat({ temperature: 3 }), status: 400, code: "invalid_request", param: "temperature" },
      { name: "top_p of zero", body: chat({ top_p: 0 }), status: 400, code: "invalid_request", param: "top_p" },
      { name: "max_tokens of the wrong type", body: chat({ max_tokens: "ten" }), status: 400, code: "invalid_request", param: "max_tokens" },
      { name: "n above the limit", body: chat({ n: 99 }), status: 400, code: "invalid_request", param: "n" },
      { name: "an unknown model", body: chat({ model: "gpt-17" }), status: 404, code: "model_not_found", param: "model" },
      { name: "max_tokens beyond the context length", body: chat({ max_tokens: 1_000_000 }), status: 400, code: "context_length_exceeded" },
      { name: "a prompt beyond the context length", path: "/v1/completions", body: { model: MODEL, prompt: Array.from({ length: 5000 }, () => 5) }, status: 400, code: "context_length_exceeded" },
      { name: "a completion prompt of the wrong type", path: "/v1/completions", body: { model: MODEL, prompt: { text: "x" } }, status: 400, code: "invalid_request", param: "prompt" },
      { name: "an unknown route", path: "/v1/embeddings", body: {}, status: 404, code: "not_found" },
      { name: "an SLO header that is not a number of ms", body: chat({}), headers: { "x-latentmesh-slo-ms": "soon" }, status: 400, code: "invalid_request", param: "x-latentmesh-slo-ms" },
      { name: "an SLO header of zero", body: chat({}), headers: { "x-latentmesh-slo-ms": "0" }, status: 400, code: "invalid_request", param: "x-latentmesh-slo-ms" },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const r = await post(stack, c.path ?? "/v1/chat/completions", c.body, c.headers);
        assertOpenAIError(r, c.status, c.code);
        if (c.param) assert.equal((r.json.error as { param: string }).param, c.param);
      });
    }

    it("the openai client surfaces them as APIError with the status", async () => {
      await assert.rejects(stack.client.chat.completions.create({ model: "nope", messages: user("x") }), (e: unknown) => e instanceof APIError && e.status === 404);
      const health = await fetch(`${stack.baseUrl}/health`);
      assert.equal(health.status, 200);
    });
  });

  it("GET /metrics exposes the router metrics with the contract's names", async () => {
    const text = await (await fetch(`${stack.baseUrl}/metrics`)).text();
    for (const name of ["latentmesh_router_requests_total", "latentmesh_router_time_to_first_token_seconds_bucket", "latentmesh_router_inflight_requests", "latentmesh_router_output_tokens_total", "latentmesh_router_routing_overhead_seconds_bucket"]) {
      assert.match(text, new RegExp(`^${name}`, "m"), name);
    }
    assert.match(text, /latentmesh_router_requests_total\{model="tiny-chat",status="success"\} \d+/);
  });
});
