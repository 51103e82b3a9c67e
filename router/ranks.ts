/**
 * The router's view of the ranks: the latest LoadReport of each, and liveness. A rank is dead when
 * its reports stop for `deadAfterMs`, or when it restarts (its report sequence goes back), since a
 * restarted rank has lost its sequences. Listeners hear about each death once.
 */
import type { LoadReport } from "../contracts/messages.js";
import type { RankView } from "./pick-rank.js";

interface Entry {
  report: LoadReport;
  seenMs: number;
  placedSinceReport: number;
}

export class RankTable {
  private readonly ranks = new Map<string, Entry>();
  private readonly deathListeners = new Set<(workerId: string, why: string) => void>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly deadAfterMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Checks liveness every quarter of deadAfterMs until stop(). */
  start(): void {
    this.timer ??= setInterval(() => this.sweep(), Math.max(25, this.deadAfterMs / 4));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  onDeath(listener: (workerId: string, why: string) => void): () => void {
    this.deathListeners.add(listener);
    return () => this.deathListeners.delete(listener);
  }

  update(report: LoadReport): void {
    const prev = this.ranks.get(report.workerId);
    if (prev && report.seq < prev.report.seq) this.kill(report.workerId, "restarted");
    this.ranks.set(report.workerId, { report, seenMs: this.now(), placedSinceReport: 0 });
  }

  /** Counts a placement until the rank's next report shows it. */
  placed(workerId: string): void {
    const e = this.ranks.get(workerId);
    if (e) e.placedSinceReport++;
  }

  /** Marks a rank dead now (e.g. it stopped answering NATS requests). */
  kill(workerId: string, why: string): void {
    if (!this.ranks.delete(workerId)) return;
    for (const l of this.deathListeners) l(workerId, why);
  }

  isLive(workerId: string): boolean {
    return this.ranks.has(workerId);
  }

  /** Every rank heard from within deadAfterMs. */
  views(): RankView[] {
    const out: RankView[] = [];
    for (const e of this.ranks.values()) out.push({ report: e.report, placedSinceReport: e.placedSinceReport });
    return out;
  }

  /** Ready, not draining ranks serving `model`. */
  readyFor(model: string): LoadReport[] {
    return [...this.ranks.values()].map((e) => e.report).filter((r) => r.ready && !r.draining && r.model === model);
  }

  sweep(): void {
    const now = this.now();
    for (const [id, e] of [...this.ranks]) if (now - e.seenMs > this.deadAfterMs) this.kill(id, `no load report for ${Math.round(now - e.seenMs)} ms`);
  }
}
