/**
 * The worker's hot loop (nano-vllm's step): schedule → engine.step (one native call, never two in
 * flight) → postprocess → emit. It sleeps while there is no work and wakes on submit or cancel.
 * An engine error ends the sequences of that step with an error and the loop goes on.
 *
 * In an expert-parallel group (`lockstep`) every rank must call engine.step for every group step,
 * with an empty batch when it has nothing to run. The step itself is the agreement: each starts
 * with a header all ranks exchange, and all see the same `groupTokens`. While the group is busy
 * (the last step fed tokens anywhere) an idle rank steps again at once; while it is idle every
 * rank steps an empty batch each `idleTickMs` (a heartbeat that also bounds how long a rank that
 * just got work waits for the others), or at once when local work arrives. No rank leads; the
 * scheduler stays pure. An engine error in a group is fatal: the group is broken (a peer died or
 * hung), so the loop stops and reports it through `onGroupFailed`.
 */
import { requestClassOf, type LoadReport, type RequestClass, type StepCurvePoint } from "../contracts/messages.js";
import type { Logger } from "../core/log.js";
import type { StepEngine } from "./engine-port.js";
import type { NativeStepSequence } from "./native.js";
import type { ScheduleResult, Scheduler, StepOutcome } from "./scheduler.js";
import type { Sequence } from "./sequence.js";
import { StepCostModel, stepCurve, type BatchMix, type SpeculationPolicy, type Verified } from "./speculation.js";

/** Where the loop's results go (the NATS service, or a test). */
export interface LoopSink {
  /** Tokens sampled in one step, finished sequences included. */
  onStep(outcomes: readonly StepOutcome[]): void;
  /** Sequences dropped after cancel(). */
  onCancelled(seqs: readonly Sequence[]): void;
  /** Sequences ended by an engine failure. */
  onFailed(seqs: readonly Sequence[], error: Error): void;
  /** The expert-parallel group failed (lockstep loops only); the loop has stopped. */
  onGroupFailed?(error: Error): void;
}

/** Lockstep stepping with the other ranks of an expert-parallel group. */
export interface LockstepOptions {
  /** How often an idle group steps an empty batch. */
  readonly idleTickMs: number;
}

/** Recent step statistics, for load reports and metrics. */
export interface StepStats {
  /** Exponential moving average of the engine step time. */
  stepTimeMs: number;
  /** Tokens sampled per second over recent steps. */
  tokensPerSecond: number;
  steps: number;
  promptTokens: number;
  generatedTokens: number;
  /** MTP acceptance length: tokens emitted per sequence per verify step (moving average; 1 without speculation). */
  mtpAcceptance: number;
  /** Drafts per sequence chosen for the last step (0: no speculation). */
  draftTokens: number;
  /** Decode step time by batch size (measured points, with the depth used there); computed when read. */
  readonly stepCurve: readonly StepCurvePoint[];
  /** MTP acceptance per request class seen (empty without speculation); computed when read. */
  readonly mtpByClass: NonNullable<LoadReport["mtpByClass"]>;
}

const EMA_ALPHA = 0.2;

export class EngineLoop {
  readonly stats: StepStats;
  /** The router's cap on speculation depth for this rank (Infinity: none). */
  draftCap = Infinity;
  private wake: (() => void) | null = null;
  private stopped = false;
  private idle: Promise<void> = Promise.resolve();
  private settleIdle: (() => void) | null = null;
  private done: Promise<void> | null = null;
  /** The last step fed tokens somewhere in the group. */
  private groupBusy = false;
  /** Pure decode step times by (batch, k): the speculation policy's own, or one kept for the curve alone. */
  private readonly cost: StepCostModel;

  constructor(
    private readonly engine: StepEngine,
    private readonly scheduler: Scheduler,
    private readonly sink: LoopSink,
    private readonly log: Logger,
    private readonly now: () => number = () => performance.now(),
    private readonly lockstep: LockstepOptions | null = null,
    /** MTP speculation depth policy; null when the engine has no MTP layers loaded. */
    private readonly speculation: SpeculationPolicy | null = null,
  ) {
    this.cost = speculation?.cost ?? new StepCostModel();
    const cost = this.cost;
    this.stats = {
      stepTimeMs: 0, tokensPerSecond: 0, steps: 0, promptTokens: 0, generatedTokens: 0, mtpAcceptance: 1, draftTokens: 0,
      get stepCurve() {
        return stepCurve(cost, (batch) => speculation?.depthAt(batch) ?? 0);
      },
      get mtpByClass() {
        return speculation?.classSummaries() ?? {};
      },
    };
  }

  start(): void {
    this.done ??= this.run();
  }

  submit(seq: Sequence): void {
    this.scheduler.add(seq);
    this.kick();
  }

  cancel(requestId: string, attempt?: number): boolean {
    const found = this.scheduler.cancel(requestId, attempt);
    if (found) this.kick();
    return found;
  }

  /** Resolves once no sequence is waiting or running. */
  whenIdle(): Promise<void> {
    return this.scheduler.hasWork ? this.idle : Promise.resolve();
  }

  /** Stops after the current step; resolves when the loop has exited. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.kick();
    await this.done;
  }

  private kick(): void {
    if (this.scheduler.hasWork && !this.settleIdle) {
      this.idle = new Promise((resolve) => (this.settleIdle = resolve));
    }
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let plan = this.schedule();
      if (plan.items.length === 0) {
        if (!this.lockstep) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        if (!this.groupBusy) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            this.wake = resolve;
            timer = setTimeout(resolve, this.lockstep?.idleTickMs);
          });
          clearTimeout(timer);
          this.wake = null;
          if (this.stopped) break;
          plan = this.schedule();
        }
      }
      await this.step(plan);
    }
  }

  private schedule(): ScheduleResult {
    let k = 0;
    if (this.speculation) {
      const mix: Partial<Record<RequestClass, number>> = {};
      let decoding = 0;
      for (const s of this.scheduler.running) {
        if (s.isPrefilling) continue;
        decoding++;
        const cls = requestClassOf(s.sampling);
        mix[cls] = (mix[cls] ?? 0) + 1;
      }
      k = this.speculation.next(Math.max(1, decoding), this.draftCap, decoding > 0 ? (mix as BatchMix) : undefined);
    }
    this.stats.draftTokens = k;
    const plan = this.scheduler.schedule(k);
    if (plan.cancelled.length > 0) this.sink.onCancelled(plan.cancelled);
    if (plan.items.length === 0 && !this.scheduler.hasWork) {
      const settle = this.settleIdle;
      this.settleIdle = null;
      settle?.();
    }
    return plan;
  }

  private async step(plan: ScheduleResult): Promise<void> {
    const t0 = this.now();
    let sampled: Int32Array, numAccepted: ArrayLike<number>, drafts: ArrayLike<number>;
    try {
      const speculating = this.speculation !== null && this.stats.draftTokens > 0;
      const catchesUp = this.engine.mtpCatchesUp === true;
      const result = await this.engine.step(plan.items.map((item) => toNative(item, this.speculation !== null, speculating, catchesUp)));
      sampled = result.tokens;
      numAccepted = result.numAccepted ?? [];
      drafts = result.drafts ?? [];
      this.groupBusy = result.groupTokens > 0;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.log.error({ err: error, batch: plan.items.length }, "engine step failed; ending its sequences");
      this.sink.onFailed(this.scheduler.abort(plan.items), error);
      if (this.lockstep) {
        this.stopped = true;
        this.sink.onGroupFailed?.(error);
      }
      return;
    }
    if (plan.items.length === 0) return;
    const elapsedMs = this.now() - t0;
    const outcomes = this.scheduler.postprocess(plan, sampled, numAccepted, drafts);
    this.record(plan, outcomes.reduce((n, o) => n + o.tokens.length, 0), elapsedMs);
    this.observeSpeculation(plan, outcomes, elapsedMs);
    this.sink.onStep(outcomes);
  }

  /**
   * Feeds the cost model and the policy: acceptance (per request class) from every verify, step time
   * only from pure decode steps (prefill chunks would skew it), with or without speculation.
   */
  private observeSpeculation(plan: ScheduleResult, outcomes: readonly StepOutcome[], elapsedMs: number): void {
    const decodeOnly = plan.items.every((it) => it.numTokens - it.numDrafts === 1 && it.start > 0);
    if (!this.speculation) {
      if (decodeOnly) this.cost.observe(plan.items.length, 0, elapsedMs);
      return;
    }
    const verified: Verified[] = [];
    for (const o of outcomes) {
      if (!o.verified) continue;
      verified.push([o.verified.numDrafts, o.verified.numAccepted, requestClassOf(o.seq.sampling)]);
      const length = 1 + o.verified.numAccepted;
      this.stats.mtpAcceptance += EMA_ALPHA * 0.25 * (length - this.stats.mtpAcceptance);
    }
    // a step times depth k only in steady state: every sequence verifies what it asks for next, and
    // the deepest does k (a step switching depth drafts without verifying, or the reverse)
    const steady = plan.items.every((it) => it.numDrafts === it.draftTokens) && Math.max(0, ...plan.items.map((it) => it.numDrafts)) === this.stats.draftTokens;
    if (decodeOnly && steady) this.speculation.observe(plan.items.length, this.stats.draftTokens, elapsedMs, verified);
    else this.speculation.record(verified);
  }

  private record(plan: ScheduleResult, numSampled: number, elapsedMs: number): void {
    const s = this.stats;
    s.steps++;
    s.stepTimeMs = s.steps === 1 ? elapsedMs : s.stepTimeMs + EMA_ALPHA * (elapsedMs - s.stepTimeMs);
    const rate = elapsedMs > 0 ? (numSampled * 1000) / elapsedMs : 0;
    s.tokensPerSecond = s.steps === 1 ? rate : s.tokensPerSecond + EMA_ALPHA * (rate - s.tokensPerSecond);
    s.generatedTokens += numSampled;
    for (const item of plan.items) {
      const promptPart = Math.max(0, Math.min(item.start + item.numTokens, item.seq.numPromptTokens) - item.start);
      s.promptTokens += promptPart;
    }
  }
}

/**
 * The native form of a scheduled item. `mtp`: the engine has the MTP head, which an item skips when it
 * neither verifies nor drafts and is a plain decode, a sequence the router capped at 0 drafts, or a
 * prompt chunk while the step speculates at no depth (`speculating` false), so such steps cost what
 * they cost without MTP. Exactness is unaffected either way. An engine that keeps the skipped rows
 * and catches the head's attention KV up in one batched pass when the head runs again (`catchesUp`:
 * the CPU engine) gives resumed drafts those of never having skipped, so every prompt chunk that
 * drafts nothing skips the head there (the catch-up costs the same later, and nothing if the
 * sequence never drafts); with an engine that does not (cuda for now) skipped positions stay stale
 * and drafts after a skip are accepted somewhat less often (demo model, k = 3: 2.56 → 2.25 tokens
 * per verify step with the whole prompt skipped), so prompt chunks skip only while no step speculates.
 */
function toNative(item: ScheduleResult["items"][number], mtp: boolean, speculating: boolean, catchesUp: boolean): NativeStepSequence {
  const seq = item.seq;
  const own = seq.tokens.slice(item.start, item.start + item.numTokens - item.numDrafts);
  const plainDecode = own.length === 1 && item.start > 0;
  const skipHead = mtp && item.numDrafts === 0 && item.draftTokens === 0 && (plainDecode || catchesUp || !speculating || seq.maxDraftTokens === 0);
  return {
    slotId: seq.slotId as number,
    tokens: Int32Array.from([...own, ...seq.drafts.slice(0, item.numDrafts)]),
    ...(item.numDrafts > 0 ? { numDrafts: item.numDrafts } : {}),
    ...(item.draftTokens > 0 ? { draftTokens: item.draftTokens } : {}),
    ...(skipHead ? { mtpSkip: true } : {}),
    position: item.start,
    // the scheduler grows blockIds exactly to cover [0, start + numTokens)
    blockTable: Int32Array.from(seq.blockIds),
    sample: item.sample,
    logits: "none",
    sampling: { temperature: seq.sampling.temperature, topK: seq.sampling.topK, topP: seq.sampling.topP, seed: seq.sampling.seed },
  };
}
