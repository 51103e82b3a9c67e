import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PLAIN_REFRESH_STEPS, REFRESH_STEPS, SpeculationPolicy, StepCostModel } from "../../worker/speculation.js";

const near = (a: number | undefined, b: number, eps = 1e-9) => assert.ok(a !== undefined && Math.abs(a - b) <= eps, `${a} != ${b}`);

/** A policy at batch 1 whose greedy drafts are always accepted (E(1) ≈ 2), with step times per depth. */
function policy(ms: number[], max = ms.length - 1): SpeculationPolicy {
  const p = new SpeculationPolicy({ mode: "auto", max });
  for (let i = 0; i < 200; i++) p.record([[max, max, "greedy"]]);
  ms.forEach((t, k) => p.cost.observe(1, k, t));
  return p;
}

describe("MTP step cost model - estimates robust to one-sided noise", () => {
  it("a faster step pulls the estimate half-way down at once", () => {
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    c.observe(1, 0, 4);
    near(c.predict(1, 0), 7);
  });

  it("a slower step moves it a quarter of the way, counting as at most 1.25 × the estimate", () => {
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    c.observe(1, 0, 100);
    near(c.predict(1, 0), 10 + 0.25 * (12.5 - 10));
    c.observe(1, 0, 11);
    near(c.predict(1, 0), 10.625 + 0.25 * (11 - 10.625));
  });

  it("one stall during speculation does not switch it off", () => {
    const p = policy([10, 14]);
    assert.equal(p.next(1), 1, "2 tokens / 14 ms beats 1 / 10 ms");
    p.cost.observe(1, 1, 100);
    assert.equal(p.next(1), 1);
  });

  it("speculating at all must promise 10% more tokens per millisecond than plain decoding", () => {
    // E(1) ≈ 1.995: 1.995 / 19 ms is 5% more than 1 / 10 ms, 1.995 / 17 ms 17% more
    assert.equal(policy([10, 19]).next(1), 0);
    assert.equal(policy([10, 17]).next(1), 1);
  });
});

describe("MTP step cost model - re-timing neighbour depths", () => {
  it(`a measured neighbour depth is re-timed once after ${REFRESH_STEPS} steps of its bucket without it, times its price squared`, () => {
    const p = policy([10, 20]); // k=1 costs 2 plain steps: re-timing it waits 4 × as long
    for (let i = 0; i < 4 * REFRESH_STEPS; i++) {
      assert.equal(p.next(1), 0);
      p.cost.observe(1, 0, 10);
    }
    assert.equal(p.next(1), 1, "stale: re-time it");
    p.cost.observe(1, 1, 20);
    assert.equal(p.next(1), 0, "still slow: back to plain");
  });

  it("a depth whose last timing moved its estimate a lot is re-timed after a few steps, until it settles", () => {
    // k=1 first timed during a stall (60 ms): plain wins; the refresh finds it fast and it is checked again soon
    const p = policy([10, 60]);
    for (let i = 0; i < 36 * REFRESH_STEPS; i++) p.cost.observe(1, 0, 10);
    assert.equal(p.next(1), 1);
    p.cost.observe(1, 1, 14); // 60 → 37: moved 38%
    let steps = 0;
    while (p.next(1) === 0 && steps < 100) {
      p.cost.observe(1, 0, 10);
      steps++;
    }
    assert.equal(steps, 8, "re-timed after 8 steps instead of another full refresh period");
  });

  it("plain decoding is re-timed often while speculating, however deep (a stale plain time must not keep speculation on)", () => {
    const p = policy([30, 40, 14]); // plain first timed during a stall
    assert.equal(p.next(1), 2);
    let steps = 2; // plain was timed before k=1 and k=2
    while (p.next(1) === 2 && steps < 1000) {
      p.cost.observe(1, 2, 14);
      steps++;
    }
    assert.equal(steps, PLAIN_REFRESH_STEPS, "plain is re-timed after that many speculating steps");
    assert.equal(p.next(1), 0);
    p.cost.observe(1, 0, 3); // really 3 ms: 30 → 16.5, unsettled
    for (let i = 0; i < 8; i++) p.cost.observe(1, 2, 14);
    assert.equal(p.next(1), 0, "re-timed again soon");
    p.cost.observe(1, 0, 3); // 16.5 → 9.75 ms: 1 token / 9.75 ms is still below 3 tokens / 14 ms, so k=2 stays, rightly
    assert.equal(p.next(1), 2);
  });

  it("unmeasured depths are not 're-timed' (exploration borrows shallower times instead)", () => {
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    assert.equal(c.due(1, 1), false);
    assert.equal(c.age(1, 1), Infinity);
  });
});
