import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NativeStepResult, NativeStepSequence } from "../../worker/native.js";
import { AcceptanceStats, batchBucket, chooseDraftTokens, EXPLORE_STEPS, parseSpeculativeTokens, SpeculationPolicy, StepCostModel } from "../../worker/speculation.js";

function acceptance(rate: number, steps = 1000, k = 4): AcceptanceStats {
  const a = new AcceptanceStats();
  // each draft accepted with probability `rate` given its predecessors: deterministic counts
  for (let s = 0; s < steps; s++) {
    let kept = 0;
    for (let j = 0; j < k; j++) {
      if ((s * 7919 + j * 104729) % 1000 < rate * 1000) kept++;
      else break;
    }
    a.record(k, kept);
  }
  return a;
}

function cost(table: Record<number, number[]>): StepCostModel {
  const c = new StepCostModel();
  for (const [b, ms] of Object.entries(table)) ms.forEach((t, k) => c.observe(Number(b), k, t));
  return c;
}

describe("speculation - acceptance statistics", () => {
  it("counts drafts, draft tokens, accepted tokens and per-position acceptances as vLLM does", () => {
    const a = new AcceptanceStats();
    a.record(3, 2);
    a.record(3, 0);
    a.record(0, 0);
    assert.equal(a.numDrafts, 2);
    assert.equal(a.numDraftTokens, 6);
    assert.equal(a.numAcceptedTokens, 2);
    assert.deepEqual(a.acceptedPerPos, [1, 1]);
    assert.equal(a.acceptanceLength, 2);
  });

  it("expected tokens per step grow with the acceptance rate and the depth", () => {
    const hi = acceptance(0.9), lo = acceptance(0.1);
    assert.ok(hi.expectedTokens(3) > 3 && hi.expectedTokens(3) < 4);
    assert.ok(lo.expectedTokens(3) < 1.15);
    assert.equal(hi.expectedTokens(0), 1);
  });
});

describe("speculation - choosing k", () => {
  const table: { name: string; batch: number; rate: number; costs: Record<number, number[]>; want: number }[] = [
    { name: "deep at batch 1 when verifying is nearly free and drafts are good", batch: 1, rate: 0.8, costs: { 1: [10, 10.5, 11, 11.5, 12] }, want: 4 },
    { name: "off when drafts are never accepted", batch: 1, rate: 0, costs: { 1: [10, 10.5, 11, 11.5, 12] }, want: 0 },
    { name: "off at a large batch where verify cost grows with k+1", batch: 64, rate: 0.6, costs: { 64: [100, 200, 300, 400, 500] }, want: 0 },
    { name: "shallow at a middle batch", batch: 8, rate: 0.7, costs: { 8: [20, 24, 34, 46, 60] }, want: 1 },
    { name: "plain until this batch size has a measurement", batch: 16, rate: 0.9, costs: { 1: [10, 10, 10, 10, 10] }, want: 0 },
  ];
  for (const c of table) {
    it(c.name, () => assert.equal(chooseDraftTokens({ batchSize: c.batch, maxDraftTokens: 4, acceptance: acceptance(c.rate), cost: cost(c.costs) }), c.want));
  }

  it("never exceeds the cap (the router's or the deployment's)", () => {
    assert.equal(chooseDraftTokens({ batchSize: 1, maxDraftTokens: 2, acceptance: acceptance(0.9), cost: cost({ 1: [10, 10, 10, 10, 10] }) }), 2);
    const p = new SpeculationPolicy({ mode: "auto", max: 4 });
    assert.equal(p.next(1, 0), 0);
    assert.equal(new SpeculationPolicy({ mode: "fixed", k: 3 }).next(1, 1), 1);
  });

  it("tries an untried depth once, then follows the measured cost", () => {
    const p = new SpeculationPolicy({ mode: "auto", max: 2 });
    assert.equal(p.next(1), 0);
    p.observe(1, 0, 10, []);
    assert.equal(p.next(1), 2, "with nothing known about speculating, the deepest depth is tried first (optimistic)");
    p.observe(1, 2, 40, [[2, 0]]);
    assert.equal(p.next(1), 2, "a depth switched to runs EXPLORE_STEPS steady steps before it is judged");
    p.observe(1, 2, 40, [[2, 0]]);
    assert.equal(p.cost.predict(1, 1), 25, "shallower depths are interpolated");
    assert.equal(p.next(1), 0, "slow, unaccepted drafts switch speculation off");
  });

  it("a batch bucket whose first timing speculated times plain decoding before choosing a depth there", () => {
    // batch 3 (bucket 3-4) first timed at k=2, e.g. a step whose timed batch fell in another bucket than the one chosen for
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    c.observe(3, 2, 20);
    assert.equal(chooseDraftTokens({ batchSize: 3, maxDraftTokens: 2, acceptance: acceptance(0.9), cost: c }), 0, "plain is timed first");
    const p = new SpeculationPolicy({ mode: "auto", max: 2 });
    for (let i = 0; i < 100; i++) p.record([[2, 2, "greedy"]]);
    p.observe(3, 2, 20, [[2, 2, "greedy"]]);
    const depths: number[] = [];
    for (let i = 0; i < 50; i++) {
      const k = p.next(3);
      depths.push(k);
      p.observe(3, k, [10, 15, 20][k] as number, k > 0 ? [[k, k, "greedy"]] : []);
    }
    assert.ok(p.cost.measured(3, 0), `plain decoding timed at batch 3 (depths ${depths.join("")})`);
    assert.ok(depths.indexOf(0) <= EXPLORE_STEPS, `plain timed at step ${depths.indexOf(0)}`);
  });

  it("buckets batch sizes by powers of two", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 8, 9].map(batchBucket), [0, 1, 2, 2, 3, 3, 4]);
  });

  it("parses --speculative-tokens", () => {
    assert.deepEqual(parseSpeculativeTokens("3"), { mode: "fixed", k: 3 });
    assert.deepEqual(parseSpeculativeTokens("auto"), { mode: "auto", max: 4 });
    assert.throws(() => parseSpeculativeTokens("17"));
    assert.throws(() => parseSpeculativeTokens("x"));
  });
});

describe("speculation - the one-sequence decoder (generate/logits --speculative-tokens)", () => {
  it("times a depth only on steady steps: a step that switches depth never enters the cost model", async () => {
    const { OneSequenceDecoder } = await import("../../cli/commands/speculate.js");
    // a stepper whose steps take 10 + 4k ms at steady depth k and 500 ms when switching depth; every draft is accepted
    let clock = 0;
    let steps = 0;
    const stepper = {
      async step(seqs: NativeStepSequence[]): Promise<NativeStepResult> {
        const s = seqs[0] as NativeStepSequence;
        const verified = s.numDrafts ?? 0, next = s.draftTokens ?? 0;
        clock += verified === next ? 10 + 4 * next : 500;
        steps++;
        return { tokens: Int32Array.of(7), logits: new Float32Array(0), numAccepted: Int32Array.of(verified), drafts: new Int32Array(next).fill(3), mtpLogits: new Float32Array(0), groupTokens: s.tokens.length };
      },
    };
    const dec = new OneSequenceDecoder(stepper, new Int32Array(64), { temperature: 0, topK: 0, topP: 1, seed: 0 }, 16, { mode: "auto", max: 3 }, () => clock);
    await dec.prefill([1, 2, 3], "none");
    for (let i = 0; i < 400; i++) await dec.next(false);
    assert.equal(steps, 401);
    for (let k = 0; k <= 3; k++) {
      const ms = dec.policy.cost.predict(1, k);
      if (ms !== undefined) assert.ok(ms < 10 + 4 * k + 1, `depth ${k}: ${ms} ms includes switching steps`);
    }
    assert.ok(dec.policy.cost.measured(1, 0) && dec.policy.cost.measured(1, 3), "plain and the deepest depth were both timed");
  });
});
