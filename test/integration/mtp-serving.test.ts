/**
 * MTP speculation through the whole serving path (router + worker + nats-server): a worker with
 * --mtp-max-draft-tokens serves the same greedy text as one without, its load reports reach the
 * router's acceptance gauge, and its spec_decode counters count the verified drafts.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { startStack } from "../support/proc-stack.js";
import { FIXTURES } from "../support/paths.js";

/** tiny-chat's tokenizer and config with one `*E` MTP layer; weights come from --load-format dummy. */
function mtpModel(): string {
  const src = join(FIXTURES, "tiny-chat");
  const dir = mkdtempSync(join(tmpdir(), "lm-mtp-chat-"));
  for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) copyFileSync(join(src, f), join(dir, f));
  const config = JSON.parse(readFileSync(join(src, "config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, mtp_hybrid_override_pattern: "*E", num_nextn_predict_layers: 1 }));
  return dir;
}

const PROMPTS = ["the quick brown fox", "1 2 3 4 5 6", "hello hello hello"];

async function serve(model: string, workerArgs: string[]): Promise<{ texts: string[]; routerMetrics: string; workerMetrics: string }> {
  const stack = await startStack({ model, workerArgs: ["--load-format", "dummy", ...workerArgs] });
  try {
    const served = model.split("/").pop() as string;
    const texts = await Promise.all(
      PROMPTS.map(async (prompt) => {
        const r = await stack.client.completions.create({ model: served, prompt, max_tokens: 24, temperature: 0, ignore_eos: true } as never);
        return (r as unknown as { choices: { text: string }[] }).choices[0]?.text ?? "";
      }),
    );
    await new Promise((r) => setTimeout(r, 250)); // a load report after the work
    const routerMetrics = await (await fetch(`${stack.baseUrl}/metrics`)).text();
    const ready = stack.workers[0]?.lines.find((l) => l.msg === "worker ready");
    const workerMetrics = await (await fetch(`http://127.0.0.1:${ready?.httpPort as number}/metrics`)).text();
    return { texts, routerMetrics, workerMetrics };
  } finally {
    await stack.stop();
  }
}

describe("MTP speculation in serving (router + worker + nats-server)", () => {
  it("greedy completions equal those without MTP; acceptance and spec_decode metrics are reported", async () => {
    const model = mtpModel();
    const plain = await serve(model, []);
    const spec = await serve(model, ["--mtp-max-draft-tokens", "3"]);
    assert.deepEqual(spec.texts, plain.texts);
    assert.ok(plain.texts.every((t) => t.length > 0));
    const drafts = /latentmesh_worker_spec_decode_num_draft_tokens_total\{[^}]*\} (\d+)/.exec(spec.workerMetrics);
    assert.ok(drafts && Number(drafts[1]) > 0, `draft tokens counted:\n${spec.workerMetrics.split("\n").filter((l) => l.includes("spec_decode")).join("\n")}`);
    assert.match(spec.routerMetrics, /latentmesh_router_spec_acceptance_length\{[^}]*\} [\d.]+/);
  });
});
