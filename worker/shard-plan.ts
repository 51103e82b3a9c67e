/**
 * The shard plan as a rank reads it: the operator's `plan.json` (contracts/model-deployment-shard-plan.ts)
 * from `--shard-plan`, or the default contiguous plan without replicas. Pure apart from reading the file;
 * every problem is an `invalid_config` error naming the file.
 */
import { readFileSync } from "node:fs";
import { LatentMeshError } from "../contracts/errors.js";
import { resolveShardPlan, SHARD_PLAN_VERSION, ShardPlan, type ResolvedShardPlan } from "../contracts/model-deployment-shard-plan.js";

/** Balanced contiguous experts per rank, no replicas: what a group uses without a plan file. */
export function contiguousShardPlan(worldSize: number): ShardPlan {
  return { version: SHARD_PLAN_VERSION, worldSize, numExperts: null, layout: "contiguous", redundantSlotsPerRank: 0, replicas: [] };
}

/** Parses a plan.json's text; `where` names it in errors. */
export function parseShardPlan(text: string, where: string): ShardPlan {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new LatentMeshError("invalid_config", `${where}: not valid JSON (${(e as Error).message})`, "shard-plan");
  }
  const parsed = ShardPlan.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new LatentMeshError("invalid_config", `${where}: ${issue?.path.join(".") || "plan"}: ${issue?.message ?? "invalid"}`, "shard-plan");
  }
  return parsed.data;
}

/** Reads the plan file at `path`. */
export function readShardPlan(path: string): ShardPlan {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new LatentMeshError("invalid_config", `cannot read shard plan ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, "shard-plan");
  }
  return parseShardPlan(text, path);
}

/** The plan resolved for this group and model; checks it was made for this world size. */
export function planForGroup(plan: ShardPlan, worldSize: number, numExperts: number, where = "shard plan"): ResolvedShardPlan {
  if (plan.worldSize !== worldSize) throw new LatentMeshError("invalid_config", `${where} is for ${plan.worldSize} ranks, the group has ${worldSize}`, "shard-plan");
  try {
    return resolveShardPlan(plan, numExperts);
  } catch (e) {
    throw new LatentMeshError("invalid_config", `${where}: ${(e as Error).message}`, "shard-plan");
  }
}
