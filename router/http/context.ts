/** What the HTTP handlers share: config, tokenizer, rank table, dispatcher, metrics, admission counts. */
import type { RouterConfig } from "../config.js";
import type { Dispatcher } from "../dispatch.js";
import type { RouterMetrics } from "../metrics.js";
import type { RankTable } from "../ranks.js";
import type { TextCodec } from "../tokenizer.js";

/** Bounded map of x-session-id → the rank that served the session last. */
export class SessionMap {
  private readonly map = new Map<string, string>();
  constructor(private readonly capacity = 10000) {}

  get(session: string): string | undefined {
    return this.map.get(session);
  }

  set(session: string, workerId: string): void {
    this.map.delete(session);
    this.map.set(session, workerId);
    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value as string);
  }
}

export class RouterContext {
  private inflightCount = 0;
  private queuedCount = 0;
  readonly sessions = new SessionMap();

  constructor(
    readonly cfg: RouterConfig,
    /** The served model name. */
    readonly model: string,
    readonly codec: TextCodec,
    readonly ranks: RankTable,
    readonly dispatcher: Dispatcher,
    readonly metrics: RouterMetrics,
  ) {}

  get inflight(): number {
    return this.inflightCount;
  }

  admit(delta: 1 | -1): void {
    this.inflightCount += delta;
    this.metrics.setInflight(this.inflightCount);
  }

  queued(delta: 1 | -1): void {
    this.queuedCount += delta;
    this.metrics.setQueued(this.queuedCount);
  }
}
