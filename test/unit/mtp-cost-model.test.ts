import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EXPLORE_STEPS, PLAIN_REFRESH_STEPS, REFRESH_STEPS, SpeculationPolicy, StepCostModel } from "../../worker/speculation.js";

const near = (a: number | undefined, b: number, eps = 1e-9) => assert.ok(a !== undefined && Math.abs(a - b) <= eps, `${a} != ${b}`);

/** A policy at batch 1 whose greedy drafts are always accepted (E(1) ≈ 2), with step times per depth. */
function policy(ms: number[], max = ms.length - 1): SpeculationPolicy {
  const p = new SpeculationPolicy({ mode: "auto", max });
  for (let i = 0; i < 200; i++) p.record([[max, max, "greedy"]]);
  ms.forEach((t, k) => p.cost.observe(1, k, t));
  return p;
}

/**
 * Runs `p` for `steps` steps at batch `batch` on a fake clock: a step at depth k takes `ms(k, i)`
 * (i: the step's index) and every draft is accepted. The depth of each step.
 */
function simulate(p: SpeculationPolicy, steps: number, batch: number, ms: (k: number, i: number) => number): number[] {
  const depths: number[] = [];
  for (let i = 0; i < steps; i++) {
    const k = p.next(batch);
    depths.push(k);
    p.observe(batch, k, ms(k, i), k > 0 ? Array.from({ length: batch }, () => [k, k, "greedy"] as const) : []);
  }
  return depths;
}

/** True step times 10 / 15 / 20 ms at k = 0 / 1 / 2 (all drafts accepted: k=2 gives 3 tokens per 20 ms, best). */
const TRUE_MS = [10, 15, 20];

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

  it(`a depth's first ${EXPLORE_STEPS} samples set its ratio by their fastest (noise only adds time), not the shared scale`, () => {
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    c.observe(1, 2, 50); // a stall on the first k=2 step (really 20 ms)
    c.observe(1, 2, 20);
    near(c.predict(1, 2), 20);
    near(c.predict(1, 0), 10, 1e-9);
  });

  it("one slow first timing of the deepest depth does not switch speculation off for good", () => {
    const p = new SpeculationPolicy({ mode: "auto", max: 2 });
    let first = true;
    const depths = simulate(p, 2000, 1, (k) => {
      if (k !== 2 || !first) return TRUE_MS[k] as number;
      first = false;
      return (TRUE_MS[k] as number) + 30; // one 30 ms stall, on the first k=2 step only
    });
    const speculating = depths.filter((k) => k === 2).length;
    assert.ok(speculating >= 0.9 * depths.length, `${speculating} of ${depths.length} steps at k=2`);
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
    // k=1 timed during a stall (60 ms) through its exploring steps: plain wins; the refresh finds it fast and it is checked again soon
    const p = policy([10, 60]);
    for (let i = 1; i < EXPLORE_STEPS; i++) p.cost.observe(1, 1, 60);
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
    const p = policy([30, 40, 14]); // plain timed during a stall...
    for (let i = 1; i < EXPLORE_STEPS; i++) p.cost.observe(1, 0, 30); // ...through its exploring steps
    assert.equal(p.next(1), 2);
    let steps = 0;
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

  it("the deepest timed depth is re-timed even when the chosen depth is not its neighbour", () => {
    // k=2 timed slow through its whole exploration (a transient slow-down): plain wins, k=1 (never timed)
    // is interpolated between plain and that slow k=2; only re-timing k=2 itself can find it fast again
    const p = new SpeculationPolicy({ mode: "auto", max: 2 });
    let slow = 0;
    const depths = simulate(p, 20000, 1, (k) => (k === 2 && slow++ < EXPLORE_STEPS ? 50 : (TRUE_MS[k] as number)));
    assert.equal(depths.slice(0, 1 + EXPLORE_STEPS + 1).join(","), "0,2,2,0", "timed slow, k=2 first loses to plain");
    const firstBack = depths.indexOf(2, 1 + EXPLORE_STEPS);
    assert.ok(firstBack >= REFRESH_STEPS, `k=2 re-timed after ${firstBack} steps: not before ${REFRESH_STEPS}`);
    const tail = depths.slice(-5000);
    assert.ok(tail.filter((k) => k === 2).length >= 0.9 * tail.length, `${tail.filter((k) => k === 2).length} of the last ${tail.length} steps at k=2`);
  });

  it("unmeasured depths are not 're-timed' (exploration borrows shallower times instead)", () => {
    const c = new StepCostModel();
    c.observe(1, 0, 10);
    assert.equal(c.due(1, 1), false);
    assert.equal(c.age(1, 1), Infinity);
  });
});
