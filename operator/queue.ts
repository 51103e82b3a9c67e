/**
 * A keyed work queue as controllers use it (client-go's workqueue): a key is queued at most once
 * however often it is added, never handed to two workers at once (added again while processing, it
 * is queued once processing is done), and requeued after failures with per-key exponential backoff.
 */
import type { OperatorMetrics } from "./metrics.js";

export interface QueueOptions {
  readonly name: string;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly metrics?: OperatorMetrics;
}

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly addedAt = new Map<string, number>();
  private waiters: ((key: string | undefined) => void)[] = [];
  private stopped = false;

  constructor(private readonly opts: QueueOptions) {}

  get length(): number {
    return this.queue.length;
  }

  /** Queues `key` unless it is queued already. */
  add(key: string): void {
    if (this.stopped || this.dirty.has(key)) return;
    this.dirty.add(key);
    this.opts.metrics?.adds.inc({ name: this.opts.name });
    if (this.processing.has(key)) return;
    this.push(key);
  }

  private push(key: string) {
    this.addedAt.set(key, Date.now());
    const waiter = this.waiters.shift();
    if (waiter) {
      this.take(key);
      waiter(key);
    } else {
      this.queue.push(key);
      this.opts.metrics?.depth.set({ name: this.opts.name }, this.queue.length);
    }
  }

  private take(key: string) {
    this.dirty.delete(key);
    this.processing.add(key);
    const at = this.addedAt.get(key);
    if (at !== undefined) this.opts.metrics?.queueDuration.observe({ name: this.opts.name }, (Date.now() - at) / 1000);
  }

  /** Adds `key` after `delayMs` (a pending delayed add of the same key is replaced by the sooner). */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped) return;
    if (delayMs <= 0) return this.add(key);
    const existing = this.timers.get(key);
    if (existing) clearTimeout(existing);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.timers.set(key, timer);
  }

  /** Requeues after a failure, with exponential backoff per key. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** n);
    this.opts.metrics?.retries.inc({ name: this.opts.name });
    this.addAfter(key, delay);
    return delay;
  }

  /** Clears the backoff of `key` (after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** The next key to process; undefined once the queue is shut down. */
  get(): Promise<string | undefined> {
    if (this.stopped) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) {
      this.opts.metrics?.depth.set({ name: this.opts.name }, this.queue.length);
      this.take(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks `key` processed; if it was added meanwhile it is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.stopped) this.push(key);
  }

  shutDown(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const w of this.waiters) w(undefined);
    this.waiters = [];
  }
}
