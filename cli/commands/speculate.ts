/**
 * One sequence decoded with optional MTP speculation, for the CLI's `generate` and `logits`.
 * Each step feeds the last emitted token plus the drafts the previous step proposed, and asks for
 * the next step's drafts (a fixed depth, or "auto": worker/speculation.ts's policy at batch 1).
 */
import { z } from "zod";
import type { NativeSampling, NativeStepResult, NativeStepSequence } from "../../worker/native.js";
import { parseSpeculativeTokens, SpeculationPolicy, type SpeculativeTokens } from "../../worker/speculation.js";

/** `--speculative-tokens K|auto` (0 = off). */
export const SPECULATIVE_TOKENS = z
  .string()
  .default("0")
  .transform((v, ctx): SpeculativeTokens => {
    try {
      return parseSpeculativeTokens(v);
    } catch (e) {
      ctx.addIssue({ code: "custom", message: e instanceof Error ? e.message : String(e) });
      return z.NEVER;
    }
  });

/** Extra KV positions a speculating sequence may touch past its last token (drafts verified + proposed). */
export function speculationHeadroom(s: SpeculativeTokens): number {
  const k = s.mode === "auto" ? s.max : s.k;
  return 2 * k + 1;
}

export interface DecodeStepResult {
  /** Tokens emitted by this step, in order (accepted drafts, then the target token). */
  readonly emitted: number[];
  /** Tokens fed this step and kept (the previous last token and the accepted drafts). */
  readonly kept: number[];
  /** With logits: the rows after feeding each kept token (one per emitted token, for the tokens fed this step). */
  readonly logits: Float32Array[];
}

export class OneSequenceDecoder {
  readonly policy: SpeculationPolicy;
  steps = 0;
  emittedTotal = 0;
  private position = 0;
  private last = -1;
  private drafts: number[] = [];

  constructor(
    private readonly stepper: { step(s: NativeStepSequence[]): Promise<NativeStepResult> },
    private readonly blockTable: Int32Array,
    private readonly sampling: NativeSampling,
    private readonly vocabSize: number,
    setting: SpeculativeTokens,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.policy = new SpeculationPolicy(setting);
  }

  /** Feeds the prompt; returns the first token, the prompt's logits and the MTP head's logits and drafts when asked. */
  async prefill(prompt: readonly number[], logits: "none" | "all", mtpLogits = false): Promise<{ token: number; logits: Float32Array; mtpLogits: Float32Array; drafts: number[] }> {
    const k = this.policy.next(1);
    const r = await this.stepper.step([
      { slotId: 0, tokens: Int32Array.from(prompt), position: 0, blockTable: this.blockTable, sample: true, logits, sampling: this.sampling, ...(k > 0 ? { draftTokens: k } : {}), ...(mtpLogits ? { mtpLogits } : {}) },
    ]);
    this.position = prompt.length;
    this.last = r.tokens[0] ?? 0;
    this.drafts = Array.from(r.drafts ?? []);
    this.emittedTotal = 1;
    return { token: this.last, logits: r.logits, mtpLogits: r.mtpLogits ?? new Float32Array(0), drafts: [...this.drafts] };
  }

  /** One decode step: verifies the pending drafts, proposes the next ones. */
  async next(wantLogits: boolean): Promise<DecodeStepResult> {
    const k = this.drafts.length;
    const nextK = this.policy.next(1);
    const fed = [this.last, ...this.drafts];
    const t0 = this.now();
    const r = await this.stepper.step([
      {
        slotId: 0,
        tokens: Int32Array.from(fed),
        position: this.position,
        blockTable: this.blockTable,
        sample: true,
        logits: wantLogits ? (k > 0 ? "all" : "last") : "none",
        sampling: this.sampling,
        ...(k > 0 ? { numDrafts: k } : {}),
        ...(nextK > 0 ? { draftTokens: nextK } : {}),
        ...(k === 0 && nextK === 0 ? { mtpSkip: true } : {}), // speculation off this step: skip the head's cost
      },
    ]);
    const ms = this.now() - t0;
    const a = r.numAccepted?.[0] ?? 0;
    const emitted = [...this.drafts.slice(0, a), r.tokens[0] ?? 0];
    const logits: Float32Array[] = [];
    if (wantLogits) for (let j = 0; j <= a; j++) logits.push(r.logits.subarray(j * this.vocabSize, (j + 1) * this.vocabSize));
    // time depth k only in steady state (as the worker does): a step that switches depth drafts
    // without verifying, or the reverse, costs neither depth
    const verified: [number, number][] = k > 0 ? [[k, a]] : [];
    if (k === nextK) this.policy.observe(1, k, ms, verified);
    else this.policy.record(verified);
    this.position += 1 + a;
    this.last = emitted[emitted.length - 1] as number;
    this.drafts = Array.from(r.drafts ?? []);
    this.steps++;
    this.emittedTotal += emitted.length;
    return { emitted, kept: fed.slice(0, 1 + a), logits };
  }

  /** Tokens emitted per decode step (1 without speculation). */
  get tokensPerStep(): number {
    return this.steps === 0 ? 1 : (this.emittedTotal - 1) / this.steps;
  }
}
