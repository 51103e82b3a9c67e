/**
 * The shard plan: which rank of a worker group holds which routed experts. The operator writes it
 * into a ConfigMap (`plan.json`); every rank of the group reads the same file, so all ranks agree
 * on where to send each token in the MoE all-to-all.
 *
 * The expert count may be unknown when the operator renders the plan (it is in the checkpoint's
 * config.json). The plan is therefore a rule plus overrides: primary placement is contiguous and
 * balanced for any expert count (`primaryRange`), `replicas` adds copies of hot experts into the
 * `redundantSlotsPerRank` spare slots. `resolveShardPlan` turns it into an explicit table once the
 * expert count is known, at render time or at load time, with the same pure code.
 */
import { z } from "zod";

export const SHARD_PLAN_VERSION = 1;

export const ExpertReplica = z.object({
  expert: z.int().min(0),
  /** Ranks holding an extra copy (never the expert's primary rank). */
  ranks: z.array(z.int().min(0)).min(1),
});
export type ExpertReplica = z.infer<typeof ExpertReplica>;

export const ShardPlan = z.object({
  version: z.literal(SHARD_PLAN_VERSION),
  /** Ranks in the group. */
  worldSize: z.int().min(1),
  /** Routed experts per MoE layer; null when not known yet (ranks resolve the plan at load). */
  numExperts: z.int().min(1).nullable(),
  layout: z.literal("contiguous"),
  /** Spare expert slots per rank for copies of hot experts. */
  redundantSlotsPerRank: z.int().min(0),
  replicas: z.array(ExpertReplica),
});
export type ShardPlan = z.infer<typeof ShardPlan>;

/** Experts [start, end) whose primary copy lives on `rank` (balanced contiguous blocks). */
export function primaryRange(rank: number, numExperts: number, worldSize: number): { start: number; end: number } {
  return { start: Math.floor((rank * numExperts) / worldSize), end: Math.floor(((rank + 1) * numExperts) / worldSize) };
}

/** The rank holding the primary copy of `expert`. */
export function primaryRank(expert: number, numExperts: number, worldSize: number): number {
  // inverse of primaryRange: the largest r with floor(r*E/W) <= expert
  return Math.floor(((expert + 1) * worldSize - 1) / numExperts);
}

/** An explicit plan: for each rank the experts it holds, and for each expert the ranks holding it. */
export interface ResolvedShardPlan {
  readonly numExperts: number;
  readonly worldSize: number;
  /** rank → experts held (primary first, then replicas), ascending within each part. */
  readonly expertsByRank: readonly (readonly number[])[];
  /** expert → ranks holding it, primary first. */
  readonly ranksByExpert: readonly (readonly number[])[];
}

/** Resolves the plan for a known expert count; throws a one-line Error when the plan cannot hold. */
export function resolveShardPlan(plan: ShardPlan, numExperts: number): ResolvedShardPlan {
  if (plan.numExperts !== null && plan.numExperts !== numExperts) {
    throw new Error(`shard plan is for ${plan.numExperts} experts, the checkpoint has ${numExperts}`);
  }
  if (numExperts < plan.worldSize) throw new Error(`${numExperts} experts cannot be sharded across ${plan.worldSize} ranks`);
  const expertsByRank: number[][] = [];
  const ranksByExpert: number[][] = Array.from({ length: numExperts }, () => []);
  for (let r = 0; r < plan.worldSize; r++) {
    const { start, end } = primaryRange(r, numExperts, plan.worldSize);
    const held: number[] = [];
    for (let e = start; e < end; e++) {
      held.push(e);
      ranksByExpert[e]?.push(r);
    }
    expertsByRank.push(held);
  }
  const extra = new Array<number>(plan.worldSize).fill(0);
  for (const { expert, ranks } of plan.replicas) {
    const holders = ranksByExpert[expert];
    if (!holders) throw new Error(`replica of expert ${expert}, but there are ${numExperts} experts`);
    for (const r of ranks) {
      const held = expertsByRank[r];
      if (!held) throw new Error(`replica of expert ${expert} on rank ${r}, but there are ${plan.worldSize} ranks`);
      if (holders.includes(r)) throw new Error(`expert ${expert} is placed twice on rank ${r}`);
      extra[r] = (extra[r] ?? 0) + 1;
      if ((extra[r] ?? 0) > plan.redundantSlotsPerRank) throw new Error(`rank ${r} holds more than ${plan.redundantSlotsPerRank} replicas`);
      held.push(expert);
      holders.push(r);
    }
  }
  return { numExperts, worldSize: plan.worldSize, expertsByRank, ranksByExpert };
}
