/**
 * Request/reply for SubmitAcks over one inbox subscription of this router (`<inbox>.*`), like nats.js's
 * muxed `request()` but cheaper on the hot path: no Error objects (stack captures) are made per
 * request, only when a request actually fails. Ranks simply `msg.respond()`, so nothing changes on
 * the wire.
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from "nats";

/** Why an acknowledgement did not come. */
export type AckFailure = "timeout" | "no_responders" | "closed";

/** A request that got no acknowledgement; `reason` says why. */
export class AckError extends Error {
  constructor(
    readonly reason: AckFailure,
    subject: string,
  ) {
    super(`no acknowledgement on ${subject}: ${reason}`);
  }
}

interface Pending {
  readonly resolve: (m: Msg) => void;
  readonly reject: (e: AckError) => void;
  readonly timer: NodeJS.Timeout;
  readonly subject: string;
}

/** NATS status code the server sends to a request's reply subject when nobody subscribes. */
const NO_RESPONDERS = 503;

export class AckInbox {
  private readonly prefix: string;
  private readonly pending = new Map<string, Pending>();
  private sub: Subscription | null = null;
  private next = 0;

  constructor(private readonly nc: NatsConnection) {
    this.prefix = `${createInbox()}.`;
  }

  start(): void {
    this.sub = this.nc.subscribe(`${this.prefix}*`, { callback: (_e, msg) => this.onReply(msg) });
  }

  /** Rejects what is pending with `closed` and unsubscribes. */
  stop(): void {
    this.sub?.unsubscribe();
    this.sub = null;
    for (const [token, p] of this.pending) this.settle(token, p, new AckError("closed", p.subject));
  }

  /** Publishes `data` to `subject` and resolves with the reply; rejects with AckError. */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Msg> {
    const token = (this.next++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      const timer = setTimeout(() => {
        const p = this.pending.get(token);
        if (p) this.settle(token, p, new AckError("timeout", subject));
      }, timeoutMs);
      this.pending.set(token, { resolve, reject, timer, subject });
      try {
        this.nc.publish(subject, data, { reply: this.prefix + token });
      } catch {
        const p = this.pending.get(token);
        if (p) this.settle(token, p, new AckError("closed", subject));
      }
    });
  }

  private onReply(msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length);
    const p = this.pending.get(token);
    if (!p) return; // timed out already
    if (msg.data.length === 0 && msg.headers?.code === NO_RESPONDERS) return this.settle(token, p, new AckError("no_responders", p.subject));
    this.settle(token, p, msg);
  }

  private settle(token: string, p: Pending, outcome: Msg | AckError): void {
    this.pending.delete(token);
    clearTimeout(p.timer);
    if (outcome instanceof AckError) p.reject(outcome);
    else p.resolve(outcome);
  }
}
