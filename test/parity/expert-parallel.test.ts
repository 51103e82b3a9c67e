/**
 * Expert parallelism on the CPU backend: `latentmesh logits --ranks N` (N rank processes on
 * loopback, routed experts sharded across them) must give the single-process engine's logits on
 * every parity fixture — relative L2 ≤ 1e-4 and the same argmax at every prefill position and
 * decode step; in fact bit for bit, because the combine adds expert outputs in the single-process
 * order. The other ranks run uneven batches: their own prompts of other lengths, or nothing.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { compareRows, readF32 } from "../support/logits.js";
import { CLI, FIXTURES } from "../support/paths.js";

const TOLERANCE = 1e-4;


function logits(args: string[]): void {
  const r = spawnSync(process.execPath, [CLI, "logits", "--log-level", "warn", ...args], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
}

/** Asserts two logits directories agree: within tolerance, same argmax, and bit for bit. */
function assertSameLogits(got: string, want: string, vocab: number, what: string): void {
  for (const file of ["prefill_logits.f32", "decode_logits.f32"]) {
    const g = readF32(join(got, file)), w = readF32(join(want, file));
    const c = compareRows(g, w, vocab);
    assert.ok(c.worst <= TOLERANCE, `${what} ${file}: rel L2 ${c.worst.toExponential(2)}`);
    assert.deepEqual(c.argmaxMismatches, [], `${what} ${file}: argmax differs at these rows`);
    assert.ok(Buffer.from(g.buffer, g.byteOffset, g.byteLength).equals(Buffer.from(w.buffer, w.byteOffset, w.byteLength)), `${what} ${file}: not bit-identical`);
  }
}

const fixtures = existsSync(FIXTURES) ? readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, "reference", "prefill_logits.f32"))).sort() : [];

/** Per fixture: the other ranks' prompts ('' = a rank with no sequence), uneven on purpose. */
const GROUPS: { ranks: number; peers: string[] }[] = [
  { ranks: 2, peers: [""] },
  { ranks: 2, peers: ["3,1,4,1,5,9,2,6,5,3,5"] },
  { ranks: 4, peers: ["7,8", "", "11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30"] },
];

describe("expert parallelism: N-rank CPU groups match the single-process engine", () => {
  it("fixtures exist", () => assert.ok(fixtures.length >= 3));

  for (const name of fixtures) {
    it(`${name}: 2- and 4-rank groups (one with an empty rank) give the single-process logits, prefill and decode, on every rank`, () => {
      const dir = join(FIXTURES, name);
      const prompt = (JSON.parse(readFileSync(join(dir, "reference", "prompt_ids.json"), "utf8")) as number[]).join(",");
      const feed = (JSON.parse(readFileSync(join(dir, "reference", "feed_ids.json"), "utf8")) as number[]).join(",");
      const vocab = (JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
      const tmp = mkdtempSync(join(tmpdir(), `lm-ep-${name}-`));
      const single = join(tmp, "single");
      logits(["--model", dir, "--prompt-ids", prompt, "--feed", feed, "--out", single]);
      for (const [g, { ranks, peers }] of GROUPS.entries()) {
        const out = join(tmp, `group-${g}`);
        logits(["--model", dir, "--prompt-ids", prompt, "--feed", feed, "--out", out, "--ranks", String(ranks), "--peer-prompt-ids", peers.join(";"), "--peer-decode", String(2 + g)]);
        assertSameLogits(out, single, vocab, `${ranks} ranks (peers ${JSON.stringify(peers)}), rank 0`);
        peers.forEach((p, i) => {
          if (!p) return;
          const alone = join(tmp, `peer-${g}-${i}`);
          logits(["--model", dir, "--prompt-ids", p, "--decode", String(2 + g), "--out", alone]);
          assertSameLogits(join(out, `rank-${i + 1}`), alone, vocab, `${ranks} ranks, rank ${i + 1}`);
        });
      }
    });
  }

  it("a shard plan with redundant copies of hot experts (4 ranks) gives the same logits", () => {
    const dir = join(FIXTURES, "nh-bf16-latent-sharded"); // 16 experts
    const prompt = (JSON.parse(readFileSync(join(dir, "reference", "prompt_ids.json"), "utf8")) as number[]).join(",");
    const feed = (JSON.parse(readFileSync(join(dir, "reference", "feed_ids.json"), "utf8")) as number[]).join(",");
    const tmp = mkdtempSync(join(tmpdir(), "lm-ep-plan-"));
    const plan = join(tmp, "plan.json");
    writeFileSync(plan, JSON.stringify({ version: 1, worldSize: 4, numExperts: 16, layout: "contiguous", redundantSlotsPerRank: 2, replicas: [{ expert: 0, ranks: [1, 2, 3] }, { expert: 13, ranks: [0, 1] }, { expert: 6, ranks: [3] }] }));
    const vocab = (JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
    const single = join(tmp, "single"), out = join(tmp, "group");
    logits(["--model", dir, "--prompt-ids", prompt, "--feed", feed, "--out", single]);
    logits(["--model", dir, "--prompt-ids", prompt, "--feed", feed, "--out", out, "--ranks", "4", "--shard-plan", plan, "--peer-prompt-ids", "9,9,9;1,2;"]);
    assertSameLogits(out, single, vocab, "4 ranks with replicas");
  });
});
