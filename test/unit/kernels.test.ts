import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { REPO_ROOT } from "../support/paths.js";

describe("native op tests (kernels/tests/test-ops.cc)", () => {
  it("every CPU op and engine invariance check passes", () => {
    const bin = join(REPO_ROOT, "kernels", "build", "test-ops");
    assert.ok(existsSync(bin), "kernels/build/test-ops is built by npm run build");
    const r = spawnSync(bin, { encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^\d+ passed, 0 failed$/m);
  });
});
