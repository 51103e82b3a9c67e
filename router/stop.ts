/**
 * Stop strings, cut exactly: text is released only when it cannot be the start of a stop string, so
 * a stop string split across tokens (or stream chunks) never leaks; the output ends right before the
 * earliest stop string.
 */
export interface StopResult {
  /** Text safe to send. */
  readonly text: string;
  /** A stop string was found; nothing more may be sent. */
  readonly stopped: boolean;
}

export class StopMatcher {
  private held = "";
  private done = false;

  constructor(private readonly stops: readonly string[]) {}

  push(delta: string): StopResult {
    if (this.done) return { text: "", stopped: true };
    if (this.stops.length === 0) return { text: delta, stopped: false };
    const buffer = this.held + delta;
    let cut = -1;
    for (const s of this.stops) {
      const i = buffer.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.done = true;
      this.held = "";
      return { text: buffer.slice(0, cut), stopped: true };
    }
    const keep = this.partialSuffix(buffer);
    this.held = buffer.slice(buffer.length - keep);
    return { text: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  /** At the end of the sequence: what was held back (it never became a stop string). */
  flush(): string {
    const rest = this.done ? "" : this.held;
    this.held = "";
    return rest;
  }

  /** Length of the longest suffix of `buffer` that is a proper prefix of some stop string. */
  private partialSuffix(buffer: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buffer.length); n > best; n--) {
        if (buffer.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
