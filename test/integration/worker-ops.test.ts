import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { adminPackage } from "../../worker/admin-grpc.js";
import { MODEL, startStack, type Stack } from "../support/proc-stack.js";
import type { CliProcess } from "../support/proc-cli.js";

type Unary = (req: object, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void;

/** A gRPC client of the worker's admin port. */
function adminClients(port: number) {
  const pkg = adminPackage() as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    latentmesh: { worker: { v1: { Admin: grpc.ServiceClientConstructor } } };
  };
  const addr = `127.0.0.1:${port}`;
  const health = new pkg.grpc.health.v1.Health(addr, grpc.credentials.createInsecure());
  const admin = new pkg.latentmesh.worker.v1.Admin(addr, grpc.credentials.createInsecure());
  const call = (client: grpc.Client, method: string, req: object) =>
    new Promise<Record<string, unknown>>((resolve, reject) => ((client as unknown as Record<string, Unary>)[method] as Unary).call(client, req, (err, res) => (err ? reject(err) : resolve(res))));
  return { health, admin, call, close: () => (health.close(), admin.close()) };
}

const portsOf = (w: CliProcess) => {
  const ready = w.lines.find((l) => l.msg === "worker ready");
  return { http: ready?.httpPort as number, grpc: ready?.grpcPort as number };
};

describe("worker ops surface", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ workers: 1 });
  });
  after(async () => {
    await stack?.stop();
  });

  it("/metrics, /healthz and /readyz answer on the ops HTTP port with the contract's metric names", async () => {
    const w = stack.workers[0] as CliProcess;
    await stack.client.completions.create({ model: MODEL, prompt: "warm up", max_tokens: 4, ignore_eos: true } as never);
    const base = `http://127.0.0.1:${portsOf(w).http}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const name of ["latentmesh_worker_num_requests_running", "latentmesh_worker_num_requests_waiting", "latentmesh_worker_kv_cache_usage_perc", "latentmesh_worker_state_slots_usage_perc", "latentmesh_worker_time_to_first_token_seconds_bucket"]) {
      assert.match(text, new RegExp(`^${name}\\{`, "m"), name);
    }
    assert.match(text, /latentmesh_worker_generation_tokens_total\{model="tiny-chat",worker_id="w0"\} ([4-9]|\d\d+)/);
  });

  it("gRPC: grpc.health.v1 Check says SERVING, Stats reports the load, an unknown service is NOT_FOUND", async () => {
    const c = adminClients(portsOf(stack.workers[0] as CliProcess).grpc);
    try {
      assert.deepEqual(await c.call(c.health, "Check", { service: "" }), { status: "SERVING" });
      assert.deepEqual(await c.call(c.health, "Check", { service: "latentmesh.worker.v1.Admin" }), { status: "SERVING" });
      await assert.rejects(c.call(c.health, "Check", { service: "nope" }), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
      const stats = await c.call(c.admin, "Stats", {});
      assert.equal(stats.workerId, "w0");
      assert.equal(stats.model, MODEL);
      assert.equal(stats.ready, true);
      assert.equal(stats.maxSlots, 16);
    } finally {
      c.close();
    }
  });

  it("drain - gRPC Drain finishes accepted requests, stops taking new ones, and health turns NOT_SERVING", async () => {
    const w = await stack.addWorker("w-drain");
    await stack.waitForRanks(2);
    const c = adminClients(portsOf(w).grpc);
    try {
      const drained = await c.call(c.admin, "Drain", { timeoutSeconds: 30 });
      assert.equal(drained.drained, true);
      assert.deepEqual(await c.call(c.health, "Check", { service: "" }), { status: "NOT_SERVING" });
      assert.equal((await fetch(`http://127.0.0.1:${portsOf(w).http}/readyz`)).status, 503);
      // the router stops placing on a draining rank: every request lands on w0
      const rs = await Promise.all(Array.from({ length: 6 }, () => stack.client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "x" }], max_tokens: 2 }).withResponse()));
      for (const r of rs) assert.equal(r.response.headers.get("x-latentmesh-worker-id"), "w0");
    } finally {
      c.close();
    }
  });

  it("drain - SIGTERM lets an accepted request finish before the worker exits 0", async () => {
    const w = stack.workers[0] as CliProcess;
    const stream = await stack.client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "long" }], max_tokens: 2000, ignore_eos: true, stream: true, stream_options: { include_usage: true } } as never);
    let usage: { completion_tokens: number } | undefined;
    let n = 0;
    let exited: Promise<{ code: number | null }> | null = null;
    for await (const c of stream as unknown as AsyncIterable<{ usage?: { completion_tokens: number } }>) {
      if (++n === 2) exited = w.stop("SIGTERM", 30_000);
      if (c.usage) usage = c.usage;
    }
    assert.equal(usage?.completion_tokens, 2000);
    assert.equal((await exited)?.code, 0);
    assert.ok(w.lines.some((l) => l.msg === "draining"));
  });
});
