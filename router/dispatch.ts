/**
 * Places sequences on ranks over NATS and follows them to the end (DESIGN.md §4): pick a rank, submit
 * (NATS request/reply; the rank acknowledges or refuses), receive the ordered stream on this router's
 * reply subject, and cancel when asked. When the rank dies (reports stop, it restarts, or its stream
 * has a gap) the sequence is resubmitted elsewhere with its prompt plus the tokens generated so far,
 * at most `maxMigrations` times; otherwise the caller gets an explicit worker_lost error. Every
 * accepted sequence ends in exactly one onFinal or onError.
 */
import { randomBytes } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "nats";
import { LatentMeshError } from "../contracts/errors.js";
import { StreamMessage, SubmitAck, decodeMessage, encodeMessage, requestClassOf, type FinishReason, type GenerateRequest, type SamplingParams } from "../contracts/messages.js";
import { requestIdOfReply, type DeploymentSubjects } from "../contracts/subjects.js";
import type { Logger } from "../core/log.js";
import { AckError, AckInbox } from "./ack-inbox.js";
import type { RouterMetrics } from "./metrics.js";
import { pickRank, type PickOptions } from "./pick-rank.js";
import type { RankTable } from "./ranks.js";

export interface SequenceParams {
  /** Wire id of this sequence (unique per router). */
  readonly id: string;
  readonly model: string;
  readonly promptTokens: readonly number[];
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  readonly ignoreEos: boolean;
  readonly sessionWorkerId?: string;
  /** Time from arrival to the last token the client asked for (x-latentmesh-slo-ms); absent: none. */
  readonly sloMs?: number;
  /** performance.now() at arrival: placements after a migration get what is left of sloMs. */
  readonly arrivedAt?: number;
  readonly log: Logger;
}

export interface SequenceHandlers {
  onTokens(tokens: readonly number[]): void;
  /** Normal end: eos ("stop") or max tokens ("length"). */
  onFinal(reason: Exclude<FinishReason, "cancelled">): void;
  onError(error: LatentMeshError): void;
}

export interface DispatchOptions {
  readonly maxMigrations: number;
  readonly submitTimeoutMs: number;
  readonly pick: PickOptions;
}

/** A sequence placed on a rank; cancel() stops it there. */
export interface SequenceHandle {
  readonly workerId: string;
  /** The last placement's prediction against the SLO: true/false, or undefined without an SLO. */
  readonly meetsSlo: boolean | undefined;
  cancel(): void;
}

/** Refusals worth trying another rank for. */
const RETRY_ELSEWHERE = new Set(["draining", "queue_full"]);

class Flight implements SequenceHandle {
  workerId = "";
  meetsSlo: boolean | undefined = undefined;
  attempt = -1;
  expectedSeq = 0;
  migrations = 0;
  /** Ended: finished, failed or cancelled. */
  done = false;
  /** Ended by cancel() (client gone, stop string), not by the rank. */
  cancelled = false;
  /** Waiting for a rank's acknowledgement; place() handles that rank's failure itself. */
  placing = false;
  readonly generated: number[] = [];
  readonly tried = new Set<string>();

  constructor(
    readonly params: SequenceParams,
    readonly handlers: SequenceHandlers,
    private readonly owner: Dispatcher,
  ) {}

  cancel(): void {
    this.owner.cancel(this);
  }
}

export class Dispatcher {
  private readonly flights = new Map<string, Flight>();
  private sub: Subscription | null = null;
  private offDeath: (() => void) | null = null;
  private readonly acks: AckInbox;
  readonly routerId: string;

  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: DeploymentSubjects,
    private readonly ranks: RankTable,
    private readonly opts: DispatchOptions,
    private readonly metrics: RouterMetrics,
    private readonly log: Logger,
    routerId?: string,
  ) {
    this.routerId = routerId ?? randomBytes(6).toString("hex");
    this.acks = new AckInbox(nc);
  }

  start(): void {
    this.acks.start();
    this.sub = this.nc.subscribe(this.subjects.replyWildcard(this.routerId), {
      callback: (_e, msg) => {
        // a throwing handler must not take the subscription down with it
        try {
          this.onStream(msg);
        } catch (err) {
          this.log.error({ err, subject: msg.subject }, "handling a stream message failed");
          const flight = this.flights.get(requestIdOfReply(msg.subject) ?? "");
          if (flight && !flight.done) {
            this.cancel(flight);
            flight.handlers.onError(new LatentMeshError("internal", "internal error while streaming"));
          }
        }
      },
    });
    this.offDeath = this.ranks.onDeath((workerId, why) => {
      for (const f of [...this.flights.values()]) if (f.workerId === workerId && !f.placing) this.migrate(f, `rank ${workerId} died: ${why}`);
    });
  }

  stop(): void {
    this.sub?.unsubscribe();
    this.acks.stop();
    this.offDeath?.();
  }

  get inflight(): number {
    return this.flights.size;
  }

  /**
   * Places a sequence; resolves once a rank has accepted it. Rejects with no_live_rank, queue_full,
   * context_length_exceeded, … when no rank takes it (nothing was started then).
   */
  async submit(params: SequenceParams, handlers: SequenceHandlers): Promise<SequenceHandle> {
    const flight = new Flight(params, handlers, this);
    this.flights.set(params.id, flight);
    try {
      await this.place(flight);
    } catch (err) {
      flight.done = true;
      this.flights.delete(params.id);
      throw err;
    }
    return flight;
  }

  cancel(flight: Flight): void {
    if (flight.done) return;
    flight.cancelled = true;
    this.end(flight);
    this.sendCancel(flight);
  }

  /** Tries ranks by predicted time until one accepts; throws the reason none did. */
  private async place(flight: Flight): Promise<void> {
    const p = flight.params;
    let refusal: LatentMeshError | null = null;
    for (;;) {
      const t0 = performance.now();
      // after a migration the SLO left is what counts
      const sloLeftMs = p.sloMs !== undefined ? Math.max(0, p.sloMs - (t0 - (p.arrivedAt ?? t0))) : undefined;
      const pick = pickRank(
        {
          model: p.model,
          promptTokens: p.promptTokens.length + flight.generated.length,
          maxTokens: p.maxTokens - flight.generated.length,
          requestClass: requestClassOf(p.sampling),
          sessionWorkerId: p.sessionWorkerId,
          ...(sloLeftMs !== undefined ? { sloMs: sloLeftMs } : {}),
          exclude: flight.tried,
        },
        this.ranks.views(),
        this.opts.pick,
      );
      this.metrics.routingOverhead.observe((performance.now() - t0) / 1000);
      if (!pick) throw refusal ?? new LatentMeshError("no_live_rank", `no live rank serves model ${p.model}`);
      flight.tried.add(pick.workerId);
      flight.workerId = pick.workerId;
      flight.meetsSlo = p.sloMs !== undefined ? pick.meetsSlo : undefined;
      flight.attempt++;
      flight.expectedSeq = 0;
      const req: GenerateRequest = {
        type: "generate",
        requestId: p.id,
        attempt: flight.attempt,
        replySubject: this.subjects.reply(this.routerId, p.id),
        model: p.model,
        promptTokens: [...p.promptTokens, ...flight.generated],
        maxTokens: p.maxTokens - flight.generated.length,
        sampling: p.sampling,
        ignoreEos: p.ignoreEos,
        stopTokenIds: [],
        ...(pick.maxDraftTokens !== undefined ? { maxDraftTokens: pick.maxDraftTokens } : {}),
      };
      this.ranks.placed(pick.workerId);
      let reply: Msg;
      flight.placing = true;
      try {
        reply = await this.acks.request(this.subjects.generate(pick.workerId), encodeMessage(req), this.opts.submitTimeoutMs);
      } catch (err) {
        const reason = err instanceof AckError ? err.reason : String(err);
        if (reason === "no_responders") this.ranks.kill(pick.workerId, "no subscriber on its subject"); // not migrated: placing
        flight.placing = false;
        p.log.warn({ workerId: pick.workerId, reason }, "rank did not acknowledge; trying another");
        refusal = new LatentMeshError("worker_lost", `rank ${pick.workerId} did not acknowledge the request`);
        if (flight.done || reason === "closed") throw refusal;
        continue;
      }
      flight.placing = false;
      // ended while waiting for the acknowledgement: by the rank (its final came first), or by cancel(),
      // whose cancel may have reached the rank before the request was registered there: send it again
      if (flight.done) return flight.cancelled ? this.sendCancel(flight) : undefined;
      const ack = decodeMessage(SubmitAck, reply.data, "SubmitAck");
      if (!ack.ok) throw new LatentMeshError("internal", `rank ${pick.workerId} answered with an invalid acknowledgement (${ack.error})`);
      switch (ack.value.type) {
        case "accepted":
          p.log.debug({ workerId: pick.workerId, attempt: flight.attempt, predictedMs: Math.round(pick.predictedMs), reason: pick.reason, ...(sloLeftMs !== undefined ? { sloLeftMs: Math.round(sloLeftMs), meetsSlo: pick.meetsSlo } : {}), ...(pick.maxDraftTokens !== undefined ? { maxDraftTokens: pick.maxDraftTokens } : {}) }, "placed");
          return;
        case "rejected":
          refusal = new LatentMeshError(ack.value.code, ack.value.message);
          if (!RETRY_ELSEWHERE.has(ack.value.code)) throw refusal;
          continue;
      }
    }
  }

  private onStream(msg: Msg): void {
    const id = requestIdOfReply(msg.subject);
    const flight = id === undefined ? undefined : this.flights.get(id);
    if (!flight || flight.done) return;
    const decoded = decodeMessage(StreamMessage, msg.data, "StreamMessage");
    if (!decoded.ok) {
      flight.params.log.error({ error: decoded.error, workerId: flight.workerId }, "invalid stream message");
      return this.migrate(flight, decoded.error);
    }
    const m = decoded.value;
    if (m.attempt !== flight.attempt) return; // an earlier placement of a migrated sequence
    if (m.seq !== flight.expectedSeq) return this.migrate(flight, `stream gap: expected message ${flight.expectedSeq}, got ${m.seq}`);
    flight.expectedSeq++;
    switch (m.type) {
      case "tokens":
        this.deliver(flight, m.tokens);
        return;
      case "final":
        this.deliver(flight, m.tokens);
        if (m.finishReason === "cancelled") return this.migrate(flight, "rank cancelled the sequence");
        this.end(flight);
        flight.handlers.onFinal(m.finishReason);
        return;
      case "error":
        this.end(flight);
        flight.handlers.onError(new LatentMeshError(m.code, `rank ${flight.workerId}: ${m.message}`));
        return;
    }
  }

  private deliver(flight: Flight, tokens: readonly number[]): void {
    if (tokens.length === 0) return;
    for (const t of tokens) flight.generated.push(t);
    flight.handlers.onTokens(tokens);
  }

  /** Moves a sequence whose rank failed to another rank, or ends it with worker_lost. */
  private migrate(flight: Flight, why: string): void {
    if (flight.done) return;
    const p = flight.params;
    this.sendCancel(flight);
    if (flight.migrations >= this.opts.maxMigrations) {
      this.end(flight);
      p.log.error({ workerId: flight.workerId, migrations: flight.migrations, why }, "sequence lost");
      flight.handlers.onError(new LatentMeshError("worker_lost", `the rank serving this request failed (${why}) and it could not be moved (${flight.migrations} migrations)`));
      return;
    }
    flight.migrations++;
    const ongoing = flight.generated.length > 0;
    this.metrics.migrations(ongoing ? "ongoing_request" : "new_request");
    p.log.warn({ from: flight.workerId, generated: flight.generated.length, why }, "migrating");
    if (flight.generated.length >= p.maxTokens) {
      this.end(flight);
      flight.handlers.onFinal("length");
      return;
    }
    const from = flight.workerId;
    this.place(flight).then(
      () => p.log.info({ from, to: flight.workerId, attempt: flight.attempt }, "migrated"),
      (err: unknown) => {
        if (flight.done) return;
        this.end(flight);
        const e = err instanceof LatentMeshError ? err : new LatentMeshError("internal", String(err));
        flight.handlers.onError(new LatentMeshError("worker_lost", `the rank serving this request failed (${why}) and no other rank took it: ${e.message}`));
      },
    );
  }

  private sendCancel(flight: Flight): void {
    if (!flight.workerId || this.nc.isClosed()) return;
    this.nc.publish(this.subjects.cancel(flight.workerId), encodeMessage({ type: "cancel", requestId: flight.params.id, attempt: flight.attempt }));
  }

  private end(flight: Flight): void {
    flight.done = true;
    this.flights.delete(flight.params.id);
  }
}
