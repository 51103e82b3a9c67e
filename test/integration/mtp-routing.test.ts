/**
 * MTP-aware scheduling inputs through the serving path (router + worker + nats-server) on the trained
 * demo model: after serving greedy and sampled chats, the rank's report (gRPC Stats, the same object
 * it publishes on NATS) carries a step-time curve and acceptance per request class, and the router
 * keeps serving from it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { LoadReport } from "../../contracts/messages.js";
import { adminPackage } from "../../worker/admin-grpc.js";
import { FIXTURES } from "../support/paths.js";
import { startStack } from "../support/proc-stack.js";

type Unary = (req: object, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void;

async function stats(port: number): Promise<Record<string, unknown>> {
  const pkg = adminPackage() as unknown as { latentmesh: { worker: { v1: { Admin: grpc.ServiceClientConstructor } } } };
  const admin = new pkg.latentmesh.worker.v1.Admin(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) => ((admin as unknown as Record<string, Unary>).Stats as Unary).call(admin, {}, (err, res) => (err ? reject(err) : resolve(res))));
  } finally {
    admin.close();
  }
}

const QUESTIONS = ["hello", "Who are you?", "What does the gzip command do?", "What is 12 * 7?", "Create a JSON object for a person named Maya, aged 31, who lives in Lisbon.", "What does the ls command do?"];

describe("MTP-aware routing inputs (router + worker + nats-server, demo model)", () => {
  it("a speculating rank reports a step-time curve and greedy / sampled acceptance apart", async () => {
    const stack = await startStack({ model: join(FIXTURES, "demo-chat"), workerArgs: ["--mtp-max-draft-tokens", "3", "--max-slots", "8"] });
    try {
      const ask = (content: string, temperature: number, seed: number) =>
        stack.client.chat.completions.create({ model: "demo-chat", messages: [{ role: "user", content }], max_tokens: 32, temperature, seed });
      const answers = await Promise.all(QUESTIONS.flatMap((q, i) => [ask(q, 0, i), ask(q, 1, i)]));
      assert.ok(answers.every((a) => (a.choices[0]?.message.content ?? "").length > 0));
      await new Promise((r) => setTimeout(r, 250)); // a load report after the work
      const ready = stack.workers[0]?.lines.find((l) => l.msg === "worker ready");
      const s = await stats(ready?.grpcPort as number);
      const curve = s.stepCurve as { batch: number; draftTokens: number; stepMs: number }[];
      assert.ok(curve.length > 0, `a curve: ${JSON.stringify(s)}`);
      for (const p of curve) assert.ok(p.batch >= 1 && p.batch <= 8 && p.stepMs > 0 && p.draftTokens <= 3, JSON.stringify(p));
      const byClass = s.mtpByClass as Record<string, { numDrafts: number; acceptanceLength: number; acceptRates: number[] }>;
      assert.ok(byClass.greedy && byClass.greedy.numDrafts > 0, `greedy acceptance: ${JSON.stringify(byClass)}`);
      assert.equal(byClass.greedy.acceptRates.length, 3);
      assert.ok(byClass.greedy.acceptanceLength > 1.3, `the demo model's greedy drafts are accepted often: ${JSON.stringify(byClass.greedy)}`);
      // the gRPC object satisfies the wire contract's new fields
      assert.ok(LoadReport.shape.stepCurve.safeParse(curve).success);
      assert.ok(LoadReport.shape.mtpByClass.safeParse(byClass).success);
      const again = await ask("hello", 0, 0);
      assert.equal(again.choices[0]?.message.content, answers[0]?.choices[0]?.message.content, "greedy output is unchanged by what the router learnt");
    } finally {
      await stack.stop();
    }
  });
});
