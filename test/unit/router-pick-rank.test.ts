import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { LoadReport } from "../../contracts/messages.js";
import { DEFAULT_PICK_OPTIONS, pickRank, predictFinishMs, type PickRequest, type RankView } from "../../router/pick-rank.js";
import { RankTable } from "../../router/ranks.js";

/** An idle ready rank; override what the case is about. */
function rank(workerId: string, o: Partial<LoadReport> = {}, placedSinceReport = 0): RankView {
  return {
    placedSinceReport,
    report: {
      type: "load", workerId, model: "m", group: "g0", rank: 0, seq: 1, ready: true, draining: false,
      running: 0, waiting: 0, maxSlots: 8, freeSlots: 8, totalKvBlocks: 1000, freeKvBlocks: 1000, kvBlockSize: 16,
      maxContextTokens: 4096, stepTokenBudget: 512, pendingPrefillTokens: 0, meanRemainingTokens: 0,
      stepTimeMs: 10, tokensPerSecond: 0, mtpAcceptance: 1, ...o,
    },
  };
}

const req = (o: Partial<PickRequest> = {}): PickRequest => ({ model: "m", promptTokens: 100, maxTokens: 100, ...o });

describe("pickRank", () => {
  const cases: { name: string; ranks: RankView[]; req?: Partial<PickRequest>; want: string | null; reason?: string }[] = [
    { name: "no ranks: nothing to pick", ranks: [], want: null },
    { name: "prefers the rank with free slots over one with a queue", ranks: [rank("a", { running: 8, freeSlots: 0, waiting: 4, meanRemainingTokens: 200 }), rank("b", { running: 2, freeSlots: 6 })], want: "b" },
    { name: "prefers the faster rank when both are idle", ranks: [rank("a", { stepTimeMs: 20 }), rank("b", { stepTimeMs: 5 })], want: "b" },
    { name: "a higher MTP acceptance length wins at equal step time", ranks: [rank("a", { mtpAcceptance: 1 }), rank("b", { mtpAcceptance: 2.5 })], want: "b" },
    { name: "skips draining, unready and other-model ranks", ranks: [rank("a", { draining: true }), rank("b", { ready: false }), rank("c", { model: "other" }), rank("d", { running: 7, freeSlots: 1 })], want: "d" },
    { name: "skips ranks whose context is too short", ranks: [rank("a", { maxContextTokens: 150 }), rank("b", { stepTimeMs: 50 })], want: "b" },
    { name: "skips excluded ranks (already failed this request)", ranks: [rank("a"), rank("b", { stepTimeMs: 30 })], req: { exclude: new Set(["a"]) }, want: "b" },
    { name: "counts requests placed since the last report, spreading a burst", ranks: [rank("a", {}, 3), rank("b", {}, 0)], want: "b" },
    { name: "a rank short of KV blocks for the request ranks behind one with room", ranks: [rank("a", { freeKvBlocks: 2, meanRemainingTokens: 100 }), rank("b", { stepTimeMs: 12 })], want: "b" },
    { name: "equal ranks tie-break on worker id", ranks: [rank("b"), rank("a")], want: "a" },
    { name: "session affinity keeps the session's rank when its cost is close", ranks: [rank("a", { running: 1, freeSlots: 7 }), rank("b")], req: { sessionWorkerId: "a" }, want: "a", reason: "session-affinity" },
    { name: "session affinity yields to load", ranks: [rank("a", { running: 8, freeSlots: 0, waiting: 20, meanRemainingTokens: 500 }), rank("b")], req: { sessionWorkerId: "a" }, want: "b", reason: "least-time" },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const pick = pickRank(req(c.req), c.ranks);
      assert.equal(pick?.workerId ?? null, c.want);
      if (c.reason) assert.equal(pick?.reason, c.reason);
    });
  }

  it("predicted time grows with queue, prompt length and output length", () => {
    const base = predictFinishMs(req(), rank("a"));
    assert.ok(predictFinishMs(req(), rank("a", { waiting: 10, freeSlots: 0, meanRemainingTokens: 100 })) > base);
    assert.ok(predictFinishMs(req({ promptTokens: 5000, maxTokens: 1 }), rank("a", { maxContextTokens: 8192 })) > predictFinishMs(req({ promptTokens: 10, maxTokens: 1 }), rank("a")));
    assert.ok(predictFinishMs(req({ maxTokens: 500 }), rank("a")) > base);
    assert.ok(predictFinishMs(req(), rank("a", { stepTimeMs: 0 })) > 0, "an unmeasured rank still costs something");
    assert.equal(DEFAULT_PICK_OPTIONS.affinitySlack > 1, true);
  });
});

describe("rank table", () => {
  it("a rank whose reports stop is dead after deadAfterMs, and listeners hear it once", () => {
    let now = 0;
    const t = new RankTable(1000, () => now);
    const deaths: string[] = [];
    t.onDeath((id) => deaths.push(id));
    t.update(rank("a").report);
    now = 900;
    t.sweep();
    assert.equal(t.isLive("a"), true);
    now = 1001;
    t.sweep();
    t.sweep();
    assert.equal(t.isLive("a"), false);
    assert.deepEqual(deaths, ["a"]);
  });

  it("a rank whose report sequence restarts is treated as a new incarnation (the old one died)", () => {
    const t = new RankTable(1000, () => 0);
    const deaths: string[] = [];
    t.onDeath((id, why) => deaths.push(`${id}: ${why}`));
    t.update(rank("a", { seq: 50 }).report);
    t.update(rank("a", { seq: 0 }).report);
    assert.deepEqual(deaths, ["a: restarted"]);
    assert.equal(t.isLive("a"), true);
  });

  it("placements count until the next report", () => {
    const t = new RankTable(1000, () => 0);
    t.update(rank("a").report);
    t.placed("a");
    t.placed("a");
    assert.equal(t.views()[0]?.placedSinceReport, 2);
    t.update(rank("a", { seq: 2 }).report);
    assert.equal(t.views()[0]?.placedSinceReport, 0);
  });
});

describe("pickRank - MTP speculation cap", () => {
  it("a request placed on a rank it is filling past the threshold carries maxDraftTokens 0", () => {
    assert.equal(pickRank(req(), [rank("a", { running: 6, freeSlots: 2, mtpAcceptance: 2.5 })])?.maxDraftTokens, 0);
    assert.equal(pickRank(req(), [rank("a", { running: 3, freeSlots: 5, mtpAcceptance: 2.5 }, 3)])?.maxDraftTokens, 0, "placements since the report count");
  });
  it("a lightly loaded rank keeps its own adaptive depth (no cap)", () => {
    assert.equal(pickRank(req(), [rank("a", { running: 2, freeSlots: 6, mtpAcceptance: 2.5 })])?.maxDraftTokens, undefined);
  });
  it("the threshold is an option (above 1: never cap)", () => {
    assert.equal(pickRank(req(), [rank("a", { running: 7, freeSlots: 1 })], { ...DEFAULT_PICK_OPTIONS, speculationFill: 2 })?.maxDraftTokens, undefined);
  });
});
