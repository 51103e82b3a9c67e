import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "../../core/log.js";
import { EngineLoop } from "../../worker/loop.js";
import type { NativeStepResult, NativeStepSequence } from "../../worker/native.js";
import { Scheduler } from "../../worker/scheduler.js";
import { Sequence } from "../../worker/sequence.js";
import { KvBlockPool, SlotPool } from "../../worker/slots.js";
import { SpeculationPolicy, StepCostModel } from "../../worker/speculation.js";

/**
 * A fake MTP engine on a virtual clock where speculation does not pay: a step costs 10 ms + 2 ms per
 * sequence + `perDraftMs` per draft fed or proposed (verification and the head's passes), and every
 * draft is accepted — so k drafts buy k tokens for 2·k·perDraftMs, a loss whenever perDraftMs > 6.
 */
class LosingEngine {
  clockMs = 0;
  steps = 0;
  draftSteps = 0;
  constructor(private readonly perDraftMs: number) {}
  step(seqs: NativeStepSequence[]): Promise<NativeStepResult> {
    let drafts = 0;
    const out: number[] = [];
    for (const s of seqs) {
      drafts += (s.numDrafts ?? 0) + (s.draftTokens ?? 0);
      for (let j = 0; j < (s.draftTokens ?? 0); j++) out.push(7);
    }
    this.steps++;
    if (drafts > 0) this.draftSteps++;
    this.clockMs += 10 + 2 * seqs.length + this.perDraftMs * drafts;
    return Promise.resolve({
      tokens: Int32Array.from(seqs.map(() => 7)),
      logits: new Float32Array(0),
      numAccepted: Int32Array.from(seqs.map((s) => s.numDrafts ?? 0)),
      drafts: Int32Array.from(out),
      mtpLogits: new Float32Array(0),
      groupTokens: seqs.reduce((a, s) => a + s.tokens.length, 0),
    });
  }
}

/** Serves `n` greedy sequences of `maxTokens` at most `batch` at a time; the engine's virtual time and steps. */
async function serve(policy: SpeculationPolicy | null, n: number, batch: number, maxTokens: number, perDraftMs: number) {
  const engine = new LosingEngine(perDraftMs);
  const scheduler = new Scheduler({ maxRunning: batch, stepTokenBudget: 256 }, new SlotPool(batch), new KvBlockPool(4096, 16));
  const loop = new EngineLoop(engine, scheduler, { onStep: () => {}, onCancelled: () => {}, onFailed: (_, e) => assert.fail(e) }, createLogger({ name: "test", level: "warn", format: "json" }), () => engine.clockMs, null, policy);
  loop.start();
  for (let i = 0; i < n; i++)
    loop.submit(new Sequence({ requestId: `r${i}`, attempt: 0, promptTokens: [1, 2, 3], maxTokens, sampling: { temperature: 0, topK: 0, topP: 1, seed: i }, ignoreEos: true, stopTokenIds: new Set(), arrivalMs: 0 }));
  await loop.whenIdle();
  await loop.stop();
  return engine;
}

describe("adaptive MTP depth - never worse than MTP off", () => {
  for (const batch of [1, 4, 16]) {
    // a fresh policy tries the deepest depth once (a fixed cost), then re-times losing depths rarely
    it(`batch ${batch}: where speculation loses, adaptive k takes at most 3% more time than plain decoding and rarely drafts`, async () => {
      const off = await serve(null, 2 * batch, batch, 2000, 9);
      const adaptive = await serve(new SpeculationPolicy({ mode: "auto", max: 3 }), 2 * batch, batch, 2000, 9);
      assert.ok(adaptive.clockMs <= off.clockMs * 1.03, `adaptive ${adaptive.clockMs} ms vs off ${off.clockMs} ms`);
      assert.ok(adaptive.draftSteps <= 0.06 * adaptive.steps, `${adaptive.draftSteps} of ${adaptive.steps} steps drafted`);
    });
  }

  it("where speculation pays, adaptive k takes fewer steps and less time than plain decoding", async () => {
    const off = await serve(null, 4, 4, 400, 1);
    const adaptive = await serve(new SpeculationPolicy({ mode: "auto", max: 3 }), 4, 4, 400, 1);
    assert.ok(adaptive.steps < off.steps * 0.5 && adaptive.clockMs < off.clockMs * 0.8, `adaptive ${adaptive.steps} steps / ${adaptive.clockMs} ms vs off ${off.steps} / ${off.clockMs}`);
  });
});

describe("worker loop - prompt chunks and the MTP head", () => {
  /** Serves one 150-token prompt (three chunks of at most 64) at fixed k = 2; the items each step fed. */
  async function chunks(catchesUp: boolean): Promise<NativeStepSequence[]> {
    const engine = Object.assign(new LosingEngine(1), { mtpCatchesUp: catchesUp });
    const fed: NativeStepSequence[] = [];
    const inner = engine.step.bind(engine);
    engine.step = (seqs: NativeStepSequence[]) => (fed.push(...seqs), inner(seqs));
    const scheduler = new Scheduler({ maxRunning: 1, stepTokenBudget: 64 }, new SlotPool(1), new KvBlockPool(64, 16));
    const loop = new EngineLoop(engine, scheduler, { onStep: () => {}, onCancelled: () => {}, onFailed: (_, e) => assert.fail(e) }, createLogger({ name: "test", level: "warn", format: "json" }), () => engine.clockMs, null, new SpeculationPolicy({ mode: "fixed", k: 2 }));
    loop.start();
    loop.submit(new Sequence({ requestId: "r", attempt: 0, promptTokens: Array.from({ length: 150 }, (_, i) => i % 50), maxTokens: 4, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, ignoreEos: true, stopTokenIds: new Set(), arrivalMs: 0 }));
    await loop.whenIdle();
    await loop.stop();
    return fed.filter((s) => s.tokens.length > 3);
  }

  it("an engine that catches the head's KV up: prompt chunks that draft nothing skip the head even while speculating", async () => {
    const fed = await chunks(true);
    assert.deepEqual(fed.map((s) => [s.position, s.mtpSkip === true, s.draftTokens ?? 0]), [[0, true, 0], [64, true, 0], [128, false, 2]]);
  });

  it("an engine that does not: prompt chunks run the head while speculating (skipped positions would stay stale)", async () => {
    const fed = await chunks(false);
    assert.deepEqual(fed.map((s) => [s.position, s.mtpSkip === true, s.draftTokens ?? 0]), [[0, false, 0], [64, false, 0], [128, false, 2]]);
  });
});

describe("MTP step cost model - untried depths at larger batches", () => {
  it("an untried depth takes its cost ratio from the nearest smaller batch bucket that measured it", () => {
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    c.observe(1, 2, 40); // 4× plain at batch 1
    c.observe(8, 0, 20);
    assert.equal(c.predict(8, 2), 80);
    assert.equal(c.predict(8, 1), 50, "a depth measured nowhere is interpolated between the known ones");
  });

  it("so a depth that lost at batch 1 is not tried at batch 8", () => {
    const p = new SpeculationPolicy({ mode: "auto", max: 2 });
    for (let i = 0; i < 100; i++) p.record([[2, 2, "greedy"]]);
    p.observe(1, 1, 25, []);
    p.observe(1, 2, 40, []);
    p.observe(1, 0, 10, []);
    assert.equal(p.next(1), 0);
    p.observe(8, 0, 20, []);
    assert.equal(p.next(8), 0, "k=1 at 2.5× and k=2 at 4× of plain cannot pay with 2 and 3 tokens per step");
  });
});
