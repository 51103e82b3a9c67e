import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import OpenAI from "openai";
import { CliProcess } from "../support/proc-cli.js";

describe("latentmesh up", () => {
  let up: CliProcess | undefined;
  after(async () => {
    await up?.stop("SIGKILL");
  });

  it("starts nats-server, 2 workers and the router, prints the URL, serves, and stops every child on SIGTERM", async () => {
    up = new CliProcess("up", ["up", "--port", "0", "--workers", "2"]);
    const url = await up.waitFor(() => /LatentMesh is up: (http:\/\/\S+\/v1)/.exec(up?.stdout.join("") ?? "")?.[1], "the URL on stdout", 120_000);
    const base = url.replace(/\/v1$/, "");
    assert.equal((await fetch(`${base}/health`)).status, 200);
    const client = new OpenAI({ baseURL: url, apiKey: "none", maxRetries: 0 });
    const r = await client.chat.completions.create({ model: "demo-chat", messages: [{ role: "user", content: "hello" }], max_tokens: 8 });
    assert.equal(r.choices.length, 1);
    const { code } = await up.stop("SIGTERM", 30_000);
    assert.equal(code, 0);
    await assert.rejects(fetch(`${base}/health`), "the router is gone");
    const stopped = up.lines.filter((l) => l.msg === "worker stopped" || l.msg === "router stopped").length;
    assert.equal(stopped, 3, "both workers and the router stopped cleanly");
  });
});
