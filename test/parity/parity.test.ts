/**
 * Engine parity: for every fixture under test/fixtures/<name>/reference/ (made by
 * scripts/make-fixtures.py with transformers on the GPU machine), `latentmesh logits` must match
 * transformers' logits: relative L2 error ≤ 1e-4 and the same argmax at every prompt position and
 * after every incrementally decoded token.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { compareRows, readF32 } from "../support/logits.js";
import { CLI, FIXTURES } from "../support/paths.js";

const TOLERANCE = 1e-4;


const fixtures = existsSync(FIXTURES) ? readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, "reference", "prefill_logits.f32"))).sort() : [];

describe("engine parity with transformers", () => {
  it("fixtures exist", () => assert.ok(fixtures.length >= 3, `found ${fixtures.length} fixtures in ${FIXTURES}`));

  for (const name of fixtures) {
    it(`${name}: prefill and incremental decode match transformers (rel L2 ≤ ${TOLERANCE}, same argmax)`, () => {
      const dir = join(FIXTURES, name);
      const prompt = JSON.parse(readFileSync(join(dir, "reference", "prompt_ids.json"), "utf8")) as number[];
      const feed = JSON.parse(readFileSync(join(dir, "reference", "feed_ids.json"), "utf8")) as number[];
      const vocab = (JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
      const out = mkdtempSync(join(tmpdir(), `lm-parity-${name}-`));
      const r = spawnSync(process.execPath, [CLI, "logits", "--log-level", "warn", "--model", dir, "--prompt-ids", prompt.join(","), "--feed", feed.join(","), "--out", out], { encoding: "utf8", timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      const pre = compareRows(readF32(join(out, "prefill_logits.f32")), readF32(join(dir, "reference", "prefill_logits.f32")), vocab);
      const dec = compareRows(readF32(join(out, "decode_logits.f32")), readF32(join(dir, "reference", "decode_logits.f32")), vocab);
      assert.ok(pre.worst <= TOLERANCE, `prefill rel L2 ${pre.worst.toExponential(2)}`);
      assert.ok(dec.worst <= TOLERANCE, `decode rel L2 ${dec.worst.toExponential(2)}`);
      assert.deepEqual(pre.argmaxMismatches, [], "prefill argmax differs at these positions");
      assert.deepEqual(dec.argmaxMismatches, [], "decode argmax differs at these steps");
    });
  }
});
