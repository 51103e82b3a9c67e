/**
 * The rank's NATS edge: takes GenerateRequests and CancelRequests addressed to it, validates them
 * (an invalid one is answered with a rejected SubmitAck, never dropped), feeds the loop, streams each
 * sequence's tokens to its reply subject in order, and publishes a LoadReport a few times a second.
 */
import type { Msg, NatsConnection, Subscription } from "nats";
import { LatentMeshError, type ErrorCode } from "../contracts/errors.js";
import { CancelRequest, GenerateRequest, LoadReport, SubmitAck, decodeMessage, encodeMessage, type StreamMessage } from "../contracts/messages.js";
import type { DeploymentSubjects } from "../contracts/subjects.js";
import type { Logger } from "../core/log.js";
import { buildLoadReport, type RankIdentity } from "./load-report.js";
import type { EngineLoop, LoopSink } from "./loop.js";
import type { WorkerMetrics } from "./metrics.js";
import type { Scheduler, StepOutcome } from "./scheduler.js";
import { Sequence } from "./sequence.js";

/** What a rank accepts. */
export interface AdmitLimits {
  readonly vocabSize: number;
  /** Model end-of-sequence ids (generation_config.json). */
  readonly eosTokenIds: readonly number[];
  /** Waiting sequences beyond which new requests are refused with queue_full. */
  readonly maxWaiting: number;
}

/** Per-sequence stream state. */
interface Stream {
  readonly replySubject: string;
  nextSeq: number;
  readonly log: Logger;
}

export class WorkerService implements LoopSink {
  private readonly streams = new Map<Sequence, Stream>();
  private readonly subs: Subscription[] = [];
  private reportTimer: NodeJS.Timeout | null = null;
  private reportSeq = 0;
  private draining = false;
  private ready = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: DeploymentSubjects,
    private readonly identity: RankIdentity,
    private readonly limits: AdmitLimits,
    private readonly scheduler: Scheduler,
    private readonly loop: EngineLoop,
    private readonly metrics: WorkerMetrics,
    private readonly log: Logger,
    private readonly reportIntervalMs: number,
  ) {}

  get isReady(): boolean {
    return this.ready && !this.draining && !this.nc.isClosed();
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Subscribes and starts publishing load reports. */
  async start(): Promise<void> {
    const id = this.identity.workerId;
    this.subs.push(this.nc.subscribe(this.subjects.generate(id), { callback: (_e, msg) => this.onGenerate(msg) }));
    this.subs.push(this.nc.subscribe(this.subjects.cancel(id), { callback: (_e, msg) => this.onCancel(msg) }));
    await this.nc.flush();
    this.ready = true;
    this.publishLoad();
    this.reportTimer = setInterval(() => this.publishLoad(), this.reportIntervalMs);
  }

  /** Stops taking requests and resolves once every accepted one has finished. */
  async drain(): Promise<void> {
    if (!this.draining) this.log.info({ running: this.scheduler.running.length, waiting: this.scheduler.waiting.length }, "draining");
    this.draining = true;
    this.publishLoad();
    await this.loop.whenIdle();
  }

  /** Unsubscribes and stops load reports (after drain, or on a hard stop). */
  async stop(): Promise<void> {
    if (this.reportTimer) clearInterval(this.reportTimer);
    this.reportTimer = null;
    this.ready = false;
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    if (!this.nc.isClosed()) await this.nc.flush().catch(() => undefined);
  }

  /** The report this rank publishes, also served by the gRPC Stats call. */
  currentLoad(): LoadReport {
    return buildLoadReport(this.identity, this.scheduler, this.loop.stats, { seq: this.reportSeq, ready: this.isReady, draining: this.draining });
  }

  private publishLoad(): void {
    if (this.nc.isClosed()) return;
    const report = this.currentLoad();
    this.reportSeq++;
    this.metrics.setLoad({
      running: report.running,
      waiting: report.waiting,
      kvUsage: report.totalKvBlocks > 0 ? 1 - report.freeKvBlocks / report.totalKvBlocks : 0,
      slotUsage: 1 - report.freeSlots / report.maxSlots,
    });
    this.nc.publish(this.subjects.load, encodeMessage(report));
  }

  private onGenerate(msg: Msg): void {
    const decoded = decodeMessage(GenerateRequest, msg.data, "GenerateRequest");
    if (!decoded.ok) return this.reject(msg, "unknown", "invalid_request", decoded.error);
    const req = decoded.value;
    try {
      this.admit(req);
    } catch (err) {
      if (err instanceof LatentMeshError) return this.reject(msg, req.requestId, err.code, err.message);
      this.log.error({ err, requestId: req.requestId }, "admitting a request failed");
      return this.reject(msg, req.requestId, "internal", "internal error");
    }
    this.respond(msg, { type: "accepted", requestId: req.requestId, workerId: this.identity.workerId });
  }

  private admit(req: GenerateRequest): void {
    if (this.draining || !this.ready) throw new LatentMeshError("draining", `rank ${this.identity.workerId} is draining`);
    if (req.model !== this.identity.model) throw new LatentMeshError("model_not_found", `rank serves ${this.identity.model}, not ${req.model}`);
    const bad = req.promptTokens.find((t) => t >= this.limits.vocabSize);
    if (bad !== undefined) throw new LatentMeshError("invalid_request", `token id ${bad} is outside the vocabulary (${this.limits.vocabSize})`, "prompt");
    const total = req.promptTokens.length + req.maxTokens;
    if (total > this.identity.maxContextTokens) {
      throw new LatentMeshError("context_length_exceeded", `prompt (${req.promptTokens.length}) + max tokens (${req.maxTokens}) exceeds the context length ${this.identity.maxContextTokens}`);
    }
    if (this.scheduler.waiting.length >= this.limits.maxWaiting) throw new LatentMeshError("queue_full", `rank ${this.identity.workerId} has ${this.scheduler.waiting.length} waiting requests`);
    const stop = new Set(req.stopTokenIds);
    if (!req.ignoreEos) for (const id of this.limits.eosTokenIds) stop.add(id);
    const seq = new Sequence({ ...req, stopTokenIds: stop, arrivalMs: performance.now() });
    const log = this.log.child({ requestId: req.requestId, attempt: req.attempt });
    this.streams.set(seq, { replySubject: req.replySubject, nextSeq: 0, log });
    log.debug({ promptTokens: req.promptTokens.length, maxTokens: req.maxTokens }, "accepted");
    this.loop.submit(seq);
  }

  private onCancel(msg: Msg): void {
    const decoded = decodeMessage(CancelRequest, msg.data, "CancelRequest");
    if (!decoded.ok) {
      this.log.warn({ error: decoded.error }, "invalid cancel message");
      return;
    }
    this.loop.cancel(decoded.value.requestId, decoded.value.attempt);
  }

  private reject(msg: Msg, requestId: string, code: ErrorCode, message: string): void {
    this.log.info({ requestId, code }, `refused: ${message}`);
    this.respond(msg, { type: "rejected", requestId, code, message });
  }

  private respond(msg: Msg, ack: SubmitAck): void {
    if (msg.reply) msg.respond(encodeMessage(ack));
  }

  // LoopSink

  onStep(outcomes: readonly StepOutcome[]): void {
    const now = performance.now();
    let generated = 0;
    for (const { seq, tokens, verified, finishReason } of outcomes) {
      if (tokens.length > 0) this.observeToken(seq, now);
      generated += tokens.length;
      if (verified) this.metrics.addSpecDecode(verified.numDrafts, verified.numAccepted);
      if (finishReason) {
        this.send(seq, (base) => ({ type: "final", ...base, tokens: [...tokens], finishReason, usage: { promptTokens: seq.numPromptTokens, completionTokens: seq.numOutputTokens } }));
        this.end(seq, finishReason);
      } else if (tokens.length > 0) {
        this.send(seq, (base) => ({ type: "tokens", ...base, tokens: [...tokens] }));
      }
    }
    this.metrics.addGenerationTokens(generated);
  }

  onCancelled(seqs: readonly Sequence[]): void {
    for (const seq of seqs) {
      this.send(seq, (base) => ({ type: "final", ...base, tokens: [], finishReason: "cancelled", usage: { promptTokens: seq.numPromptTokens, completionTokens: seq.numOutputTokens } }));
      this.end(seq, "cancelled");
    }
  }

  onFailed(seqs: readonly Sequence[], error: Error): void {
    for (const seq of seqs) {
      this.send(seq, (base) => ({ type: "error", ...base, code: "engine_error", message: error.message }));
      this.end(seq, "engine error");
    }
  }

  private observeToken(seq: Sequence, now: number): void {
    if (seq.firstTokenMs === null) {
      seq.firstTokenMs = now;
      this.metrics.observeTimeToFirstToken((now - seq.arrivalMs) / 1000);
      this.metrics.addPromptTokens(seq.numPromptTokens);
    } else if (seq.lastTokenMs !== null) {
      this.metrics.observeInterTokenLatency((now - seq.lastTokenMs) / 1000);
    }
    seq.lastTokenMs = now;
  }

  private send(seq: Sequence, build: (base: { requestId: string; attempt: number; seq: number }) => StreamMessage): void {
    const stream = this.streams.get(seq);
    if (!stream || this.nc.isClosed()) return;
    const message = build({ requestId: seq.requestId, attempt: seq.attempt, seq: stream.nextSeq++ });
    this.nc.publish(stream.replySubject, encodeMessage(message));
  }

  private end(seq: Sequence, how: string): void {
    const stream = this.streams.get(seq);
    this.streams.delete(seq);
    stream?.log.debug({ how, completionTokens: seq.numOutputTokens, preemptions: seq.numPreemptions }, "finished");
  }
}
