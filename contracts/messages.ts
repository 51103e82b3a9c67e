/**
 * Wire messages between routers and worker ranks (DESIGN.md §4). Every message is JSON, validated
 * with these schemas at both ends; multi-shape messages are unions tagged by `type`.
 *
 * Lifecycle of one request attempt:
 *   router ──GenerateRequest (NATS request)──► rank ──SubmitAck (NATS reply)──► router
 *   rank ──StreamMessage* on replySubject: tokens, tokens, …, then exactly one final or error
 *   router ──CancelRequest──► rank   (client gone, stop string reached, or attempt superseded)
 * A migrated request is resubmitted with a higher `attempt`; messages of older attempts are ignored.
 */
import { z } from "zod";
import { ErrorCode } from "./errors.js";
import { SubjectToken } from "./subjects.js";

const TokenId = z.number().int().min(0);

/** Sampling parameters of one sequence (the native sampler's, with OpenAI's meaning). */
export const SamplingParams = z.object({
  /** 0 = greedy. */
  temperature: z.number().min(0).max(100),
  /** 0 = off. */
  topK: z.number().int().min(0),
  /** 1 = off. */
  topP: z.number().gt(0).max(1),
  /** Keys the token drawn at each position, so a seeded request is reproducible (also across migration). */
  seed: z.number().int().min(0).max(0xffffffff),
});
export type SamplingParams = z.infer<typeof SamplingParams>;

/** A request for one sequence, placed on one rank. */
export const GenerateRequest = z.object({
  type: z.literal("generate"),
  requestId: SubjectToken,
  /** 0 for the first placement, +1 per migration. */
  attempt: z.number().int().min(0),
  /** Where the rank streams StreamMessages. */
  replySubject: z.string().min(1),
  model: z.string().min(1),
  /** Prompt tokens, followed on migration by the tokens generated so far. */
  promptTokens: z.array(TokenId).min(1),
  /** Tokens to generate at most in this attempt. */
  maxTokens: z.number().int().min(1),
  sampling: SamplingParams,
  /** Do not stop at the model's end-of-sequence ids. */
  ignoreEos: z.boolean().default(false),
  /** Extra token ids that end the sequence (besides the model's eos ids). */
  stopTokenIds: z.array(TokenId).default([]),
  /** The router's cap on MTP drafts per step for this sequence (absent: the rank's own choice). */
  maxDraftTokens: z.number().int().min(0).max(16).optional(),
});
export type GenerateRequest = z.infer<typeof GenerateRequest>;
export type GenerateRequestInput = z.input<typeof GenerateRequest>;

/** The rank's immediate answer to a GenerateRequest. */
export const SubmitAck = z.discriminatedUnion("type", [
  z.object({ type: z.literal("accepted"), requestId: z.string(), workerId: z.string() }),
  z.object({ type: z.literal("rejected"), requestId: z.string(), code: ErrorCode, message: z.string() }),
]);
export type SubmitAck = z.infer<typeof SubmitAck>;

export const FinishReason = z.enum(["stop", "length", "cancelled"]);
export type FinishReason = z.infer<typeof FinishReason>;

export const Usage = z.object({ promptTokens: z.number().int().min(0), completionTokens: z.number().int().min(0) });
export type Usage = z.infer<typeof Usage>;

const streamBase = {
  requestId: z.string(),
  attempt: z.number().int().min(0),
  /** 0, 1, 2, … per attempt: the router detects gaps and reordering. */
  seq: z.number().int().min(0),
};

/** What a rank sends on a request's reply subject. */
export const StreamMessage = z.discriminatedUnion("type", [
  z.object({ type: z.literal("tokens"), ...streamBase, tokens: z.array(TokenId).min(1) }),
  z.object({
    type: z.literal("final"),
    ...streamBase,
    /** The last tokens of the sequence (may be empty). */
    tokens: z.array(TokenId),
    finishReason: FinishReason,
    usage: Usage,
  }),
  z.object({ type: z.literal("error"), ...streamBase, code: ErrorCode, message: z.string() }),
]);
export type StreamMessage = z.infer<typeof StreamMessage>;

/** Stop work on a request; unknown ids are ignored (the request may have finished already). */
export const CancelRequest = z.object({
  type: z.literal("cancel"),
  requestId: z.string(),
  /** Only this attempt; absent = any. */
  attempt: z.number().int().min(0).optional(),
});
export type CancelRequest = z.infer<typeof CancelRequest>;

/**
 * Request classes whose MTP acceptance is tracked apart (issue 7). The class is the one thing about a
 * request that moves acceptance a lot and costs nothing to know: a greedy (or top-k 1) target is the
 * argmax the MTP head was trained to predict, so its drafts are accepted far more often than under
 * sampling, where a draft survives only with the target's probability of that token.
 */
export const RequestClass = z.enum(["greedy", "sampled"]);
export type RequestClass = z.infer<typeof RequestClass>;

/** The class of a request by its sampling parameters. */
export function requestClassOf(sampling: Pick<SamplingParams, "temperature" | "topK">): RequestClass {
  return sampling.temperature === 0 || sampling.topK === 1 ? "greedy" : "sampled";
}

/** One measured point of a rank's decode step-time curve (one per power-of-two batch-size bucket). */
export const StepCurvePoint = z.object({
  /** Decode batch size the point stands for: the mean batch size of the steps measured in its bucket. */
  batch: z.number().min(1),
  /** MTP drafts per sequence the rank would verify at this batch (0: plain decode). */
  draftTokens: z.number().int().min(0).max(16),
  /** Measured decode step time at this batch with those drafts. */
  stepMs: z.number().min(0),
});
export type StepCurvePoint = z.infer<typeof StepCurvePoint>;

/** MTP acceptance of one request class on a rank. */
export const ClassAcceptance = z.object({
  /** Verify steps measured (sequences × steps that carried drafts). */
  numDrafts: z.number().int().min(0),
  /** Mean tokens per verify step: 1 + accepted drafts. */
  acceptanceLength: z.number().min(1),
  /** Per draft position j: the rate at which draft j is accepted once drafts 0..j-1 were (up to the rank's maximum depth). */
  acceptRates: z.array(z.number().min(0).max(1)).max(16),
});
export type ClassAcceptance = z.infer<typeof ClassAcceptance>;

/** A rank's state, published a few times a second; the router's only source of truth about ranks. */
export const LoadReport = z.object({
  type: z.literal("load"),
  workerId: z.string(),
  model: z.string(),
  group: z.string(),
  rank: z.number().int().min(0),
  /** Increments per report; a restarted rank starts again at 0. */
  seq: z.number().int().min(0),
  /** Engine loaded and subscribed. */
  ready: z.boolean(),
  /** Finishing accepted work, taking no new requests. */
  draining: z.boolean(),
  running: z.number().int().min(0),
  waiting: z.number().int().min(0),
  maxSlots: z.number().int().min(1),
  freeSlots: z.number().int().min(0),
  totalKvBlocks: z.number().int().min(0),
  freeKvBlocks: z.number().int().min(0),
  kvBlockSize: z.number().int().min(1),
  /** Prompt + generated tokens one sequence may reach. */
  maxContextTokens: z.number().int().min(1),
  /** Tokens one step processes at most (the chunked-prefill budget). */
  stepTokenBudget: z.number().int().min(1),
  /** Prompt tokens not yet computed, over waiting and running sequences. */
  pendingPrefillTokens: z.number().int().min(0),
  /** Mean tokens still to generate per running sequence (by their max tokens). */
  meanRemainingTokens: z.number().min(0),
  /** Recent mean engine step time. */
  stepTimeMs: z.number().min(0),
  tokensPerSecond: z.number().min(0),
  /** Mean tokens accepted per step per sequence; 1 without speculative decoding. */
  mtpAcceptance: z.number().min(1),
  /**
   * Decode step time by batch size, measured points only, ascending by batch (absent or empty before
   * any pure decode step was timed; older ranks omit it and the router falls back to stepTimeMs).
   */
  stepCurve: z.array(StepCurvePoint).max(32).optional(),
  /** MTP acceptance per request class seen (ranks speculating only). Unknown classes are ignored. */
  mtpByClass: z.object({ greedy: ClassAcceptance.optional(), sampled: ClassAcceptance.optional() }).optional(),
});
export type LoadReport = z.infer<typeof LoadReport>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** JSON bytes of a message. */
export function encodeMessage(message: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(message));
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: string };

/** Parses and validates a message; never throws. */
export function decodeMessage<S extends z.ZodType>(schema: S, bytes: Uint8Array, what: string): Decoded<z.output<S>> {
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(bytes));
  } catch {
    return { ok: false, error: `${what}: not JSON` };
  }
  const r = schema.safeParse(raw);
  if (r.success) return { ok: true, value: r.data };
  const issue = r.error.issues[0];
  const path = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : "(root)";
  return { ok: false, error: `${what}: ${path}: ${issue?.message ?? "invalid"}` };
}
