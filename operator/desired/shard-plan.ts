/**
 * The shard plan of a deployment's worker groups (pure): the plan JSON every rank reads, the
 * ConfigMap holding it, and the placement of redundant copies of hot experts.
 */
import type { V1ConfigMap } from "@kubernetes/client-node";
import { resolveShardPlan, SHARD_PLAN_VERSION, type ExpertReplica, type ShardPlan } from "../../contracts/model-deployment-shard-plan.js";
import { names, PATHS } from "../../contracts/model-deployment-wiring.js";
import { ownedMeta, type DesiredObject, type ValidDeployment } from "./meta.js";

/** The initial plan of a deployment: contiguous primaries, spare slots empty. */
export function planShards(md: ValidDeployment, replicas: readonly ExpertReplica[] = []): ShardPlan {
  return {
    version: SHARD_PLAN_VERSION,
    worldSize: md.spec.workers.expertParallel,
    numExperts: md.spec.model.numExperts ?? null,
    layout: "contiguous",
    redundantSlotsPerRank: md.spec.workers.redundantExpertSlots,
    replicas: [...replicas],
  };
}

/**
 * Fills the spare slots with copies of the hottest experts, given tokens routed to each expert
 * (`expertLoad[e]`, e.g. from latentmesh_worker_expert_tokens_total). Greedy: while it lowers the
 * busiest rank's load, copy that rank's hottest expert to the least-loaded rank with a free slot.
 * A copied expert's load is split evenly across its copies.
 */
export function placeHotExperts(plan: ShardPlan, expertLoad: readonly number[]): ExpertReplica[] {
  const numExperts = expertLoad.length;
  const base = resolveShardPlan({ ...plan, replicas: [] }, numExperts);
  const holders = base.ranksByExpert.map((rs) => [...rs]);
  const free = new Array<number>(plan.worldSize).fill(plan.redundantSlotsPerRank);
  const rankLoad = () => {
    const load = new Array<number>(plan.worldSize).fill(0);
    holders.forEach((rs, e) => rs.forEach((r) => (load[r] = (load[r] ?? 0) + (expertLoad[e] ?? 0) / rs.length)));
    return load;
  };
  const argBy = (xs: readonly number[], better: (a: number, b: number) => boolean, ok: (i: number) => boolean) => {
    let best = -1;
    xs.forEach((x, i) => {
      if (ok(i) && (best < 0 || better(x, xs[best] ?? 0))) best = i;
    });
    return best;
  };
  for (;;) {
    const load = rankLoad();
    const busiest = argBy(load, (a, b) => a > b, () => true);
    const peak = load[busiest] ?? 0;
    const share = (e: number) => (expertLoad[e] ?? 0) / (holders[e]?.length ?? 1);
    const hottest = argBy(
      holders.map((_, e) => share(e)),
      (a, b) => a > b,
      (e) => (holders[e] ?? []).includes(busiest),
    );
    if (hottest < 0 || share(hottest) <= 0) break;
    const target = argBy(load, (a, b) => a < b, (r) => (free[r] ?? 0) > 0 && !(holders[hottest] ?? []).includes(r));
    if (target < 0) break;
    const copies = (holders[hottest]?.length ?? 1) + 1;
    const moved = (expertLoad[hottest] ?? 0) / copies;
    // the copy helps only if the target stays below the old peak
    if ((load[target] ?? 0) + moved >= peak) break;
    holders[hottest]?.push(target);
    free[target] = (free[target] ?? 0) - 1;
  }
  const replicas: ExpertReplica[] = [];
  holders.forEach((rs, expert) => {
    if (rs.length > 1) replicas.push({ expert, ranks: rs.slice(1).sort((a, b) => a - b) });
  });
  return replicas;
}

/** The ConfigMap every rank mounts; `experts-by-rank` is informative, present when the count is known. */
export function buildShardPlanConfigMap(md: ValidDeployment, plan: ShardPlan): DesiredObject & V1ConfigMap {
  const data: Record<string, string> = { [PATHS.shardPlanFile]: `${JSON.stringify(plan, null, 2)}\n` };
  if (plan.numExperts !== null) {
    const resolved = resolveShardPlan(plan, plan.numExperts);
    data["experts-by-rank"] = resolved.expertsByRank.map((es, r) => `rank ${r}: ${es.join(",")}`).join("\n") + "\n";
  }
  return { apiVersion: "v1", kind: "ConfigMap", metadata: ownedMeta(md, names.shardPlan(md.name), "shard-plan"), data };
}
