/**
 * One sequence on this rank: its tokens (prompt, then generated), how many of them are already in
 * its slot's state, and the slot and KV blocks it holds while running. Plain data; the scheduler
 * moves it between queues.
 */
import type { FinishReason, SamplingParams } from "../contracts/messages.js";

export type SequenceStatus = "waiting" | "running" | "finished";

export interface SequenceInit {
  readonly requestId: string;
  readonly attempt: number;
  readonly promptTokens: readonly number[];
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  readonly ignoreEos: boolean;
  /** Token ids that end the sequence: the model's eos ids (unless ignored) and the request's own. */
  readonly stopTokenIds: ReadonlySet<number>;
  readonly arrivalMs: number;
  /** The router's cap on MTP drafts per step (absent: none). */
  readonly maxDraftTokens?: number | undefined;
}

export class Sequence {
  readonly requestId: string;
  readonly attempt: number;
  readonly numPromptTokens: number;
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  readonly stopTokenIds: ReadonlySet<number>;
  readonly arrivalMs: number;
  /** The router's cap on MTP drafts per step (Infinity: none). */
  readonly maxDraftTokens: number;
  /** Prompt tokens followed by generated tokens. */
  readonly tokens: number[];
  status: SequenceStatus = "waiting";
  /** Tokens already fed to the engine for this slot (its KV and Mamba state cover [0, numComputed)). */
  numComputed = 0;
  slotId: number | null = null;
  /** KV block ids covering positions [0, blockIds.length * kvBlockSize). */
  blockIds: number[] = [];
  /** Set by cancel(); the scheduler drops the sequence at its next schedule(). */
  cancelled = false;
  finishReason: FinishReason | null = null;
  /** MTP drafts proposed by the last step for the tokens after the last one (verified by the next step). */
  drafts: number[] = [];
  /** Times the sequence lost its slot and was queued for recomputation. */
  numPreemptions = 0;
  firstTokenMs: number | null = null;
  lastTokenMs: number | null = null;

  constructor(init: SequenceInit) {
    this.requestId = init.requestId;
    this.attempt = init.attempt;
    this.tokens = [...init.promptTokens];
    this.numPromptTokens = init.promptTokens.length;
    this.maxTokens = init.maxTokens;
    this.sampling = init.sampling;
    this.stopTokenIds = init.stopTokenIds;
    this.arrivalMs = init.arrivalMs;
    this.maxDraftTokens = init.maxDraftTokens ?? Infinity;
  }

  get numOutputTokens(): number {
    return this.tokens.length - this.numPromptTokens;
  }

  /** Tokens still to feed before the next token can be sampled. */
  get numUncomputed(): number {
    return this.tokens.length - this.numComputed;
  }

  /** True while (re)computing its prompt; false once only one token is pending (decode). */
  get isPrefilling(): boolean {
    return this.numUncomputed > 1;
  }

  /** Prompt tokens (or, after preemption, any tokens) still to feed beyond the next decode token. */
  get pendingPrefillTokens(): number {
    return Math.max(0, this.numUncomputed - 1);
  }

  get remainingTokens(): number {
    return this.maxTokens - this.numOutputTokens;
  }
}
