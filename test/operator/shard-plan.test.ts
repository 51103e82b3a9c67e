import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { primaryRange, primaryRank, resolveShardPlan, type ShardPlan } from "../../contracts/model-deployment-shard-plan.js";
import { placeHotExperts } from "../../operator/desired/shard-plan.js";

function plan(worldSize: number, slots: number, numExperts: number | null = null): ShardPlan {
  return { version: 1, worldSize, numExperts, layout: "contiguous", redundantSlotsPerRank: slots, replicas: [] };
}

describe("shard plan", () => {
  it("primaryRank is the inverse of primaryRange for every expert count and rank count", () => {
    for (const [experts, ranks] of [[128, 4], [128, 8], [10, 3], [7, 7], [512, 6], [64, 1]] as const) {
      for (let r = 0; r < ranks; r++) {
        const { start, end } = primaryRange(r, experts, ranks);
        for (let e = start; e < end; e++) assert.equal(primaryRank(e, experts, ranks), r, `${experts} experts on ${ranks} ranks: expert ${e}`);
      }
      assert.equal(primaryRange(ranks - 1, experts, ranks).end, experts);
    }
  });

  const cases: [string, number, number, number[]][] = [
    ["8 experts on 4 ranks", 8, 4, [2, 2, 2, 2]],
    ["128 experts on 8 ranks", 128, 8, [16, 16, 16, 16, 16, 16, 16, 16]],
    ["10 experts on 3 ranks (uneven, balanced)", 10, 3, [3, 3, 4]],
  ];
  for (const [what, experts, ranks, counts] of cases) {
    it(`resolves contiguous blocks: ${what}`, () => {
      const resolved = resolveShardPlan(plan(ranks, 0), experts);
      assert.deepEqual(resolved.expertsByRank.map((es) => es.length), counts);
      assert.ok(resolved.ranksByExpert.every((rs) => rs.length === 1));
    });
  }

  it("refuses a plan made for another expert count, and replicas beyond the spare slots", () => {
    assert.throws(() => resolveShardPlan(plan(4, 0, 64), 128), /64 experts/);
    assert.throws(() => resolveShardPlan({ ...plan(4, 0), replicas: [{ expert: 0, ranks: [1] }] }, 8), /more than 0 replicas/);
    assert.throws(() => resolveShardPlan({ ...plan(4, 1), replicas: [{ expert: 0, ranks: [0] }] }, 8), /placed twice/);
  });

  it("copies the hottest expert of the busiest rank into a free slot of the least loaded rank", () => {
    // rank 0 holds experts 0,1; expert 0 is hot
    const load = [100, 10, 10, 10, 10, 10, 10, 10];
    const replicas = placeHotExperts(plan(4, 1), load);
    assert.equal(replicas.length, 1);
    assert.equal(replicas[0]?.expert, 0);
    assert.ok(replicas[0]?.ranks.includes(1), "the first copy goes to the first least-loaded rank");
    const resolved = resolveShardPlan({ ...plan(4, 1), replicas }, 8);
    const peak = (r: typeof resolved) => Math.max(...r.expertsByRank.map((es) => es.reduce((s, e) => s + (load[e] ?? 0) / (r.ranksByExpert[e]?.length ?? 1), 0)));
    assert.ok(peak(resolved) < 110, "the busiest rank carries less than before");
  });

  it("places no copies when the load is even or there are no spare slots", () => {
    assert.deepEqual(placeHotExperts(plan(4, 2), [5, 5, 5, 5, 5, 5, 5, 5]), []);
    assert.deepEqual(placeHotExperts(plan(4, 0), [100, 1, 1, 1, 1, 1, 1, 1]), []);
  });
});
