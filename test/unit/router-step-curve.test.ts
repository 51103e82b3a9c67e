import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { LoadReport, StepCurvePoint } from "../../contracts/messages.js";
import { DEFAULT_PICK_OPTIONS, expectedTokensPerStep, pickRank, predictFinishMs, stepAt, type PickRequest, type RankView } from "../../router/pick-rank.js";

/** An idle ready rank with 16 slots; override what the case is about. */
function rank(workerId: string, o: Partial<LoadReport> = {}, placedSinceReport = 0): RankView {
  return {
    placedSinceReport,
    report: {
      type: "load", workerId, model: "m", group: "g0", rank: 0, seq: 1, ready: true, draining: false,
      running: 0, waiting: 0, maxSlots: 16, freeSlots: 16, totalKvBlocks: 1000, freeKvBlocks: 1000, kvBlockSize: 16,
      maxContextTokens: 4096, stepTokenBudget: 512, pendingPrefillTokens: 0, meanRemainingTokens: 0,
      stepTimeMs: 10, tokensPerSecond: 0, mtpAcceptance: 1, ...o,
    },
  };
}
const pt = (batch: number, stepMs: number, draftTokens = 0): StepCurvePoint => ({ batch, draftTokens, stepMs });
const busy = (running: number): Partial<LoadReport> => ({ running, freeSlots: 16 - running });
const req = (o: Partial<PickRequest> = {}): PickRequest => ({ model: "m", promptTokens: 100, maxTokens: 100, ...o });
const near = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

const GREEDY_90 = { numDrafts: 100, acceptanceLength: 3.4, acceptRates: [0.9, 0.9, 0.9] };
const SAMPLED_20 = { numDrafts: 100, acceptanceLength: 1.2, acceptRates: [0.2, 0.2, 0.2] };

describe("router cost model - expected tokens per step by class", () => {
  const rep = rank("a", { mtpAcceptance: 2.2, mtpByClass: { greedy: { numDrafts: 9, acceptanceLength: 2.5, acceptRates: [0.9, 0.8, 0.5] } } }).report;
  const cases: { name: string; cls?: "greedy" | "sampled"; k: number; want: number }[] = [
    { name: "no drafts: one token", cls: "greedy", k: 0, want: 1 },
    { name: "one draft: 1 + α1", cls: "greedy", k: 1, want: 1.9 },
    { name: "two drafts: 1 + α1 + α1α2", cls: "greedy", k: 2, want: 1 + 0.9 + 0.72 },
    { name: "three drafts", cls: "greedy", k: 3, want: 1 + 0.9 + 0.72 + 0.36 },
    { name: "deeper than reported: the last rate repeats", cls: "greedy", k: 4, want: 1 + 0.9 + 0.72 + 0.36 + 0.18 },
    { name: "a class the rank has not reported: its overall acceptance length", cls: "sampled", k: 2, want: 2.2 },
    { name: "no class given: the overall acceptance length", k: 3, want: 2.2 },
  ];
  for (const c of cases) it(c.name, () => near(expectedTokensPerStep(rep, c.cls, c.k), c.want));
});

describe("router cost model - step time at a batch size from the rank's curve", () => {
  const curve = [pt(1, 10), pt(4, 16), pt(16, 40)];
  const cases: { name: string; o: Partial<LoadReport>; batch: number; wantMs: number; wantTokens?: number }[] = [
    { name: "at a measured point: its time", o: { stepCurve: curve }, batch: 4, wantMs: 16 },
    { name: "between points: linear", o: { stepCurve: curve }, batch: 2, wantMs: 10 + (6 * 1) / 3 },
    { name: "between the upper points", o: { stepCurve: curve }, batch: 10, wantMs: 16 + (24 * 6) / 12 },
    { name: "points in any order", o: { stepCurve: [pt(16, 40), pt(1, 10), pt(4, 16)] }, batch: 10, wantMs: 28 },
    { name: "past the last point: the last segment's slope", o: { stepCurve: curve, maxSlots: 32 }, batch: 32, wantMs: 40 + (24 / 12) * 16 },
    { name: "below the first point: the first point", o: { stepCurve: [pt(2, 10), pt(8, 20)] }, batch: 1, wantMs: 10 },
    { name: "one point, beyond it: the scalar model's slope from there", o: { stepCurve: [pt(2, 10)] }, batch: 6, wantMs: 10 + (10 / 16) * 4 },
    { name: "no curve (an older rank): the scalar step time with the fixed slope", o: { stepTimeMs: 10 }, batch: 4, wantMs: 10 * (1 + 4 / 16) },
    { name: "an empty curve is the same as none", o: { stepTimeMs: 8, stepCurve: [] }, batch: 8, wantMs: 8 * (1 + 8 / 16) },
    { name: "a curve below the floor reads the floor", o: { stepCurve: [pt(1, 0.2)] }, batch: 1, wantMs: DEFAULT_PICK_OPTIONS.minStepMs },
    {
      name: "depths differ between points: tokens per step interpolate too",
      o: { stepCurve: [pt(1, 12, 3), pt(8, 30, 1)], mtpByClass: { greedy: GREEDY_90 } },
      batch: 4.5,
      wantMs: 21,
      wantTokens: (1 + 0.9 + 0.81 + 0.729 + (1 + 0.9)) / 2,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const s = stepAt(rank("a", c.o).report, c.batch, "greedy");
      near(s.stepMs, c.wantMs);
      if (c.wantTokens !== undefined) near(s.tokensPerStep, c.wantTokens);
    });
  }

  it("a request the router caps (no speculation) gets one token per step whatever the curve's depth", () => {
    const rep = rank("a", { stepCurve: [pt(1, 12, 3)], mtpByClass: { greedy: GREEDY_90 } }).report;
    near(stepAt(rep, 1, "greedy").tokensPerStep, 1 + 0.9 + 0.81 + 0.729);
    near(stepAt(rep, 1, "greedy", DEFAULT_PICK_OPTIONS, true).tokensPerStep, 1);
  });
});

describe("pickRank - step-time curves and class acceptance", () => {
  // a: 5 ms alone but 80 ms at 16; b: 10 ms alone, 14 ms at 16
  const steep = pt(1, 5), steepFull = pt(16, 80), flat = pt(1, 10), flatFull = pt(16, 14);
  const mtpRank = { stepCurve: [pt(1, 14, 3)], mtpAcceptance: 2, mtpByClass: { greedy: GREEDY_90, sampled: SAMPLED_20 } };
  const cases: { name: string; ranks: RankView[]; req?: Partial<PickRequest>; want: string }[] = [
    { name: "both idle: the rank fast at batch 1 wins", ranks: [rank("a", { stepCurve: [steep, steepFull] }), rank("b", { stepCurve: [flat, flatFull] })], want: "a" },
    { name: "both at batch 8: the flat rank wins over the steep one", ranks: [rank("a", { stepCurve: [steep, steepFull], ...busy(7) }), rank("b", { stepCurve: [flat, flatFull], ...busy(7) })], want: "b" },
    { name: "the steep rank idle still beats the flat one busy", ranks: [rank("a", { stepCurve: [steep, steepFull] }), rank("b", { stepCurve: [flat, flatFull], ...busy(7) })], want: "a" },
    { name: "requests placed since the last report move a rank along its curve", ranks: [rank("a", { stepCurve: [steep, steepFull] }, 7), rank("b", { stepCurve: [flat, flatFull] }, 7)], want: "b" },
    { name: "greedy: the MTP rank's accepted drafts beat a faster plain step", ranks: [rank("a", { stepCurve: [pt(1, 10)] }), rank("b", mtpRank)], req: { requestClass: "greedy" }, want: "b" },
    { name: "sampled: its drafts are rarely accepted, so the faster plain rank wins", ranks: [rank("a", { stepCurve: [pt(1, 10)] }), rank("b", mtpRank)], req: { requestClass: "sampled" }, want: "a" },
    { name: "no class: the MTP rank's overall acceptance decides", ranks: [rank("a", { stepCurve: [pt(1, 10)] }), rank("b", mtpRank)], want: "b" },
    { name: "a curved rank and a scalar-only rank compare", ranks: [rank("a", { stepTimeMs: 10 }), rank("b", { stepCurve: [pt(1, 9)] })], want: "b" },
  ];
  for (const c of cases) it(c.name, () => assert.equal(pickRank(req(c.req), c.ranks)?.workerId, c.want));

  it("predicted time = step time at the batch × (prefill steps + max tokens ÷ tokens per step)", () => {
    // idle: batch 1, one prefill step (100 prompt tokens < budget 512), 100 tokens
    near(predictFinishMs(req(), rank("a", { stepCurve: [pt(1, 10)] })), 10 * (1 + 100));
    near(predictFinishMs(req({ requestClass: "greedy" }), rank("b", mtpRank)), 14 * (1 + 100 / (1 + 0.9 + 0.81 + 0.729)));
    near(predictFinishMs(req({ requestClass: "sampled" }), rank("b", mtpRank)), 14 * (1 + 100 / (1 + 0.2 + 0.04 + 0.008)));
    // batch 8 on the steep rank: 5 + 75 × 7/15
    near(predictFinishMs(req(), rank("a", { stepCurve: [steep, steepFull], ...busy(7) })), (5 + (75 * 7) / 15) * 101);
  });

  it("a rank being filled past the speculation threshold is predicted at one token per step (the request will carry maxDraftTokens 0)", () => {
    const filling = rank("a", { ...busy(12), stepTimeMs: 10, mtpAcceptance: 3 });
    near(predictFinishMs(req(), filling), 10 * (1 + 13 / 16) * 101);
    assert.equal(pickRank(req(), [filling])?.maxDraftTokens, 0);
  });
});

describe("pickRank - SLO", () => {
  // scalar ranks, batch 1 of 16: a (the session's) 14 × 1.0625 × 101 ≈ 1503 ms, b 10 × 1.0625 × 101 ≈ 1073 ms
  const ranks = () => [rank("a", { stepTimeMs: 14 }), rank("b", { stepTimeMs: 10 })];
  const cases: { name: string; sloMs?: number; want: string; reason: string; meets: boolean }[] = [
    { name: "no SLO: the session's rank is kept within the affinity slack", want: "a", reason: "session-affinity", meets: true },
    { name: "the session's rank would miss the SLO and another meets it: the other", sloMs: 1200, want: "b", reason: "least-time", meets: true },
    { name: "both meet the SLO: the session's rank", sloMs: 2000, want: "a", reason: "session-affinity", meets: true },
    { name: "no rank meets the SLO: affinity as without one, flagged", sloMs: 500, want: "a", reason: "session-affinity", meets: false },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const pick = pickRank(req({ sessionWorkerId: "a", ...(c.sloMs !== undefined ? { sloMs: c.sloMs } : {}) }), ranks());
      assert.equal(pick?.workerId, c.want);
      assert.equal(pick?.reason, c.reason);
      assert.equal(pick?.meetsSlo, c.meets);
    });
  }
});
