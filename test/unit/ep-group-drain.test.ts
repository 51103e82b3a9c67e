/**
 * The group drain protocol (worker/group-drain.ts) on simulated ranks: a lockstep fake engine (every
 * rank's step n completes only when all ranks started step n) and an in-memory bus that may lose
 * messages. Whoever asks, every rank finishes its work, all stop after the same step, and nobody
 * steps the engine past it (which would hang a real group).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "../../core/log.js";
import { GroupControl, GroupDrain, GroupStepper } from "../../worker/group-drain.js";
import type { StepEngine } from "../../worker/engine-port.js";
import type { NativeStepResult, NativeStepSequence } from "../../worker/native.js";

const log = createLogger({ name: "test", level: "silent", format: "json" });

/** Step n of every rank resolves once all ranks entered step n; records who stepped what. */
class LockstepBarrier {
  private readonly waiting = new Map<number, { tokens: number; resolve: (t: number) => void }[]>();
  readonly steps: number[];
  /** When each rank entered each step: `${rank}:${step}` → ms. */
  readonly enteredAt = new Map<string, number>();
  constructor(readonly worldSize: number) {
    this.steps = Array.from({ length: worldSize }, () => 0);
  }
  engine(rank: number): StepEngine {
    return {
      step: (seqs: NativeStepSequence[]) => {
        const n = ++this.steps[rank]!;
        this.enteredAt.set(`${rank}:${n}`, performance.now());
        return new Promise<NativeStepResult>((resolve) => {
          const list = this.waiting.get(n) ?? [];
          list.push({ tokens: seqs.length, resolve: (groupTokens) => resolve({ tokens: new Int32Array(seqs.length), logits: new Float32Array(0), numAccepted: new Int32Array(seqs.length), drafts: new Int32Array(0), mtpLogits: new Float32Array(0), groupTokens }) });
          this.waiting.set(n, list);
          if (list.length === this.worldSize) {
            this.waiting.delete(n);
            const total = list.reduce((s, w) => s + w.tokens, 0);
            setImmediate(() => list.forEach((w) => w.resolve(total)));
          }
        });
      },
    };
  }
}

interface SimRank {
  readonly stepper: GroupStepper;
  readonly drain: GroupDrain;
  remaining: number;
  /** Tokens the rank's work still had when its loop stopped. */
  readonly stopped: Promise<void>;
}

/**
 * `work[r]`: tokens rank r still has to step; `drop(msg, n)`: lose the n-th message of its kind.
 * Each rank runs a loop like the worker's lockstep loop: one step per turn, empty when idle.
 */
function simulate(work: number[], drop: (msg: GroupControl, n: number) => boolean = () => false, ackTimeoutMs = 2000): { ranks: SimRank[]; barrier: LockstepBarrier } {
  const W = work.length;
  const barrier = new LockstepBarrier(W);
  const seen = new Map<string, number>();
  const ranks: SimRank[] = [];
  const publish = (msg: GroupControl) => {
    const key = `${msg.type}:${msg.rank}`;
    const n = (seen.get(key) ?? 0) + 1;
    seen.set(key, n);
    if (drop(msg, n)) return;
    setImmediate(() => ranks.forEach((r) => r.drain.onMessage(msg)));
  };
  for (let rank = 0; rank < W; rank++) {
    const stepper = new GroupStepper(barrier.engine(rank));
    let idle: () => void = () => undefined;
    const idlePromise = new Promise<void>((r) => (idle = r));
    const sim = { remaining: work[rank] as number } as { remaining: number };
    const drain = new GroupDrain({ rank, worldSize: W, republishMs: 3, ackTimeoutMs }, stepper, () => (sim.remaining === 0 ? Promise.resolve() : idlePromise), publish, log);
    const stopped = (async () => {
      for (;;) {
        const batch = sim.remaining > 0 ? [{} as NativeStepSequence] : [];
        await stepper.step(batch);
        if (sim.remaining > 0 && --sim.remaining === 0) idle();
        if (stepper.final !== null && stepper.stepsDone >= stepper.final) return;
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    ranks.push(Object.assign(sim, { stepper, drain, stopped }));
  }
  return { ranks, barrier };
}

async function finishWithin<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`not finished within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function drained(ranks: SimRank[], barrier: LockstepBarrier): Promise<number> {
  await finishWithin(Promise.all(ranks.map((r) => r.drain.finished)), 5000);
  await finishWithin(Promise.all(ranks.map((r) => r.stopped)), 5000);
  ranks.forEach((r) => r.drain.close());
  const final = ranks[0]?.stepper.final as number;
  for (const [i, r] of ranks.entries()) {
    assert.equal(r.remaining, 0, `rank ${i} stopped with work left`);
    assert.equal(r.stepper.final, final, `rank ${i} agreed on another final step`);
    assert.equal(r.stepper.stepsDone, final, `rank ${i} stopped after step ${r.stepper.stepsDone}, not ${final}`);
  }
  // nobody entered a step past the final one (a real group would wait for a rank that has gone)
  assert.deepEqual(barrier.steps, ranks.map(() => final));
  return final;
}

describe("group drain protocol", () => {
  const cases: [string, number[], number][] = [
    ["a follower", [30, 5, 0], 2],
    ["the leader", [0, 40, 12], 0],
    ["the busiest rank", [3, 3, 60, 1], 2],
  ];
  for (const [who, work, asker] of cases) {
    it(`SIGTERM to ${who} (rank ${asker}): every rank finishes its work and all stop after the same step`, async () => {
      const { ranks, barrier } = simulate(work);
      await new Promise((r) => setTimeout(r, 5));
      ranks[asker]?.drain.start("SIGTERM");
      const final = await drained(ranks, barrier);
      assert.ok(final > Math.max(...work) - 5, `final step ${final} came before the work could finish`);
    });
  }

  it("converges when drain, idle, final and ack messages are lost (each is repeated)", async () => {
    const { ranks, barrier } = simulate([10, 20, 5], (msg, n) => n <= 2 && msg.type !== "ack");
    ranks[2]?.drain.start("SIGTERM");
    await drained(ranks, barrier);
  });

  for (const [what, dropAcks, atLeastMs, atMostMs] of [["acknowledged it", false, 0, 100], ["waited its ack timeout for a silent rank", true, 190, 2000]] as const) {
    it(`the leader takes the final step only once every rank ${what}`, async () => {
      let decidedAt = 0;
      const ackedAt = new Map<number, number>();
      const { ranks, barrier } = simulate([4, 4, 4], (msg) => {
        if (msg.type === "final" && decidedAt === 0) decidedAt = performance.now();
        if (msg.type === "ack" && !ackedAt.has(msg.rank)) ackedAt.set(msg.rank, performance.now());
        return dropAcks && msg.type === "ack" && msg.rank === 2;
      }, 200);
      ranks[1]?.drain.start("SIGTERM");
      const final = await drained(ranks, barrier);
      const waitedMs = (barrier.enteredAt.get(`0:${final}`) as number) - decidedAt;
      assert.ok(decidedAt > 0 && waitedMs >= atLeastMs && waitedMs <= atMostMs, `the leader stepped ${waitedMs.toFixed(0)} ms after deciding`);
      // every follower had acknowledged (knew) the final step before the leader took it
      for (const r of [1, 2]) assert.ok((ackedAt.get(r) ?? Infinity) <= (barrier.enteredAt.get(`0:${final}`) as number), `rank ${r} acked after the leader stepped`);
    });
  }

  it("ignores control messages of a group of another size", async () => {
    const { ranks, barrier } = simulate([0, 0]);
    ranks[1]?.drain.onMessage({ type: "drain", rank: 0, worldSize: 3, reason: "x" });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(ranks[1]?.drain.isDraining, false);
    ranks[0]?.drain.start("done");
    await drained(ranks, barrier);
  });
});

describe("GroupStepper", () => {
  it("says what the engine it wraps says about catching the MTP head up (the loop's skip rule depends on it)", () => {
    const engine = (mtpCatchesUp?: boolean): StepEngine => ({ step: async () => ({}) as NativeStepResult, ...(mtpCatchesUp === undefined ? {} : { mtpCatchesUp }) });
    assert.equal(new GroupStepper(engine(true)).mtpCatchesUp, true);
    assert.equal(new GroupStepper(engine(false)).mtpCatchesUp, false);
    assert.equal(new GroupStepper(engine()).mtpCatchesUp, undefined);
  });
});
