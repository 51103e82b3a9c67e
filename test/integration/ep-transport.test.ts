/**
 * The CPU transport's addressing and rendezvous: a group forms over IPv6 loopback (`[::1]:port`) and
 * through a name that resolves to both families (`localhost`) with the single-process logits; a
 * rank that died while the group was forming is replaced by its restarted process; a bad leader
 * address is refused with one line (exit 2).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CLI, FIXTURES } from "../support/paths.js";

const MODEL = join(FIXTURES, "tiny-chat");
const PROMPTS = ["1,2,3,4,5", "7,8"];

/** A free port on `host` (closed again), or null when the address family is missing. */
function freePortOn(host: string): Promise<number | null> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(null));
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

interface Run {
  readonly child: ChildProcess;
  stderr: string;
  readonly exited: Promise<number | null>;
}

function logits(args: readonly string[]): Run {
  const child = spawn(process.execPath, [CLI, "logits", "--log-format", "json", "--model", MODEL, "--decode", "3", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  const run: Run = { child, stderr: "", exited: new Promise((r) => child.once("exit", (code) => r(code))) };
  child.stderr?.on("data", (b: Buffer) => (run.stderr += b.toString()));
  return run;
}

function rank(r: number, world: number, leader: string, out: string): Run {
  return logits(["--rank", String(r), "--world-size", String(world), "--leader-address", leader, "--collective-timeout-ms", "5000", "--prompt-ids", PROMPTS[r % 2] as string, "--out", join(out, `r${r}`)]);
}

/** Exit codes of `runs` ("running" for those still running after `ms`, which are then killed). */
async function exitCodes(runs: readonly Run[], ms = 30_000): Promise<(number | null | "running")[]> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"running">((r) => (timer = setTimeout(() => r("running"), ms)));
  const codes = await Promise.all(runs.map((r) => Promise.race([r.exited, late])));
  clearTimeout(timer);
  for (const r of runs) r.child.kill("SIGKILL");
  return codes;
}

function single(out: string): Buffer {
  const r = spawnSync(process.execPath, [CLI, "logits", "--model", MODEL, "--decode", "3", "--prompt-ids", PROMPTS[0] as string, "--out", out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return Buffer.concat([readFileSync(join(out, "prefill_logits.f32")), readFileSync(join(out, "decode_logits.f32"))]);
}

function logitsOf(dir: string): Buffer {
  return Buffer.concat([readFileSync(join(dir, "prefill_logits.f32")), readFileSync(join(dir, "decode_logits.f32"))]);
}

describe("expert-parallel transport addressing", () => {
  const dir = mkdtempSync(join(tmpdir(), "lm-ep-transport-"));
  const reference = single(join(dir, "single"));

  for (const [name, host, bind] of [["IPv6 loopback", "[::1]", "::1"], ["a name with IPv4 and IPv6 addresses", "localhost", "127.0.0.1"]] as const) {
    it(`a 2-rank group forms over ${name} (${host}:port) and rank 0's logits equal one process's`, async (t) => {
      const port = await freePortOn(bind);
      if (port === null) return t.skip(`no ${bind} on this machine (ip -6 addr shows no ::1)`);
      const out = join(dir, name.replace(/\W+/g, "-"));
      const ranks = [0, 1].map((r) => rank(r, 2, `${host}:${port}`, out));
      const codes = await exitCodes(ranks);
      assert.deepEqual(codes, [0, 0], ranks.map((r) => r.stderr).join("\n"));
      assert.ok(logitsOf(join(out, "r0")).equals(reference), "rank 0's logits differ from the single process's");
    });
  }

  it("a rank that died while the group was forming is replaced by its restarted process", async () => {
    const port = await freePortOn("127.0.0.1");
    const leader = `127.0.0.1:${port}`;
    const out = join(dir, "restart");
    const r0 = rank(0, 3, leader, out);
    const first = rank(1, 3, leader, out);
    // rank 1 has said hello to the leader and waits for rank 2
    const end = performance.now() + 20_000;
    while (!first.stderr.includes("waiting for the group")) {
      assert.ok(performance.now() < end, `rank 1 never started:\n${first.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 300));
    first.child.kill("SIGKILL");
    await first.exited;
    const again = rank(1, 3, leader, out);
    const r2 = rank(2, 3, leader, out);
    const codes = await exitCodes([r0, again, r2]);
    assert.deepEqual(codes, [0, 0, 0], [r0, again, r2].map((r) => r.stderr).join("\n"));
    assert.ok(logitsOf(join(out, "r0")).equals(reference));
  });

  for (const bad of ["::1:5000", "[::1]5000", "host:99999", "[::1]:0", "nohost"]) {
    it(`a worker refuses --leader-address ${bad} with one line (exit 2)`, () => {
      const r = spawnSync(process.execPath, [CLI, "worker", "--model", MODEL, "--world-size", "2", "--leader-address", bad], { encoding: "utf8", timeout: 20_000 });
      assert.equal(r.status, 2, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0] ?? "", /leader-address.*(host:port or \[ipv6\]:port|1\.\.65535)/);
    });
  }
});
