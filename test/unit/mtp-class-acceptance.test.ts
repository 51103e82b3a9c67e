import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { requestClassOf } from "../../contracts/messages.js";
import { AcceptanceStats, mixedAcceptance, SpeculationPolicy, StepCostModel, stepCurve } from "../../worker/speculation.js";

/** Stats fed `steps` verify steps of `k` drafts, each accepting `accepted` of them. */
function fed(stats: AcceptanceStats, steps: number, k: number, accepted: number): AcceptanceStats {
  for (let i = 0; i < steps; i++) stats.record(k, accepted);
  return stats;
}

const near = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

describe("MTP acceptance per request class", () => {
  it("the class of a request: greedy at temperature 0 or top-k 1, sampled otherwise", () => {
    assert.equal(requestClassOf({ temperature: 0, topK: 0 }), "greedy");
    assert.equal(requestClassOf({ temperature: 0.8, topK: 1 }), "greedy");
    assert.equal(requestClassOf({ temperature: 0.8, topK: 0 }), "sampled");
    assert.equal(requestClassOf({ temperature: 1, topK: 40 }), "sampled");
  });

  it("a class with no observations of its own reads its prior's rates; its own observations pull away from them", () => {
    // prior: 9 of 10 first drafts accepted → Beta(1, 1) rate 10/12
    const prior = fed(fed(new AcceptanceStats(), 9, 1, 1), 1, 1, 0);
    near(prior.rate(0), 10 / 12);
    const cls = new AcceptanceStats(prior);
    near(cls.rate(0), 10 / 12);
    fed(cls, 4, 1, 0); // four rejections, weighed against 4 pseudo-observations at the prior's rate
    near(cls.rate(0), (0 + 4 * (10 / 12)) / (4 + 4));
    fed(cls, 1000, 1, 0);
    assert.ok(cls.rate(0) < 0.01, "enough observations of its own dominate");
  });

  it("a mixed batch expects the sequence-weighted mean of its classes' tokens per step", () => {
    const byClass = { greedy: { expectedTokens: (k: number) => 1 + k }, sampled: { expectedTokens: () => 1 } };
    near(mixedAcceptance(byClass, { greedy: 3, sampled: 1 }).expectedTokens(2), (3 * 3 + 1 * 1) / 4);
    near(mixedAcceptance(byClass, { greedy: 2 }).expectedTokens(3), 4);
    near(mixedAcceptance(byClass, {}).expectedTokens(3), 1);
  });

  it("the load-report summary carries counts, length and one rate per position up to the depth", () => {
    const s = fed(new AcceptanceStats(), 10, 2, 1);
    const sum = s.summary(3);
    assert.equal(sum.numDrafts, 10);
    near(sum.acceptanceLength, 2);
    assert.equal(sum.acceptRates.length, 3);
    near(sum.acceptRates[0] as number, 11 / 12);
    near(sum.acceptRates[1] as number, (0 + 2 * (11 / 12)) / 12, 1e-12); // two pseudo-observations at position 0's rate
  });
});

describe("MTP depth chosen from the batch's class mix", () => {
  /** A policy that saw greedy drafts always accepted and sampled drafts never, with step times at batch 4 growing with k. */
  function policy(): SpeculationPolicy {
    const p = new SpeculationPolicy({ mode: "auto", max: 3 });
    const costs = [10, 14, 18, 22];
    costs.forEach((ms, k) => p.cost.observe(4, k, ms));
    for (let i = 0; i < 1000; i++) p.record([[3, 3, "greedy"], [3, 0, "sampled"]]);
    return p;
  }
  // tokens per ms, greedy E(k) ≈ 1 + k, sampled ≈ 1: all greedy k=3: 4/22 = .18 > 1/10; 1 greedy of 4: (1 + k/4)/t(k) < 1/10 for every k
  const cases: { name: string; mix?: { greedy?: number; sampled?: number }; want: number }[] = [
    { name: "all greedy: deep (drafts are nearly always accepted)", mix: { greedy: 4 }, want: 3 },
    { name: "all sampled: off (drafts are nearly never accepted)", mix: { sampled: 4 }, want: 0 },
    { name: "mostly sampled: off", mix: { greedy: 1, sampled: 3 }, want: 0 },
    { name: "mostly greedy: deep", mix: { greedy: 3, sampled: 1 }, want: 3 },
  ];
  for (const c of cases) it(c.name, () => assert.equal(policy().next(4, Infinity, c.mix), c.want));

  it("without a mix the overall rates (first draft accepted half the time) decide, and they do not fit an all-greedy batch", () => {
    assert.notEqual(policy().next(4), policy().next(4, Infinity, { greedy: 4 }));
  });

  it("only the class's own stats move: sampled observations leave greedy acceptance alone", () => {
    const p = policy();
    assert.ok(p.byClass.greedy.rate(0) > 0.99 && p.byClass.sampled.rate(0) < 0.01);
    near(p.acceptance.numDrafts, 2000);
    assert.deepEqual(Object.keys(p.classSummaries()).sort(), ["greedy", "sampled"]);
  });

  it("classes without verify steps are left out of the summaries", () => {
    const p = new SpeculationPolicy({ mode: "auto", max: 2 });
    p.record([[2, 1, "greedy"], [2, 2]]);
    assert.deepEqual(Object.keys(p.classSummaries()), ["greedy"]);
    assert.equal(p.acceptance.numDrafts, 2, "unclassed outcomes count overall");
  });
});

describe("step-time curve", () => {
  it("one point per measured bucket at its mean batch size, with the depth used there and its time", () => {
    const cost = new StepCostModel();
    cost.observe(1, 0, 10);
    cost.observe(1, 2, 12);
    cost.observe(4, 0, 20);
    cost.observe(4, 0, 20);
    cost.observe(16, 0, 50);
    const curve = stepCurve(cost, (batch) => (batch < 2 ? 2 : 0));
    assert.deepEqual(curve, [
      { batch: 1, draftTokens: 2, stepMs: 12 },
      { batch: 4, draftTokens: 0, stepMs: 20 },
      { batch: 16, draftTokens: 0, stepMs: 50 },
    ]);
  });

  it("a bucket whose chosen depth was never measured there is left out (measured points only)", () => {
    const cost = new StepCostModel();
    cost.observe(1, 0, 10);
    cost.observe(8, 0, 30);
    assert.deepEqual(stepCurve(cost, (batch) => (batch > 4 ? 3 : 0)), [{ batch: 1, draftTokens: 0, stepMs: 10 }]);
    assert.deepEqual(stepCurve(new StepCostModel(), () => 0), []);
  });

  it("the policy reports the depth it would choose among measured cells (no optimistic borrowing)", () => {
    const p = new SpeculationPolicy({ mode: "auto", max: 3 });
    p.cost.observe(1, 0, 10);
    for (let i = 0; i < 100; i++) p.record([[3, 3, "greedy"]]);
    assert.equal(p.next(1), 3, "the step policy tries the untried depth");
    assert.equal(p.depthAt(1), 0, "the report says what was measured");
    p.cost.observe(1, 3, 11);
    assert.equal(p.depthAt(1), 3);
  });
});
