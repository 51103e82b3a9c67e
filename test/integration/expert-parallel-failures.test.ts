/**
 * Expert-parallel groups fail fast as a unit: three `latentmesh logits --rank r` processes form a
 * group on loopback and decode for ever; when one rank is killed (SIGKILL) or hangs (SIGSTOP) in
 * the middle of the run, every other rank exits non-zero with a clear error naming the group and
 * the peer, within the collective timeout — never a hang.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { freePort } from "../support/nats-server.js";
import { CLI, FIXTURES } from "../support/paths.js";

const TIMEOUT_MS = 1500;

interface Rank {
  readonly child: ChildProcess;
  stderr: string;
  readonly exited: Promise<{ code: number | null; atMs: number }>;
}

function startRank(rank: number, leader: string, out: string): Rank {
  const args = [
    CLI, "logits", "--log-format", "json", "--model", join(FIXTURES, "tiny-chat"), "--load-format", "dummy",
    "--rank", String(rank), "--world-size", "3", "--leader-address", leader, "--collective-timeout-ms", String(TIMEOUT_MS),
    // rank 1 has no sequence: the failure must reach ranks with and without work alike
    ...(rank === 1 ? [] : ["--prompt-ids", rank === 0 ? "1,2,3,4,5" : "7,8", "--decode", "100000", "--out", join(out, `r${rank}`)]),
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  const r: Rank = {
    child,
    stderr: "",
    exited: new Promise((resolve) => child.once("exit", (code) => resolve({ code, atMs: performance.now() }))),
  };
  child.stderr?.on("data", (b: Buffer) => (r.stderr += b.toString()));
  return r;
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function group(): Promise<Rank[]> {
  const leader = `127.0.0.1:${await freePort()}`;
  const out = mkdtempSync(join(tmpdir(), "lm-ep-fail-"));
  const ranks = [0, 1, 2].map((r) => startRank(r, leader, out));
  // loaded and stepping together: the rendezvous completed on every rank
  await until(() => ranks.every((r) => r.stderr.includes("engine ready")), 30_000, "the group to form");
  await new Promise((r) => setTimeout(r, 300));
  for (const r of ranks) assert.equal(r.child.exitCode, null, `a rank exited early: ${r.stderr}`);
  return ranks;
}

function lastLine(s: string): string {
  return s.trim().split("\n").at(-1) ?? "";
}

describe("expert-parallel group failures", () => {
  for (const [how, signal] of [["killed", "SIGKILL"], ["hung", "SIGSTOP"]] as const) {
    it(`a rank ${how} mid-run makes every other rank exit with an error naming the group within the timeout`, async () => {
      const ranks = await group();
      const victim = ranks[1] as Rank;
      const t0 = performance.now();
      victim.child.kill(signal);
      try {
        for (const i of [0, 2]) {
          const r = ranks[i] as Rank;
          const { code, atMs } = await Promise.race([r.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`rank ${i} still running 10 s after rank 1 was ${how}:\n${r.stderr}`)), 10_000))]);
          assert.notEqual(code, 0, `rank ${i} exited 0`);
          assert.ok(atMs - t0 < TIMEOUT_MS + 3000, `rank ${i} took ${(atMs - t0).toFixed(0)} ms`);
          assert.match(lastLine(r.stderr), /expert-parallel group/, `rank ${i}: ${lastLine(r.stderr)}`);
        }
        // the first rank to notice names rank 1; the others may instead see that rank close its links
        const errors = [0, 2].map((i) => lastLine((ranks[i] as Rank).stderr));
        const blame = signal === "SIGKILL" ? /rank 1 closed its connection/ : new RegExp(`no answer from rank\\(s\\) 1 within ${TIMEOUT_MS} ms`);
        assert.ok(errors.some((e) => blame.test(e)), errors.join("\n"));
      } finally {
        for (const r of ranks) r.child.kill("SIGKILL");
      }
    });
  }
});
