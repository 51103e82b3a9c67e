/**
 * Continuous batching with chunked prefill (nano-vllm's scheduler, extended): no I/O, no clock, no
 * engine — `schedule()` decides the next step, `postprocess()` applies its sampled tokens.
 *
 * Policy, per step, under `stepTokenBudget` tokens:
 *   1. Drop cancelled sequences (a step is never in flight while schedule() runs).
 *   2. Every running sequence in decode gets its one token, oldest first. When its next token needs
 *      a KV block and none is free, the youngest running sequence is preempted: its slot and blocks
 *      are freed and it goes back to the front of the waiting queue to be recomputed from position 0
 *      (its generated tokens are kept, so with position-keyed sampling the output is unchanged).
 *   3. Running sequences still prefilling get a chunk of what budget is left, oldest first.
 *   4. Waiting sequences are admitted first-come first-served while the budget lasts, a slot is free,
 *      fewer than `maxRunning` run, and the first chunk's KV blocks are free. The queue's head is
 *      never skipped (no starvation); what does not fit waits. A waiting sequence never preempts.
 * Sequences longer than the KV pool are refused before they reach the scheduler (see admit limits in
 * service.ts), so one sequence alone always fits and preemption always makes progress.
 *
 * MTP speculation (`schedule(draftTokens)`, the depth the loop's policy chose): a decoding sequence
 * also feeds up to `draftTokens` of the drafts the previous step proposed (as the budget left after
 * every decode's own token allows, and never past max_tokens) and asks for `draftTokens` new ones.
 * Drafts only ever use KV blocks that are free: a sequence that cannot get them decodes plainly,
 * and nobody is preempted for a draft. `postprocess` keeps the accepted drafts and the engine's
 * token, checking stop ids and max_tokens after each.
 */
import type { FinishReason } from "../contracts/messages.js";
import type { Sequence } from "./sequence.js";
import type { KvBlockPool, SlotPool } from "./slots.js";

export interface SchedulerConfig {
  /** Sequences in the running batch at most (≤ the slot count). */
  readonly maxRunning: number;
  /** Tokens fed to the engine per step at most (decode tokens + prefill chunks). */
  readonly stepTokenBudget: number;
}

/** One sequence's share of a step: tokens [start, start + numTokens) of `seq.tokens`. */
export interface ScheduledItem {
  readonly seq: Sequence;
  readonly start: number;
  readonly numTokens: number;
  /** Sample a token after this chunk (it reaches the end of the sequence's tokens). */
  readonly sample: boolean;
  /** MTP drafts fed after the chunk (seq.drafts[0, numDrafts)), counted in numTokens. */
  readonly numDrafts: number;
  /** MTP drafts to propose for the next step. */
  readonly draftTokens: number;
}

export interface ScheduleResult {
  readonly items: readonly ScheduledItem[];
  /** Sequences moved back to waiting in this call. */
  readonly preempted: readonly Sequence[];
  /** Sequences dropped because they were cancelled (now finished, resources freed). */
  readonly cancelled: readonly Sequence[];
  readonly numTokens: number;
}

/** What one step did to one sequence. */
export interface StepOutcome {
  readonly seq: Sequence;
  /** The last token emitted in this step, if any. */
  readonly token: number | null;
  /** Every token emitted in this step, in order: accepted drafts, then the sampled one. */
  readonly tokens: readonly number[];
  /** Drafts verified and accepted in this step (null: none were fed). */
  readonly verified: { readonly numDrafts: number; readonly numAccepted: number } | null;
  /** Set when the sequence finished in this step. */
  readonly finishReason: FinishReason | null;
}

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];

  constructor(
    readonly config: SchedulerConfig,
    readonly slots: SlotPool,
    readonly kv: KvBlockPool,
  ) {
    if (config.stepTokenBudget < config.maxRunning) throw new Error("stepTokenBudget must be >= maxRunning so every decode fits a step");
    if (config.maxRunning > slots.size) throw new Error("maxRunning must be <= the number of slots");
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  add(seq: Sequence): void {
    seq.status = "waiting";
    this.waiting.push(seq);
  }

  /** Marks a sequence cancelled; it is dropped at the next schedule(). False when unknown. */
  cancel(requestId: string, attempt?: number): boolean {
    let found = false;
    for (const seq of [...this.running, ...this.waiting]) {
      if (seq.requestId === requestId && (attempt === undefined || seq.attempt === attempt)) {
        seq.cancelled = true;
        found = true;
      }
    }
    return found;
  }

  schedule(draftTokens = 0): ScheduleResult {
    const cancelled = this.dropCancelled();
    const items: ScheduledItem[] = [];
    const preempted: Sequence[] = [];
    let budget = this.config.stepTokenBudget;
    const scheduled = new Set<Sequence>();

    // 2. decodes, oldest first; preempt the youngest when KV blocks run out
    const decoding = this.running.filter((s) => !s.isPrefilling && s.status === "running");
    const draftRoom = decoding.length > 0 ? Math.max(0, Math.floor((budget - decoding.length) / decoding.length)) : 0;
    for (const seq of decoding) {
      if (seq.status !== "running") continue; // preempted for an older one in this loop
      if (!this.reserve(seq, seq.numComputed + 1, scheduled, preempted)) continue;
      // drafts: verify what the last step proposed, ask for more; only with free blocks
      const left = Math.min(Math.max(0, seq.remainingTokens - 1), seq.maxDraftTokens);
      let numDrafts = Math.min(seq.drafts.length, draftTokens, draftRoom, left);
      let ask = Math.min(draftTokens, left);
      if ((numDrafts > 0 || ask > 0) && !this.kv.grow(seq.blockIds, seq.numComputed + 1 + numDrafts + Math.max(0, ask - 1))) numDrafts = ask = 0;
      items.push({ seq, start: seq.numComputed, numTokens: 1 + numDrafts, sample: true, numDrafts, draftTokens: ask });
      scheduled.add(seq);
      budget -= 1 + numDrafts;
    }
    // 3. prefill chunks of running sequences
    for (const seq of [...this.running]) {
      if (budget <= 0) break;
      if (!seq.isPrefilling || seq.status !== "running") continue;
      const numTokens = Math.min(seq.numUncomputed, budget);
      if (!this.reserve(seq, seq.numComputed + numTokens, scheduled, preempted)) continue;
      items.push(this.chunk(seq, numTokens, draftTokens));
      scheduled.add(seq);
      budget -= numTokens;
    }
    // 4. admit waiting sequences, first come first served
    while (budget > 0 && this.waiting.length > 0 && this.running.length < this.config.maxRunning && this.slots.numFree > 0) {
      const seq = this.waiting[0] as Sequence;
      if (preempted.includes(seq)) break; // freed for others in this very step
      const numTokens = Math.min(seq.numUncomputed, budget);
      if (this.kv.blocksFor(numTokens) > this.kv.numFree) break;
      this.waiting.shift();
      seq.slotId = this.slots.acquire();
      seq.numComputed = 0;
      this.kv.grow(seq.blockIds, numTokens);
      seq.status = "running";
      this.running.push(seq);
      items.push(this.chunk(seq, numTokens, draftTokens));
      scheduled.add(seq);
      budget -= numTokens;
    }
    return { items, preempted, cancelled, numTokens: this.config.stepTokenBudget - budget };
  }

  /**
   * Applies one step's results: `sampled[i]` belongs to `result.items[i]`; with MTP, `numAccepted[i]`
   * of its drafts were kept and `drafts` holds each item's `draftTokens` new drafts in item order.
   */
  postprocess(result: ScheduleResult, sampled: ArrayLike<number>, numAccepted: ArrayLike<number> = [], drafts: ArrayLike<number> = []): StepOutcome[] {
    const outcomes: StepOutcome[] = [];
    let draftAt = 0;
    result.items.forEach((item, i) => {
      const seq = item.seq;
      const accepted = Math.min(numAccepted[i] ?? 0, item.numDrafts);
      const fedDrafts = seq.drafts.slice(0, accepted);
      seq.numComputed = item.start + item.numTokens - item.numDrafts + accepted;
      seq.drafts = Array.from({ length: item.draftTokens }, (_, j) => drafts[draftAt + j] as number);
      draftAt += item.draftTokens;
      if (!item.sample) return;
      if (seq.cancelled) return; // dropped at the next schedule()
      const token = sampled[i];
      if (token === undefined || token < 0) throw new Error(`engine returned no token for a sampled sequence (index ${i})`);
      const emitted: number[] = [];
      let finishReason: FinishReason | null = null;
      for (const t of [...fedDrafts, token]) {
        seq.tokens.push(t);
        emitted.push(t);
        if (seq.stopTokenIds.has(t)) finishReason = "stop";
        else if (seq.numOutputTokens >= seq.maxTokens) finishReason = "length";
        if (finishReason) break;
      }
      if (finishReason) this.finish(seq, finishReason);
      const verified = item.numDrafts > 0 ? { numDrafts: item.numDrafts, numAccepted: accepted } : null;
      outcomes.push({ seq, token: emitted[emitted.length - 1] ?? null, tokens: emitted, verified, finishReason });
    });
    return outcomes;
  }

  /** Ends every sequence in `items` (e.g. after an engine error), freeing their resources. */
  abort(items: readonly ScheduledItem[]): Sequence[] {
    const seqs = [...new Set(items.map((it) => it.seq))];
    for (const seq of seqs) this.finish(seq, "cancelled");
    return seqs;
  }

  private chunk(seq: Sequence, numTokens: number, draftTokens: number): ScheduledItem {
    const sample = seq.numComputed + numTokens === seq.tokens.length;
    // the chunk that ends the prompt may ask for drafts when their KV blocks are free
    const ask = sample ? Math.min(draftTokens, Math.max(0, seq.remainingTokens - 1), seq.maxDraftTokens) : 0;
    const withDrafts = ask > 1 ? this.kv.grow(seq.blockIds, seq.numComputed + numTokens + ask - 1) : true;
    return { seq, start: seq.numComputed, numTokens, sample, numDrafts: 0, draftTokens: withDrafts ? ask : 0 };
  }

  /** Grows `seq`'s blocks to cover `numTokens`, preempting the youngest unscheduled running sequences. */
  private reserve(seq: Sequence, numTokens: number, scheduled: Set<Sequence>, preempted: Sequence[]): boolean {
    while (!this.kv.grow(seq.blockIds, numTokens)) {
      const victim = this.youngestPreemptable(scheduled);
      if (!victim) return false;
      this.preempt(victim);
      preempted.push(victim);
      if (victim === seq) return false;
    }
    return true;
  }

  private youngestPreemptable(scheduled: Set<Sequence>): Sequence | undefined {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const s = this.running[i] as Sequence;
      if (!scheduled.has(s)) return s;
    }
    return undefined;
  }

  private preempt(seq: Sequence): void {
    this.releaseResources(seq);
    this.running.splice(this.running.indexOf(seq), 1);
    seq.status = "waiting";
    seq.numComputed = 0;
    seq.numPreemptions++;
    this.waiting.unshift(seq);
  }

  private finish(seq: Sequence, reason: FinishReason): void {
    this.releaseResources(seq);
    const r = this.running.indexOf(seq);
    if (r >= 0) this.running.splice(r, 1);
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    seq.status = "finished";
    seq.finishReason = reason;
  }

  private releaseResources(seq: Sequence): void {
    seq.drafts = [];
    if (seq.slotId !== null) this.slots.release(seq.slotId);
    seq.slotId = null;
    this.kv.releaseAll(seq.blockIds);
  }

  private dropCancelled(): Sequence[] {
    const dropped = [...this.running, ...this.waiting].filter((s) => s.cancelled);
    for (const seq of dropped) this.finish(seq, "cancelled");
    return dropped;
  }
}
