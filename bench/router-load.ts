/**
 * The load generator of bench/router.ts, shared by both paths so they are measured alike:
 * open loop at a fixed offered rate (sends never wait for answers), closed loop for peak req/s, and
 * nearest-rank percentiles.
 */

/** One request of a path; resolves when its answer is complete. */
export type Call = () => Promise<void>;

/** Latencies of one or more open-loop runs of one path. */
export interface Samples {
  /** Request latency, ms, from the moment it was sent. */
  readonly latMs: number[];
  /** How late each send was against its schedule, ms (the generator keeping up). */
  readonly lagMs: number[];
  errors: number;
  sent: number;
  elapsedMs: number;
}

export const emptySamples = (): Samples => ({ latMs: [], lagMs: [], errors: 0, sent: 0, elapsedMs: 0 });

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Open loop: sends `rate` requests/s for `seconds`, each at its scheduled time (a late timer sends
 * the overdue ones at once), without waiting for answers; adds into `into`.
 */
export async function openLoop(call: Call, rate: number, seconds: number, into: Samples = emptySamples()): Promise<Samples> {
  const total = Math.round(rate * seconds);
  const periodMs = 1000 / rate;
  const inflight: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + i * periodMs;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait); // never spin: on 2 cores a spinning generator steals the router's CPU
    const t0 = performance.now();
    into.lagMs.push(t0 - due);
    inflight.push(call().then(() => void into.latMs.push(performance.now() - t0), () => void into.errors++));
  }
  await Promise.all(inflight);
  into.sent += total;
  into.elapsedMs += performance.now() - start;
  return into;
}

/** Closed loop: `concurrency` callers back to back for `seconds`; requests/s. */
export async function closedLoop(call: Call, concurrency: number, seconds: number): Promise<number> {
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await call();
      n++;
    }
  }));
  return (n / (performance.now() - start)) * 1000;
}

/** Nearest-rank percentile `p` (0–100) of ascending `sorted`. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? NaN;
}

export const sortedCopy = (xs: readonly number[]) => [...xs].sort((a, b) => a - b);
