/**
 * One API request's generation: `n` sequences placed through the dispatcher, each turned back into
 * text (incremental detokenization, then stop strings cut exactly). Placement failures reject start()
 * before anything reaches the client; afterwards every choice ends in onFinish, or the whole
 * generation fails once through `done`.
 */
import { LatentMeshError } from "../contracts/errors.js";
import type { SamplingParams } from "../contracts/messages.js";
import type { Logger } from "../core/log.js";
import { IncrementalDetokenizer } from "./detokenizer.js";
import type { Dispatcher, SequenceHandle } from "./dispatch.js";
import type { RouterMetrics } from "./metrics.js";
import { StopMatcher } from "./stop.js";

export type ChoiceFinish = "stop" | "length";

export interface GenerationPlan {
  readonly requestId: string;
  readonly model: string;
  readonly promptTokens: readonly number[];
  readonly maxTokens: number;
  readonly stops: readonly string[];
  readonly n: number;
  /** Sampling of choice i (seeds differ per choice). */
  readonly sampling: (index: number) => SamplingParams;
  readonly ignoreEos: boolean;
  readonly sessionWorkerId?: string;
  /** Time from arrival to the last token (ms), from x-latentmesh-slo-ms; absent: none. */
  readonly sloMs?: number;
  readonly arrivedAt?: number;
}

export interface GenerationEvents {
  onText(index: number, text: string): void;
  onFinish(index: number, reason: ChoiceFinish): void;
}

export interface GenerationResult {
  readonly promptTokens: number;
  readonly completionTokens: number;
}

export interface Codec {
  decode(ids: readonly number[]): string;
}

class Choice {
  readonly detok: IncrementalDetokenizer;
  readonly stop: StopMatcher;
  handle: SequenceHandle | null = null;
  tokens = 0;
  finished = false;

  constructor(
    readonly index: number,
    codec: Codec,
    stops: readonly string[],
  ) {
    this.detok = new IncrementalDetokenizer((ids) => codec.decode(ids));
    this.stop = new StopMatcher(stops);
  }
}

export class Generation {
  private readonly choices: Choice[];
  private readonly startedMs = performance.now();
  private firstTokenMs: number | null = null;
  private lastTokenMs: number | null = null;
  private settle!: { resolve: (r: GenerationResult) => void; reject: (e: LatentMeshError) => void };
  private failed = false;
  /** Resolves when every choice has finished; rejects on the first failure. */
  readonly done: Promise<GenerationResult>;

  constructor(
    private readonly plan: GenerationPlan,
    codec: Codec,
    private readonly dispatcher: Dispatcher,
    private readonly events: GenerationEvents,
    private readonly metrics: RouterMetrics,
    private readonly log: Logger,
  ) {
    this.choices = Array.from({ length: plan.n }, (_, i) => new Choice(i, codec, plan.stops));
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined); // the caller awaits it; never an unhandled rejection
  }

  /** The rank of the first choice (for the response header). */
  get workerId(): string {
    return this.choices[0]?.handle?.workerId ?? "";
  }

  /** With an SLO: whether every choice's placement was predicted to finish within it; else undefined. */
  get meetsSlo(): boolean | undefined {
    if (this.plan.sloMs === undefined) return undefined;
    return this.choices.every((c) => c.handle?.meetsSlo !== false);
  }

  /** Places every choice; throws (and cancels what was placed) when one cannot be placed. */
  async start(): Promise<void> {
    try {
      for (const c of this.choices) {
        c.handle = await this.dispatcher.submit(
          {
            id: this.plan.n === 1 ? this.plan.requestId : `${this.plan.requestId}-${c.index}`,
            model: this.plan.model,
            promptTokens: this.plan.promptTokens,
            maxTokens: this.plan.maxTokens,
            sampling: this.plan.sampling(c.index),
            ignoreEos: this.plan.ignoreEos,
            sessionWorkerId: this.plan.sessionWorkerId,
            ...(this.plan.sloMs !== undefined ? { sloMs: this.plan.sloMs, arrivedAt: this.plan.arrivedAt } : {}),
            log: this.log,
          },
          {
            onTokens: (tokens) => this.onTokens(c, tokens),
            onFinal: (reason) => this.onFinal(c, reason),
            onError: (err) => this.fail(err),
          },
        );
        if (c.finished) c.handle.cancel(); // a stop string arrived before the acknowledgement
      }
    } catch (err) {
      this.cancel();
      throw err;
    }
  }

  /** Stops every unfinished choice on its rank (client gone). */
  cancel(): void {
    for (const c of this.choices) if (!c.finished) c.handle?.cancel();
  }

  private onTokens(c: Choice, tokens: readonly number[]): void {
    if (c.finished) return;
    const now = performance.now();
    if (this.firstTokenMs === null) {
      this.firstTokenMs = now;
      this.metrics.timeToFirstToken.observe((now - this.startedMs) / 1000);
    } else if (this.lastTokenMs !== null && c.index === 0) {
      this.metrics.interTokenLatency.observe((now - this.lastTokenMs) / 1000);
    }
    if (c.index === 0) this.lastTokenMs = now;
    c.tokens += tokens.length;
    const r = c.stop.push(c.detok.push(tokens));
    if (r.text) this.events.onText(c.index, r.text);
    if (r.stopped) {
      c.handle?.cancel();
      this.finish(c, "stop");
    }
  }

  private onFinal(c: Choice, reason: ChoiceFinish): void {
    if (c.finished) return;
    const r = c.stop.push(c.detok.flush());
    const tail = r.stopped ? r.text : r.text + c.stop.flush();
    if (tail) this.events.onText(c.index, tail);
    this.finish(c, r.stopped ? "stop" : reason);
  }

  private finish(c: Choice, reason: ChoiceFinish): void {
    c.finished = true;
    this.events.onFinish(c.index, reason);
    if (this.failed || !this.choices.every((x) => x.finished)) return;
    const completionTokens = this.choices.reduce((a, x) => a + x.tokens, 0);
    this.metrics.addOutputTokens(completionTokens);
    this.metrics.outputSequenceTokens.observe(completionTokens);
    this.settle.resolve({ promptTokens: this.plan.promptTokens.length, completionTokens });
  }

  private fail(err: LatentMeshError): void {
    if (this.failed) return;
    this.failed = true;
    this.cancel();
    this.settle.reject(err);
  }
}
