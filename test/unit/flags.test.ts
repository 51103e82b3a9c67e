import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { z } from "zod";
import { boolFlag, defineCommand, flag, formatHelp, parse, parseFlags, UsageError } from "../../core/flags.js";

const cmd = defineCommand({
  name: "demo",
  summary: "a demo command",
  flags: {
    port: flag(parse.int({ min: 1, max: 65535 }).default(8000), "port", { placeholder: "N" }),
    natsUrl: flag(parse.url(["nats"]).default("nats://127.0.0.1:4222"), "url"),
    ids: flag(parse.intList({ min: 0 }).optional(), "ids", { env: null }),
    mode: flag(z.enum(["a", "b"]).default("a"), "mode"),
    verbose: boolFlag("chatty"),
  },
  async run() {},
});

function ok(argv: string[], env: Record<string, string> = {}) {
  const r = parseFlags(cmd, argv, env);
  assert.equal(r.kind, "ok");
  if (r.kind !== "ok") throw new Error("unreachable");
  return r.flags;
}

describe("flag parsing", () => {
  it("applies defaults when nothing is given", () => {
    const f = ok([]);
    assert.equal(f.port, 8000);
    assert.equal(f.verbose, false);
    assert.equal(f.ids, undefined);
    assert.equal(f.logLevel, "info");
  });

  it("reads --flag value, --flag=value, booleans and --no-flag", () => {
    assert.equal(ok(["--port", "9000"]).port, 9000);
    assert.equal(ok(["--port=9001"]).port, 9001);
    assert.equal(ok(["--verbose"]).verbose, true);
    assert.equal(ok(["--verbose", "--no-verbose"]).verbose, false);
    assert.deepEqual(ok(["--ids", "5, 17,300"]).ids, [5, 17, 300]);
  });

  it("falls back to LATENTMESH_<FLAG> environment variables, flags winning", () => {
    assert.equal(ok([], { LATENTMESH_PORT: "7000" }).port, 7000);
    assert.equal(ok(["--port", "7001"], { LATENTMESH_PORT: "7000" }).port, 7001);
    assert.equal(ok([], { LATENTMESH_NATS_URL: "nats://10.0.0.1:4222" }).natsUrl, "nats://10.0.0.1:4222");
    assert.equal(ok([], { LATENTMESH_IDS: "1,2" }).ids, undefined, "env: null flags ignore the environment");
  });

  const bad: [string[], Record<string, string>, RegExp][] = [
    [["--port", "abc"], {}, /--port: "abc": expected an integer/],
    [["--port", "0"], {}, /--port: "0": must be >= 1/],
    [[], { LATENTMESH_PORT: "99999" }, /LATENTMESH_PORT \(environment\): "99999": must be <= 65535/],
    [["--mode", "c"], {}, /--mode: "c"/],
    [["--nats-url", "http://x"], {}, /--nats-url/],
    [["--ids", "1,x"], {}, /--ids: "1,x": expected comma-separated integers/],
    [["--nope"], {}, /unknown flag --nope/],
    [["--port"], {}, /flag --port needs a value/],
    [["stray"], {}, /unexpected argument 'stray'/],
  ];
  for (const [argv, env, re] of bad) {
    it(`rejects ${JSON.stringify(argv)} ${JSON.stringify(env)} with one line naming the flag`, () => {
      assert.throws(() => parseFlags(cmd, argv, env), (e: unknown) => e instanceof UsageError && re.test(e.message) && !e.message.includes("\n"));
    });
  }

  it("reports a missing required flag", () => {
    const req = defineCommand({ name: "r", summary: "s", flags: { file: flag(z.string().min(1), "file") }, async run() {} });
    assert.throws(() => parseFlags(req, [], {}), /missing required flag --file/);
  });

  it("--help wins over everything and lists flags with env names and defaults", () => {
    assert.deepEqual(parseFlags(cmd, ["--port", "abc", "--help"], {}), { kind: "help" });
    const help = formatHelp(cmd);
    assert.match(help, /--port N\s+port \(env LATENTMESH_PORT, default 8000\)/);
    assert.match(help, /--verbose\s+chatty/);
    assert.match(help, /-h, --help/);
  });
});
