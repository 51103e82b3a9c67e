/**
 * Coordinated drain of an expert-parallel group: SIGTERM to any rank drains every rank, and every
 * rank exits 0 after the same engine step.
 *
 * A rank cannot simply drain alone: its peers need it in every collective until they finish too, and
 * ranks must stop stepping at the same step (a rank that steps once more waits for a peer that has
 * gone, and fails). The engine API has no per-step flag to carry this, so the agreement runs over
 * NATS on the group's control subject (`lm.<ns>.<dep>.group.<group>.control`) and is pinned to the
 * engine's step count, which is the same on every rank (each engine.step of a rank is one group step):
 *
 *   1. `drain {rank}`: the rank that got SIGTERM asks the group to drain; every rank that hears it
 *      stops taking requests and finishes what it accepted, stepping in lockstep as before.
 *   2. `idle {rank}`: a draining rank whose queues are empty says so. Draining ranks accept nothing,
 *      so this is final: from now on the rank only steps empty batches.
 *   3. When the leader (rank 0) holds `idle` from every rank it does not start its next step: with
 *      the leader missing no peer can finish step L+1 (L: the leader's steps so far), so every rank
 *      is at step L or inside step L+1. It publishes `final {step: L+1}` and waits for `ack`s.
 *   4. Each rank acks; once all have acked (or half the collective timeout passed) the leader takes
 *      step L+1 with the others, and every rank stops stepping after step L+1 and exits 0.
 *
 * Every message is repeated each `republishMs` until the rank finishes, so a message lost or sent
 * before a peer subscribed is heard later. Stale messages from an earlier incarnation of the group
 * cannot reach this one: a rank subscribes after its engine loaded, i.e. after the rendezvous, which
 * needs a fresh process on every rank, so every process of the earlier incarnation had exited.
 */
import { z } from "zod";
import type { NatsConnection, Subscription } from "nats";
import { decodeMessage, encodeMessage } from "../contracts/messages.js";
import type { Logger } from "../core/log.js";
import type { StepEngine } from "./engine-port.js";
import type { NativeStepResult, NativeStepSequence } from "./native.js";

const Rank = z.number().int().min(0);
const Common = { rank: Rank, worldSize: z.number().int().min(2) };

/** Messages on a group's control subject (worker to worker only). */
export const GroupControl = z.discriminatedUnion("type", [
  z.object({ type: z.literal("drain"), ...Common, reason: z.string().max(200) }),
  z.object({ type: z.literal("idle"), ...Common }),
  z.object({ type: z.literal("final"), ...Common, step: z.number().int().min(1) }),
  z.object({ type: z.literal("ack"), ...Common, step: z.number().int().min(1) }),
]);
export type GroupControl = z.infer<typeof GroupControl>;

/** The control subject of one group of one deployment (`prefix`: DeploymentSubjects.prefix). */
export function groupControlSubject(prefix: string, group: string): string {
  return `${prefix}.group.${group}.control`;
}

const EMPTY_RESULT: NativeStepResult = {
  tokens: new Int32Array(0),
  logits: new Float32Array(0),
  numAccepted: new Int32Array(0),
  drafts: new Int32Array(0),
  mtpLogits: new Float32Array(0),
  groupTokens: 0,
};

/**
 * The engine as the worker loop sees it inside a group: counts steps, lets a hook run before a step
 * (the leader's hold), and after the agreed final step answers empty batches without the engine.
 */
export class GroupStepper implements StepEngine {
  /** Engine steps completed (the same number on every rank between steps). */
  stepsDone = 0;
  private finalStep: number | null = null;
  private beforeNext: ((stepsDone: number) => Promise<void>) | null = null;
  private settleFinished: () => void = () => undefined;
  /** Resolves after the final step completed. */
  readonly finished = new Promise<void>((resolve) => (this.settleFinished = resolve));

  constructor(private readonly inner: StepEngine) {}

  /** As the engine it wraps (the loop's MTP skip rule depends on it). */
  get mtpCatchesUp(): boolean | undefined {
    return this.inner.mtpCatchesUp;
  }

  get final(): number | null {
    return this.finalStep;
  }

  /** Stop after engine step `step` (counted from 1). */
  setFinal(step: number): void {
    this.finalStep = step;
    if (this.stepsDone >= step) this.settleFinished();
  }

  /** Runs `hook` once, before the next engine step starts. */
  holdNext(hook: (stepsDone: number) => Promise<void>): void {
    this.beforeNext = hook;
  }

  async step(sequences: NativeStepSequence[]): Promise<NativeStepResult> {
    if (this.finalStep !== null && this.stepsDone >= this.finalStep) {
      if (sequences.length > 0) throw new Error(`the group drained after step ${this.finalStep}; no more steps`);
      return EMPTY_RESULT;
    }
    const hook = this.beforeNext;
    this.beforeNext = null;
    if (hook) await hook(this.stepsDone);
    const result = await this.inner.step(sequences);
    this.stepsDone++;
    if (this.finalStep !== null && this.stepsDone >= this.finalStep) this.settleFinished();
    return result;
  }
}

export interface GroupDrainOptions {
  readonly rank: number;
  readonly worldSize: number;
  /** Repeat period of this rank's messages while draining. */
  readonly republishMs: number;
  /** How long the leader waits for acks of the final step (keep below the collective timeout). */
  readonly ackTimeoutMs: number;
}

/** The protocol of one rank; I/O through `publish` and `onMessage` (wired to NATS by `attach`). */
export class GroupDrain {
  private draining = false;
  private reason = "";
  private locallyIdle = false;
  private holdArmed = false;
  private readonly idle = new Set<number>();
  private readonly acks = new Set<number>();
  private allAcked: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private settleRequested: (reason: string) => void = () => undefined;
  /** Resolves (with the reason) when this rank starts draining, on its own or a peer's request. */
  readonly requested = new Promise<string>((resolve) => (this.settleRequested = resolve));

  constructor(
    private readonly opts: GroupDrainOptions,
    private readonly stepper: GroupStepper,
    /** Stops taking requests; resolves once this rank has no accepted work left. */
    private readonly drainLocal: () => Promise<void>,
    private readonly publish: (msg: GroupControl) => void,
    private readonly log: Logger,
  ) {}

  /** Resolves after the group's final step. */
  get finished(): Promise<void> {
    return this.stepper.finished;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Starts draining the group (idempotent). */
  start(reason: string): void {
    if (this.draining) return;
    this.draining = true;
    this.reason = reason;
    this.log.info({ reason }, "draining the expert-parallel group");
    this.settleRequested(reason);
    this.publishState();
    this.timer = setInterval(() => this.publishState(), this.opts.republishMs);
    this.timer.unref();
    this.drainLocal().then(
      () => {
        this.locallyIdle = true;
        this.log.info({ stepsDone: this.stepper.stepsDone }, "group drain: this rank's work is done; stepping with the group until every rank is done");
        this.publishState();
        this.onIdle(this.opts.rank);
      },
      (err: unknown) => this.log.error({ err }, "group drain: local drain failed"),
    );
  }

  /** Handles one message from the control subject (this rank's own included). */
  onMessage(msg: GroupControl): void {
    const { rank, worldSize } = this.opts;
    if (msg.worldSize !== worldSize || msg.rank >= worldSize) {
      this.log.warn({ msg }, "group drain: ignoring a control message for a different group size");
      return;
    }
    switch (msg.type) {
      case "drain":
        if (msg.rank !== rank) this.start(`rank ${msg.rank}: ${msg.reason}`);
        return;
      case "idle":
        this.onIdle(msg.rank);
        return;
      case "final":
        if (rank === 0) return;
        this.start("the group is finishing");
        if (this.stepper.final === null) {
          if (this.stepper.stepsDone > msg.step) this.log.error({ stepsDone: this.stepper.stepsDone, final: msg.step }, "group drain: this rank is past the final step");
          this.log.info({ final: msg.step, stepsDone: this.stepper.stepsDone }, "group drain: stopping after the final step");
          this.stepper.setFinal(msg.step);
        }
        this.publish({ type: "ack", rank, worldSize, step: msg.step });
        return;
      case "ack":
        if (rank !== 0 || msg.step !== this.stepper.final) return;
        this.acks.add(msg.rank);
        if (this.acks.size >= worldSize - 1) this.allAcked?.();
        return;
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  /** Stops repeating messages. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.allAcked?.();
  }

  private onIdle(from: number): void {
    const { rank, worldSize } = this.opts;
    if (rank !== 0) return;
    this.idle.add(from);
    if (this.idle.size < worldSize || !this.locallyIdle || this.holdArmed) return;
    this.holdArmed = true;
    // every rank is draining with empty queues: the next step of the leader's becomes the last
    this.stepper.holdNext(async (stepsDone) => {
      const final = stepsDone + 1;
      this.stepper.setFinal(final);
      const acked = new Promise<void>((resolve) => (this.allAcked = resolve));
      this.log.info({ final }, "group drain: every rank is idle; the group stops after the final step");
      this.publishState();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([acked.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), this.opts.ackTimeoutMs)))]);
      clearTimeout(timer);
      if (timedOut) {
        const missing = Array.from({ length: worldSize - 1 }, (_, i) => i + 1).filter((r) => !this.acks.has(r));
        this.log.warn({ missing, final }, "group drain: some ranks did not acknowledge the final step; stepping anyway");
      }
    });
  }

  private publishState(): void {
    const { rank, worldSize } = this.opts;
    if (!this.draining) return;
    this.publish({ type: "drain", rank, worldSize, reason: this.reason.slice(0, 200) });
    if (this.locallyIdle) this.publish({ type: "idle", rank, worldSize });
    const final = this.stepper.final;
    if (rank === 0 && final !== null) this.publish({ type: "final", rank, worldSize, step: final });
  }
}

/** Subscribes `drain` to the group's control subject and publishes its messages there. */
export function attachGroupDrain(nc: NatsConnection, subject: string, log: Logger): { publish: (msg: GroupControl) => void; listen: (drain: GroupDrain) => Subscription } {
  return {
    publish: (msg) => {
      if (!nc.isClosed()) nc.publish(subject, encodeMessage(msg));
    },
    listen: (drain) =>
      nc.subscribe(subject, {
        callback: (_err, m) => {
          const decoded = decodeMessage(GroupControl, m.data, "GroupControl");
          if (!decoded.ok) return void log.warn({ error: decoded.error }, "group drain: invalid control message");
          drain.onMessage(decoded.value);
        },
      }),
  };
}
