import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect, type NatsConnection } from "nats";
import { AckError, AckInbox } from "../../router/ack-inbox.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "resolved";
  } catch (err) {
    return err instanceof AckError ? err.reason : `unexpected ${String(err)}`;
  }
}

describe("router ack inbox (request/reply without per-request stack captures)", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  before(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    await nc.close();
    await nats.stop();
  });

  it("resolves each request with its own reply, also when many are in flight", async () => {
    const rank = await connect({ servers: nats.url });
    rank.subscribe("rank.echo", { callback: (_e, m) => m.respond(bytes(`ack:${text(m.data)}`)) });
    await rank.flush();
    const acks = new AckInbox(nc);
    acks.start();
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => acks.request("rank.echo", bytes(String(i)), 2000)));
    assert.deepEqual(replies.map((m) => text(m.data)), Array.from({ length: 50 }, (_, i) => `ack:${i}`));
    acks.stop();
    await rank.close();
  });

  it("rejects with no_responders at once when nothing subscribes to the subject", async () => {
    const acks = new AckInbox(nc);
    acks.start();
    const t0 = performance.now();
    assert.equal(await reason(acks.request("rank.nobody", bytes("x"), 5000)), "no_responders");
    assert.ok(performance.now() - t0 < 1000, "long before the timeout");
    acks.stop();
  });

  it("rejects with timeout when the subscriber never answers", async () => {
    const rank = await connect({ servers: nats.url });
    rank.subscribe("rank.silent", { callback: () => undefined });
    await rank.flush();
    const acks = new AckInbox(nc);
    acks.start();
    assert.equal(await reason(acks.request("rank.silent", bytes("x"), 100)), "timeout");
    acks.stop();
    await rank.close();
  });

  it("stop() rejects what is still pending with closed", async () => {
    const rank = await connect({ servers: nats.url });
    rank.subscribe("rank.slow", { callback: () => undefined });
    await rank.flush();
    const acks = new AckInbox(nc);
    acks.start();
    const pending = reason(acks.request("rank.slow", bytes("x"), 5000));
    acks.stop();
    assert.equal(await pending, "closed");
    await rank.close();
  });
});
