/**
 * MTP head parity: for every fixture with reference/mtp_prefill_logits.f32 (scripts/make-mtp-fixtures.py,
 * a float64 reference independent of the engine), the MTP head's logits over the prompt and the draft
 * rows that `latentmesh logits --decode 0 --speculative-tokens K` writes match it: relative L2 error
 * ≤ 1e-4 per row, the same argmax on every row, the same drafts.
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


const fixtures = existsSync(FIXTURES) ? readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, "reference", "mtp_prefill_logits.f32"))).sort() : [];

describe("MTP head parity with the float64 reference", () => {
  it("an MTP fixture exists", () => assert.ok(fixtures.length >= 1));
  for (const name of fixtures) {
    it(`${name}: MTP logits over the prompt and the draft rows match (rel L2 ≤ ${TOLERANCE}, same argmax and drafts)`, () => {
      const dir = join(FIXTURES, name);
      const meta = JSON.parse(readFileSync(join(dir, "reference", "meta.json"), "utf8")) as { prompt_ids: number[]; speculative_tokens: number; first_token: number; drafts: number[] };
      const vocab = (JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
      const out = mkdtempSync(join(tmpdir(), `lm-mtp-parity-${name}-`));
      const r = spawnSync(process.execPath, [CLI, "logits", "--log-level", "warn", "--model", dir, "--prompt-ids", meta.prompt_ids.join(","), "--decode", "0", "--speculative-tokens", String(meta.speculative_tokens), "--out", out], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      const result = JSON.parse(readFileSync(join(out, "result.json"), "utf8")) as { mtp_prefill_drafts: number[] };
      const main = compareRows(readF32(join(out, "prefill_logits.f32")), readF32(join(dir, "reference", "main_prefill_logits.f32")), vocab);
      const mtp = compareRows(readF32(join(out, "mtp_prefill_logits.f32")), readF32(join(dir, "reference", "mtp_prefill_logits.f32")), vocab);
      assert.ok(main.worst <= TOLERANCE, `main model rel L2 ${main.worst.toExponential(2)}`);
      assert.ok(mtp.worst <= TOLERANCE, `MTP rel L2 ${mtp.worst.toExponential(2)}`);
      assert.deepEqual(mtp.argmaxMismatches, [], "MTP argmax differs at these rows");
      assert.deepEqual(result.mtp_prefill_drafts, meta.drafts, "drafts");
    });
  }
});
