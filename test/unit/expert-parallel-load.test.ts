/**
 * Shard-plan loading on a rank (worker/shard-plan.ts) and what an engine rank loads with it: the
 * replicated weights and only its own routed experts, from dummy weights and from safetensors
 * alike. Two ranks of a group run in this one process (each engine's rendezvous and collectives run
 * on its own libuv pool thread), so no child processes are needed.
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LatentMeshError } from "../../contracts/errors.js";
import type { ShardPlan } from "../../contracts/model-deployment-shard-plan.js";
import { freePort } from "../support/nats-server.js";
import { Engine, type EngineLoadOptions, type StepSequence } from "../../worker/engine.js";
import { contiguousShardPlan, parseShardPlan, planForGroup, readShardPlan } from "../../worker/shard-plan.js";
import { FIXTURES } from "../support/paths.js";

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function isConfigError(re: RegExp) {
  return (e: unknown) => e instanceof LatentMeshError && e.code === "invalid_config" && re.test(e.message);
}

describe("shard plan loading (worker/shard-plan.ts)", () => {
  it("the default plan is contiguous and balanced without replicas", () => {
    const r = planForGroup(contiguousShardPlan(3), 3, 8);
    assert.deepEqual(r.expertsByRank, [[0, 1], [2, 3, 4], [5, 6, 7]]);
    assert.deepEqual(r.ranksByExpert[4], [1]);
  });

  it("reads the operator's plan.json with replicas (primary rank first)", () => {
    const path = join(mkdtempSync(join(tmpdir(), "lm-plan-")), "plan.json");
    writeFileSync(path, JSON.stringify({ version: 1, worldSize: 2, numExperts: null, layout: "contiguous", redundantSlotsPerRank: 1, replicas: [{ expert: 0, ranks: [1] }] }));
    const r = planForGroup(readShardPlan(path), 2, 6);
    assert.deepEqual(r.expertsByRank, [[0, 1, 2], [3, 4, 5, 0]]);
    assert.deepEqual(r.ranksByExpert[0], [0, 1]);
  });

  const bad: [string, () => unknown, RegExp][] = [
    ["a missing file", () => readShardPlan("/nonexistent/plan.json"), /cannot read shard plan \/nonexistent\/plan\.json: ENOENT/],
    ["invalid JSON", () => parseShardPlan("{", "p.json"), /p\.json: not valid JSON/],
    ["an unknown version", () => parseShardPlan(JSON.stringify({ ...contiguousShardPlan(2), version: 2 }), "p.json"), /p\.json: version/],
    ["a plan for another world size", () => planForGroup(contiguousShardPlan(4), 2, 8), /shard plan is for 4 ranks, the group has 2/],
    ["a plan for another expert count", () => planForGroup({ ...contiguousShardPlan(2), numExperts: 16 }, 2, 8), /for 16 experts, the checkpoint has 8/],
    ["more ranks than experts", () => planForGroup(contiguousShardPlan(4), 4, 3), /3 experts cannot be sharded across 4 ranks/],
    ["a replica on a rank outside the group", () => planForGroup({ ...contiguousShardPlan(2), redundantSlotsPerRank: 1, replicas: [{ expert: 1, ranks: [5] }] }, 2, 4), /on rank 5/],
  ];
  for (const [what, fn, re] of bad) it(`refuses ${what} with an invalid_config error naming it`, () => assert.throws(fn, isConfigError(re)));
});

/** Loads a 2-rank group in this process; rank 0 steps `seqs`, rank 1 steps an empty batch. */
async function twoRanks(base: Omit<EngineLoadOptions, "group">, plan: ShardPlan): Promise<Engine[]> {
  const leaderAddress = `127.0.0.1:${await freePort()}`;
  return Promise.all([0, 1].map((rank) => Engine.load({ ...base, group: { rank, worldSize: 2, leaderAddress, shardPlan: plan, collectiveTimeoutMs: 10_000, rendezvousTimeoutMs: 10_000 } })));
}

function expertParams(e: Engine): number {
  const c = e.config;
  const din = c.moeLatentSize > 0 ? c.moeLatentSize : c.hiddenSize;
  return [...c.pattern].filter((k) => k === "E").length * 2 * c.moeIntermediateSize * din;
}

const cases: [string, Omit<EngineLoadOptions, "group">][] = [
  ["dummy weights", { modelDir: join(FIXTURES, "tiny-chat"), loadFormat: "dummy", backend: "cpu", maxSlots: 2, kvBlockSize: 16, numKvBlocks: 8, threads: 1 }],
  ["safetensors (sharded checkpoint)", { modelDir: join(FIXTURES, "nh-bf16-latent-sharded"), loadFormat: "auto", backend: "cpu", maxSlots: 2, kvBlockSize: 16, numKvBlocks: 8, threads: 1 }],
];

describe("engine ranks load only their experts", () => {
  for (const [what, base] of cases) {
    it(`${what}: each rank holds the replicated weights and its shard; a 2-rank step equals one process`, async () => {
      const single = await Engine.load(base);
      const plan: ShardPlan = { ...contiguousShardPlan(2), redundantSlotsPerRank: 1, replicas: [{ expert: 0, ranks: [1] }] };
      const [r0, r1] = (await twoRanks(base, plan)) as [Engine, Engine];
      try {
        const E = single.config.nRoutedExperts;
        const held = [Math.floor(E / 2), E - Math.floor(E / 2) + 1];
        assert.equal(r0.info.numParameters, single.info.numParameters - (E - (held[0] as number)) * expertParams(single));
        assert.equal(r1.info.numParameters, single.info.numParameters - (E - (held[1] as number)) * expertParams(single));

        const seq: StepSequence = { slotId: 0, tokens: Int32Array.from([1, 5, 9, 3, 7, 2]), position: 0, blockTable: Int32Array.from([0]), sample: true, logits: "all", sampling: GREEDY };
        const want = await single.step([seq]);
        const [got, idle] = await Promise.all([r0.step([seq]), r1.step([])]);
        assert.deepEqual(got.logits, want.logits);
        assert.equal(got.groupTokens, 6);
        assert.equal(idle.groupTokens, 6, "every rank sees the group's token count");
        assert.equal(idle.tokens.length, 0);

        // counters: rank 0 counted k experts per token per MoE layer, rank 1 (no tokens) nothing
        const counts = r0.expertTokenCounts();
        const k = single.config.numExpertsPerTok;
        assert.deepEqual(counts.layers, [...single.config.pattern].flatMap((c, i) => (c === "E" ? [i] : [])));
        for (let l = 0; l < counts.layers.length; l++) assert.equal(counts.counts.slice(l * E, (l + 1) * E).reduce((a, b) => a + b, 0), 6 * k);
        assert.deepEqual(r0.expertTokenCounts().counts, single.expertTokenCounts().counts);
        assert.ok(r1.expertTokenCounts().counts.every((c) => c === 0));

        const [end0, end1] = await Promise.all([r0.step([]), r1.step([])]);
        assert.equal(end0.groupTokens + end1.groupTokens, 0, "an all-empty step ends with the group idle");
      } finally {
        for (const e of [single, r0, r1]) e.close();
      }
    });
  }
});
