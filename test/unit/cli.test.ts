import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { CLI } from "../support/paths.js";

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, LATENTMESH_PORT: "" } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const SUBCOMMANDS = ["operator", "router", "worker", "up", "logits", "generate", "bench", "render"];

describe("bin/latentmesh", () => {
  it("--help lists every subcommand", () => {
    const r = cli("--help");
    assert.equal(r.code, 0);
    for (const s of SUBCOMMANDS) assert.match(r.stdout, new RegExp(`^  ${s}\\s`, "m"));
  });

  it("an unknown subcommand exits 2 with one line", () => {
    const r = cli("nosuch");
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /unknown command 'nosuch'/);
  });

  for (const s of SUBCOMMANDS) {
    it(`${s} --help prints usage and exits 0`, () => {
      const r = cli(s, "--help");
      assert.equal(r.code, 0);
      assert.match(r.stdout, new RegExp(`Usage: latentmesh ${s}`));
    });
  }

  it("a bad flag value exits 2 with one line naming the flag", () => {
    const r = cli("router", "--port", "abc");
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /--port/);
  });
});

describe("command registry", () => {
  it("each entry's help summary equals its command's own summary", async () => {
    const { COMMANDS } = await import("../../cli/commands.js");
    for (const entry of COMMANDS) {
      const spec = await entry.load();
      assert.equal(spec.name, entry.name);
      assert.equal(spec.summary, entry.summary, entry.name);
    }
  });
});
