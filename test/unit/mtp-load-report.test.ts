import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LoadReport, decodeMessage, encodeMessage } from "../../contracts/messages.js";
import { createLogger } from "../../core/log.js";
import { buildLoadReport } from "../../worker/load-report.js";
import { EngineLoop } from "../../worker/loop.js";
import type { NativeStepResult, NativeStepSequence } from "../../worker/native.js";
import { Scheduler } from "../../worker/scheduler.js";
import { Sequence } from "../../worker/sequence.js";
import { KvBlockPool, SlotPool } from "../../worker/slots.js";
import { SpeculationPolicy } from "../../worker/speculation.js";

const BASE = {
  type: "load", workerId: "w", model: "m", group: "g", rank: 0, seq: 0, ready: true, draining: false, running: 0, waiting: 0,
  maxSlots: 8, freeSlots: 8, totalKvBlocks: 10, freeKvBlocks: 10, kvBlockSize: 16, maxContextTokens: 4096, stepTokenBudget: 512,
  pendingPrefillTokens: 0, meanRemainingTokens: 0, stepTimeMs: 1, tokensPerSecond: 0, mtpAcceptance: 1,
};

describe("LoadReport - step-time curve and per-class acceptance (wire)", () => {
  it("a report without the new fields (an older rank) is still valid", () => {
    const d = decodeMessage(LoadReport, encodeMessage(BASE), "LoadReport");
    assert.ok(d.ok);
    assert.equal(d.ok && d.value.stepCurve, undefined);
  });

  it("curve points and class acceptance round-trip; unknown classes are dropped, not fatal", () => {
    const report = {
      ...BASE,
      stepCurve: [{ batch: 1, draftTokens: 3, stepMs: 4.5 }, { batch: 7.5, draftTokens: 0, stepMs: 9 }],
      mtpByClass: { greedy: { numDrafts: 12, acceptanceLength: 2.9, acceptRates: [0.9, 0.8, 0.7] }, tools: { numDrafts: 1, acceptanceLength: 1, acceptRates: [] } },
    };
    const d = decodeMessage(LoadReport, encodeMessage(report), "LoadReport");
    assert.ok(d.ok, d.ok ? "" : d.error);
    if (!d.ok) return;
    assert.deepEqual(d.value.stepCurve, report.stepCurve);
    assert.deepEqual(d.value.mtpByClass, { greedy: report.mtpByClass.greedy });
  });

  const bad: { name: string; patch: Record<string, unknown>; path: string }[] = [
    { name: "a point below batch 1", patch: { stepCurve: [{ batch: 0, draftTokens: 0, stepMs: 1 }] }, path: "stepCurve.0.batch" },
    { name: "a negative step time", patch: { stepCurve: [{ batch: 1, draftTokens: 0, stepMs: -1 }] }, path: "stepCurve.0.stepMs" },
    { name: "an acceptance rate above 1", patch: { mtpByClass: { sampled: { numDrafts: 1, acceptanceLength: 1, acceptRates: [1.5] } } }, path: "mtpByClass.sampled.acceptRates.0" },
  ];
  for (const c of bad) {
    it(`rejects ${c.name} with the field's path`, () => {
      const d = decodeMessage(LoadReport, encodeMessage({ ...BASE, ...c.patch }), "LoadReport");
      assert.equal(d.ok, false);
      assert.match(d.ok ? "" : d.error, new RegExp(`^LoadReport: ${c.path.replace(/\./g, "\\.")}:`));
    });
  }
});

/**
 * A fake MTP engine on a virtual clock: a step costs 10 ms + 2 ms per sequence + 1 ms per fed draft
 * token; every greedy sequence's drafts are accepted and no sampled one's.
 */
class FakeEngine {
  clockMs = 0;
  readonly calls: NativeStepSequence[][] = [];
  step(seqs: NativeStepSequence[]): Promise<NativeStepResult> {
    this.calls.push(seqs);
    let drafts = 0;
    const out: number[] = [];
    const numAccepted = seqs.map((s) => (s.sampling.temperature === 0 ? (s.numDrafts ?? 0) : 0));
    for (const s of seqs) {
      drafts += s.numDrafts ?? 0;
      for (let j = 0; j < (s.draftTokens ?? 0); j++) out.push(7);
    }
    this.clockMs += 10 + 2 * seqs.length + drafts;
    return Promise.resolve({
      tokens: Int32Array.from(seqs.map(() => 7)),
      logits: new Float32Array(0),
      numAccepted: Int32Array.from(numAccepted),
      drafts: Int32Array.from(out),
      mtpLogits: new Float32Array(0),
      groupTokens: seqs.reduce((a, s) => a + s.tokens.length, 0),
    });
  }
}

async function serve(speculation: SpeculationPolicy | null, temperatures: number[], maxDraftTokens?: number) {
  const engine = new FakeEngine();
  const scheduler = new Scheduler({ maxRunning: 4, stepTokenBudget: 64 }, new SlotPool(4), new KvBlockPool(256, 4));
  const loop = new EngineLoop(engine, scheduler, { onStep: () => {}, onCancelled: () => {}, onFailed: (_, e) => assert.fail(e) }, createLogger({ name: "test", level: "warn", format: "json" }), () => engine.clockMs, null, speculation);
  loop.start();
  temperatures.forEach((temperature, i) =>
    loop.submit(new Sequence({ requestId: `r${i}`, attempt: 0, promptTokens: [1, 2, 3], maxTokens: 40, sampling: { temperature, topK: 0, topP: 1, seed: i }, ignoreEos: true, stopTokenIds: new Set(), arrivalMs: 0, maxDraftTokens })),
  );
  await loop.whenIdle();
  await loop.stop();
  const report = buildLoadReport({ workerId: "w", model: "m", group: "g", rank: 0, maxContextTokens: 4096 }, scheduler, loop.stats, { seq: 0, ready: true, draining: false });
  const parsed = LoadReport.safeParse(report);
  assert.ok(parsed.success, "the built report satisfies the contract");
  return Object.assign(report, { calls: engine.calls });
}

const prefills = (calls: NativeStepSequence[][]) => calls.flat().filter((s) => s.position === 0);

describe("worker loop - load report carries the curve and class acceptance", () => {
  it("without MTP: the curve has the plain decode time at the batch that ran (10 + 2 × 4 ms at batch 4), no class acceptance", async () => {
    const report = await serve(null, [0, 0, 0, 0]);
    assert.deepEqual(report.stepCurve, [{ batch: 4, draftTokens: 0, stepMs: 18 }]);
    assert.ok(report.calls.flat().every((s) => s.mtpSkip === undefined), "an engine without MTP is never told to skip it");
    assert.equal(report.mtpByClass, undefined);
  });

  it("with MTP: greedy and sampled sequences are counted apart, greedy accepting every draft and sampled none", async () => {
    const report = await serve(new SpeculationPolicy({ mode: "fixed", k: 2 }), [0, 0, 1, 1]);
    const g = report.mtpByClass?.greedy, s = report.mtpByClass?.sampled;
    assert.ok(g && s, JSON.stringify(report.mtpByClass));
    assert.equal(g.acceptanceLength, 3);
    assert.equal(s.acceptanceLength, 1);
    assert.ok((g.acceptRates[0] as number) > 0.9 && (s.acceptRates[0] as number) < 0.1, JSON.stringify(report.mtpByClass));
    assert.equal(g.acceptRates.length, 2, "one rate per position up to the depth");
    const at4 = report.stepCurve?.find((p) => p.batch === 4);
    // 4 sequences, each feeding 2 drafts: 10 + 8 + 8
    assert.deepEqual(at4, { batch: 4, draftTokens: 2, stepMs: 26 });
  });

  it("the MTP head runs over prompts only while the loop speculates, and never for a sequence capped at 0 drafts", async () => {
    const on = await serve(new SpeculationPolicy({ mode: "fixed", k: 2 }), [0, 0]);
    assert.ok(prefills(on.calls).every((s) => s.mtpSkip === undefined && s.draftTokens === 2), JSON.stringify(prefills(on.calls)));
    const off = await serve(new SpeculationPolicy({ mode: "fixed", k: 0 }), [0, 0]);
    assert.ok(prefills(off.calls).every((s) => s.mtpSkip === true));
    assert.ok(off.calls.flat().every((s) => s.mtpSkip === true), "plain decodes skip the head too");
    const capped = await serve(new SpeculationPolicy({ mode: "fixed", k: 2 }), [0, 0], 0);
    assert.ok(capped.calls.flat().every((s) => s.mtpSkip === true && !s.draftTokens), "the router's cap of 0: the head is never needed");
  });

  it("a step that switches depth (drafts without verifying) is not timed as that depth", async () => {
    // auto: k=0 is timed first, then k=2 is tried: its first step only drafts (10 + 2×4 = 18 ms, like plain), the next verifies (26 ms)
    const report = await serve(new SpeculationPolicy({ mode: "auto", max: 2 }), [0, 0, 0, 0]);
    // (timing the switching step as k=2 would have started that cell at 18 ms, and it would not read 26 now)
    assert.deepEqual(report.stepCurve?.find((p) => p.batch === 4), { batch: 4, draftTokens: 2, stepMs: 26 });
  });
});
