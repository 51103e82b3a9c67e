/**
 * Coordinated group drain: two expert-parallel worker ranks on a real nats-server run requests sent
 * straight to each rank over NATS; SIGTERM to one rank (the follower, then the leader of a fresh
 * group) drains both: neither accepts new requests, every accepted request streams all its tokens,
 * and both processes exit 0 after the same final step; the peer (not the signalled rank) leaves the
 * group-drain termination message the operator reads to tell a drain from a failure.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, type NatsConnection } from "nats";
import { GROUP_DRAIN_MESSAGE } from "../../contracts/model-deployment-wiring.js";
import type { CliProcess } from "../support/proc-cli.js";
import { freePort, startNatsServer, type NatsServer } from "../support/nats-server.js";
import { place, startWorker } from "./ep-rank-client.js";

const MAX_TOKENS = 400;

function startRank(nats: NatsServer, group: string, rank: number, leader: string, terminationLog: string): CliProcess {
  return startWorker(`${group} rank ${rank}`, nats, ["--group", group, "--rank", String(rank), "--world-size", "2", "--leader-address", leader, "--collective-timeout-ms", "3000"], {
    LATENTMESH_TERMINATION_MESSAGE_PATH: terminationLog,
  });
}

describe("expert-parallel group drain", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  const procs: CliProcess[] = [];

  before(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    await nc?.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    await nats?.stop();
  });

  for (const victim of [1, 0]) {
    it(`SIGTERM to rank ${victim} finishes every accepted request on both ranks, refuses new ones, and both ranks exit 0`, async (t) => {
      const group = `d${victim}`;
      const leader = `127.0.0.1:${await freePort()}`;
      const dir = mkdtempSync(join(tmpdir(), "lm-drain-"));
      const logs = [0, 1].map((r) => join(dir, `termination-log-${r}`));
      for (const f of logs) writeFileSync(f, ""); // the kubelet creates the file; the worker only writes an existing one
      const ranks = [0, 1].map((r) => startRank(nats, group, r, leader, logs[r] as string));
      procs.push(...ranks);
      await Promise.all(ranks.map((p) => p.waitForLog((l) => l.msg === "worker ready", 60_000)));

      // three requests per rank, uneven prompts; all streaming before the signal
      const sent = await Promise.all(
        [0, 1].flatMap((r) => [0, 1, 2].map((i) => place(nc, `${group}-${r}`, `${group}-r${r}-${i}`, Array.from({ length: 3 + 5 * i + r }, (_, k) => ((7 * k + i + r) % 500) + 1), MAX_TOKENS))),
      );
      for (const s of sent) assert.equal(s.ack.type, "accepted", JSON.stringify(s.ack));
      await Promise.all(sent.map((s) => s.firstToken));

      const other = ranks[1 - victim] as CliProcess;
      (ranks[victim] as CliProcess).proc.kill("SIGTERM");
      const t0 = performance.now();
      const unfinished = sent.filter((s) => s.live.final === null).length;
      assert.ok(unfinished >= 4, `only ${unfinished} requests were still running at SIGTERM`);
      // the peer hears the drain and stops taking requests while the accepted ones are still running
      await other.waitForLog((l) => l.msg === "draining the expert-parallel group", 10_000);
      const late = await place(nc, `${group}-${1 - victim}`, `${group}-late`, [1, 2, 3], MAX_TOKENS);
      assert.equal(late.ack.type, "rejected");
      assert.equal(late.ack.type === "rejected" && late.ack.code, "draining");

      const outcomes = await Promise.all(sent.map((s) => s.done));
      for (const o of outcomes) {
        assert.equal(o.final?.type, "final", JSON.stringify(o.final));
        assert.equal(o.final?.type === "final" && o.final.finishReason, "length");
        assert.equal(o.tokens.length, MAX_TOKENS);
      }
      const exits = await Promise.all(ranks.map((p) => p.exited));
      t.diagnostic(`drain: ${unfinished} running at SIGTERM; group exited after ${(performance.now() - t0).toFixed(0)} ms`);
      assert.deepEqual(exits.map((e) => e.code), [0, 0], ranks.map((p) => p.rawErr.join("\n")).join("\n"));
      // both stopped after the same step, the one the leader announced
      const finals = ranks.map((p) => p.lines.find((l) => l.msg === "group drain: every rank is idle; the group stops after the final step" || l.msg === "group drain: stopping after the final step")?.final);
      assert.ok(typeof finals[0] === "number" && finals[0] === finals[1], `final steps ${JSON.stringify(finals)}`);
      for (const p of ranks) assert.ok(p.lines.some((l) => l.msg === "worker stopped"), `${p.name} did not stop in order`);
      assert.equal(readFileSync(logs[1 - victim] as string, "utf8"), GROUP_DRAIN_MESSAGE, "the peer says it left for a group drain");
      assert.equal(readFileSync(logs[victim] as string, "utf8"), "", "the signalled rank does not claim a peer's drain");
    });
  }
});
