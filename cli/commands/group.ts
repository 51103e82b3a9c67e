/**
 * Expert-parallel groups for the CLI's local tools (`logits`, `generate`): `--ranks N` makes this
 * process rank 0 of an N-rank group of CPU processes on loopback and spawns ranks 1..N-1 as child
 * processes (`latentmesh logits --rank r ...`); `--rank r --world-size N --leader-address H:P` joins
 * an existing group as one member. All ranks step in lockstep until the whole group is idle.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { invalid, LatentMeshError } from "../../contracts/errors.js";
import { flag, parse } from "../../core/flags.js";
import type { EngineGroupOptions } from "../../worker/engine.js";
import { contiguousShardPlan, readShardPlan } from "../../worker/shard-plan.js";
import type { StepResult, StepSequence } from "../../worker/engine.js";

const CLI = fileURLToPath(new URL("../../../bin/latentmesh", import.meta.url));

/** Group flags of the CLI tools (never read from the environment: a worker pod's env must not leak in). */
export const CLI_GROUP_FLAGS = {
  ranks: flag(parse.int({ min: 1, max: 64 }).default(1), "run through an N-rank expert-parallel group of CPU processes on loopback (this process is rank 0)", { placeholder: "N", env: null }),
  rank: flag(parse.int({ min: 0 }).optional(), "join a group as this rank (what --ranks passes to the processes it starts)", { placeholder: "R", env: null }),
  worldSize: flag(parse.int({ min: 1, max: 64 }).optional(), "ranks in the group joined with --rank", { placeholder: "N", env: null }),
  leaderAddress: flag(z.string().min(3).optional(), "host:port of rank 0's rendezvous endpoint (with --rank)", { placeholder: "ADDR", env: null }),
  shardPlan: flag(z.string().min(1).optional(), "shard plan JSON (expert → ranks; default: contiguous, no replicas)", { placeholder: "FILE", env: null }),
  collectiveTimeoutMs: flag(parse.int({ min: 100 }).default(30_000), "a rank silent this long in a collective fails the group", { placeholder: "MS", env: null }),
};

interface GroupFlags {
  readonly ranks: number;
  readonly rank?: number | undefined;
  readonly worldSize?: number | undefined;
  readonly leaderAddress?: string | undefined;
  readonly shardPlan?: string | undefined;
  readonly collectiveTimeoutMs: number;
}

/** How long a local group waits for its processes to load and meet. */
const LOCAL_RENDEZVOUS_MS = 120_000;

/** This process's place in a group (undefined: no group), validated. */
export function groupOf(f: GroupFlags, leaderAddress?: string): EngineGroupOptions | undefined {
  if (f.rank !== undefined) {
    if (f.ranks !== 1) throw invalid("give --ranks or --rank, not both", "ranks");
    if (f.worldSize === undefined || f.leaderAddress === undefined) throw invalid("--rank needs --world-size and --leader-address", "rank");
    if (f.rank >= f.worldSize) throw invalid(`--rank ${f.rank} is outside [0, ${f.worldSize})`, "rank");
    return group(f.rank, f.worldSize, f.leaderAddress, f);
  }
  if (f.ranks === 1) return undefined;
  if (!leaderAddress) throw new Error("groupOf: a local group needs its leader address");
  return group(0, f.ranks, leaderAddress, f);
}

function group(rank: number, worldSize: number, leaderAddress: string, f: GroupFlags): EngineGroupOptions {
  return {
    rank,
    worldSize,
    leaderAddress,
    shardPlan: f.shardPlan ? readShardPlan(f.shardPlan) : contiguousShardPlan(worldSize),
    collectiveTimeoutMs: f.collectiveTimeoutMs,
    rendezvousTimeoutMs: LOCAL_RENDEZVOUS_MS,
  };
}

/** Ranks 1..N-1 of a local group, as child processes of this one. */
export class LocalRanks {
  private readonly children: ChildProcess[] = [];
  private readonly exits: Promise<void>[] = [];
  /** Rejects as soon as any rank exits unsuccessfully. */
  readonly failed: Promise<never>;

  constructor(worldSize: number, argsFor: (rank: number) => string[]) {
    let fail: (e: Error) => void = () => {};
    this.failed = new Promise<never>((_, reject) => (fail = reject));
    this.failed.catch(() => undefined);
    for (let r = 1; r < worldSize; r++) {
      const child = spawn(process.execPath, [CLI, ...argsFor(r)], { stdio: ["ignore", "ignore", "inherit"] });
      this.children.push(child);
      this.exits.push(
        new Promise<void>((resolve, reject) => {
          child.once("error", (e) => reject(new LatentMeshError("engine_error", `rank ${r}: ${e.message}`)));
          child.once("exit", (code, signal) => {
            if (code === 0) return resolve();
            const e = new LatentMeshError("engine_error", `rank ${r} of the local group exited with ${signal ?? `code ${code}`}`);
            fail(e);
            reject(e);
          });
        }),
      );
    }
    for (const e of this.exits) e.catch(() => undefined);
  }

  /** Resolves when every rank exited successfully. */
  async wait(): Promise<void> {
    await Promise.all(this.exits);
  }

  kill(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  }
}

/** Steps with lockstep bookkeeping: remembers whether the group was busy in the last step. */
export class LockstepStepper {
  private lastGroupTokens = -1;

  constructor(
    private readonly engine: { step(s: StepSequence[]): Promise<StepResult> },
    private readonly inGroup: boolean,
  ) {}

  async step(batch: StepSequence[]): Promise<StepResult> {
    const r = await this.engine.step(batch);
    this.lastGroupTokens = r.groupTokens;
    return r;
  }

  /** Steps empty batches until a step in which no rank fed a token: every rank has finished. */
  async finish(): Promise<void> {
    while (this.inGroup && this.lastGroupTokens !== 0) await this.step([]);
  }
}
