/**
 * The shared path of /v1/chat/completions and /v1/completions: validate, tokenize, check the model
 * and context length, admit, place, then answer as one JSON body or as SSE chunks. A `Flavor` supplies
 * what differs between the two endpoints (prompt building and response shapes).
 */
import { randomInt } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { LatentMeshError } from "../../contracts/errors.js";
import type { SamplingParams } from "../../contracts/messages.js";
import type { Logger } from "../../core/log.js";
import { Generation, type ChoiceFinish, type GenerationResult } from "../generation.js";
import type { RouterContext } from "./context.js";
import { sendError, toHttpError } from "./errors.js";
import type { SamplingBody } from "./openai-schema.js";
import { SseWriter } from "./sse.js";

/** A validated request body, whatever the endpoint. */
export interface ParsedRequest {
  readonly body: SamplingBody;
  /** max_completion_tokens (chat) or max_tokens. */
  readonly maxTokens: number | null;
  readonly promptTokens: readonly number[];
}

export interface Flavor {
  readonly idPrefix: string;
  readonly object: string;
  readonly chunkObject: string;
  /** Validates the body and tokenizes its prompt; throws LatentMeshError. */
  parse(body: unknown, ctx: RouterContext): ParsedRequest;
  /** One choice of the non-streaming answer. */
  choice(index: number, text: string, finish: ChoiceFinish): unknown;
  /** One choice of a streamed chunk: `text` null opens the choice (chat's role delta). */
  chunkChoice(index: number, text: string | null, finish: ChoiceFinish | null): unknown | null;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

const usageOf = (r: GenerationResult): Usage => ({ prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens });

function samplingFor(body: SamplingBody): (index: number) => SamplingParams {
  const seed = body.seed ?? randomInt(0, 2 ** 32 - 1);
  return (index) => ({
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: Math.max(0, body.top_k ?? 0),
    seed: (seed + index) >>> 0,
  });
}

/** Request header: the time (ms) from arrival to the last token the client wants the request to take. */
export const SLO_HEADER = "x-latentmesh-slo-ms";
const MAX_SLO_MS = 24 * 3600 * 1000;

/** The SLO header's value in ms (undefined when absent); a 400 invalid_request for anything but a positive number of ms up to a day. */
export function parseSloHeader(value: string | string[] | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(",") : value;
  const ms = /^\s*\d+(\.\d+)?\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!(ms > 0 && ms <= MAX_SLO_MS)) {
    throw new LatentMeshError("invalid_request", `${SLO_HEADER}: expected a number of milliseconds in (0, ${MAX_SLO_MS}], got '${text.slice(0, 64)}'`, SLO_HEADER);
  }
  return ms;
}

/** Handles one generation request end to end; never throws. */
export async function handleGenerate(ctx: RouterContext, flavor: Flavor, req: IncomingMessage, res: ServerResponse, raw: unknown, ids: { requestId: string; wireId: string }, log: Logger): Promise<void> {
  const t0 = performance.now();
  let status = "error";
  let admitted = false;
  try {
    const parsed = flavor.parse(raw, ctx);
    const body = parsed.body;
    if (body.model !== ctx.model) throw new LatentMeshError("model_not_found", `The model '${body.model}' does not exist (this router serves '${ctx.model}')`, "model");
    const n = body.n ?? 1;
    if (n > ctx.cfg.maxN) throw new LatentMeshError("invalid_request", `n: must be <= ${ctx.cfg.maxN}`, "n");
    const sloMs = parseSloHeader(req.headers[SLO_HEADER]); // a malformed header is a 400 before any 503/429
    const ready = ctx.ranks.readyFor(ctx.model);
    if (ready.length === 0) throw new LatentMeshError("no_live_rank", `no ready rank serves model ${ctx.model}; try again shortly`);
    const maxContext = Math.max(...ready.map((r) => r.maxContextTokens));
    const promptLength = parsed.promptTokens.length;
    const maxTokens = parsed.maxTokens ?? maxContext - promptLength;
    if (promptLength >= maxContext || promptLength + maxTokens > maxContext) {
      throw new LatentMeshError(
        "context_length_exceeded",
        `This model's maximum context length is ${maxContext} tokens. However, you requested ${promptLength + maxTokens} tokens (${promptLength} in the prompt, ${maxTokens} for the completion).`,
        parsed.maxTokens !== null && promptLength < maxContext ? "max_tokens" : "messages",
      );
    }
    if (ctx.inflight >= ctx.cfg.maxInflight) throw new LatentMeshError("queue_full", `the router has ${ctx.inflight} requests in flight; retry later`);
    ctx.metrics.inputSequenceTokens.observe(promptLength);

    const sessionId = req.headers["x-session-id"];
    const session = typeof sessionId === "string" && sessionId ? sessionId : undefined;
    const stops = body.stop === null || body.stop === undefined ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
    admitted = true;
    ctx.admit(+1);
    const stream = body.stream === true;
    const sse = new SseWriter(res);
    const texts = Array.from({ length: n }, () => "");
    const finishes: (ChoiceFinish | null)[] = Array.from({ length: n }, () => null);
    const created = Math.floor(Date.now() / 1000);
    const id = `${flavor.idPrefix}-${ids.requestId}`;
    const chunk = (choices: unknown[], extra: object = {}) => ({ id, object: flavor.chunkObject, created, model: ctx.model, choices, ...extra });
    const includeUsage = stream && body.stream_options?.include_usage === true;
    const usageNull = includeUsage ? { usage: null } : {};
    // tokens may arrive while the other choices are still being placed: hold chunks until the stream opens
    let held: unknown[] | null = [];
    const emit = (data: unknown) => (held ? held.push(data) : sse.send(data));

    const gen = new Generation(
      { requestId: ids.wireId, model: ctx.model, promptTokens: parsed.promptTokens, maxTokens, stops, n, sampling: samplingFor(body), ignoreEos: body.ignore_eos === true, sessionWorkerId: session ? ctx.sessions.get(session) : undefined, ...(sloMs !== undefined ? { sloMs, arrivedAt: t0 } : {}) },
      ctx.codec,
      ctx.dispatcher,
      {
        onText(index, text) {
          if (stream) emit(chunk([flavor.chunkChoice(index, text, null)], usageNull));
          else texts[index] += text;
        },
        onFinish(index, reason) {
          finishes[index] = reason;
          if (stream) emit(chunk([flavor.chunkChoice(index, "", reason)], usageNull));
        },
      },
      ctx.metrics,
      log,
    );
    let clientGone = false;
    res.on("close", () => {
      if (res.writableFinished) return;
      clientGone = true;
      log.info("client disconnected; cancelling");
      gen.cancel();
    });
    ctx.queued(+1);
    try {
      await gen.start();
    } finally {
      ctx.queued(-1);
    }
    if (clientGone) gen.cancel();
    if (session) ctx.sessions.set(session, gen.workerId);
    const meetsSlo = gen.meetsSlo;
    const headers = { "x-request-id": ids.requestId, "x-latentmesh-worker-id": gen.workerId, ...(meetsSlo !== undefined ? { "x-latentmesh-slo": meetsSlo ? "on-track" : "at-risk" } : {}) };
    if (stream) {
      sse.open(headers);
      for (let i = 0; i < n; i++) {
        const open = flavor.chunkChoice(i, null, null);
        if (open) sse.send(chunk([open], usageNull));
      }
      for (const data of held ?? []) sse.send(data);
      held = null;
    }
    let result: GenerationResult;
    try {
      result = await gen.done;
    } catch (err) {
      if (!stream) throw err;
      const e = toHttpError(err);
      log.error({ code: e.body.error.code }, e.body.error.message);
      sse.send(e.body);
      res.end();
      return;
    }
    status = clientGone ? "cancelled" : "success";
    if (stream) {
      if (includeUsage) sse.send(chunk([], { usage: usageOf(result) }));
      sse.done();
    } else {
      const choices = texts.map((t, i) => flavor.choice(i, t, finishes[i] ?? "length"));
      res.writeHead(200, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify({ id, object: flavor.object, created, model: ctx.model, choices, usage: usageOf(result) }));
    }
    log.info({ promptTokens: result.promptTokens, completionTokens: result.completionTokens, ms: Math.round(performance.now() - t0), workerId: gen.workerId }, "completed");
  } catch (err) {
    const e = toHttpError(err);
    if (!e.known) log.error({ err }, "request failed");
    else log.info({ code: e.body.error.code, status: e.status }, e.body.error.message);
    if (e.body.error.code === "queue_full" || e.body.error.code === "no_live_rank") ctx.metrics.rejected(e.body.error.code);
    if (!res.headersSent) sendError(res, err);
    else res.end();
  } finally {
    if (admitted) ctx.admit(-1);
    ctx.metrics.finished(status);
    ctx.metrics.requestDuration.observe((performance.now() - t0) / 1000);
  }
}
