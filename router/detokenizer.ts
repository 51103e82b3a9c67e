/**
 * Incremental detokenization (as in vLLM and TGI): text is released only once the tokens decoded so
 * far end on a complete character, so multi-byte characters split across tokens never leak as U+FFFD
 * and the concatenated deltas equal decode(all tokens).
 */
export class IncrementalDetokenizer {
  private readonly tokens: number[] = [];
  /** Start of the window re-decoded for context (byte-level BPE merges across the boundary). */
  private prefixOffset = 0;
  /** Tokens whose text has been released. */
  private readOffset = 0;

  constructor(private readonly decode: (ids: readonly number[]) => string) {}

  /** Adds tokens; returns the text they complete (possibly empty). */
  push(newTokens: readonly number[]): string {
    for (const t of newTokens) this.tokens.push(t);
    const prefix = this.decode(this.tokens.slice(this.prefixOffset, this.readOffset));
    const full = this.decode(this.tokens.slice(this.prefixOffset));
    if (full.length > prefix.length && !full.endsWith("\uFFFD")) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.tokens.length;
      return full.slice(prefix.length);
    }
    return "";
  }

  /** Text still held back at the end of the sequence (an incomplete character decodes as U+FFFD). */
  flush(): string {
    if (this.readOffset === this.tokens.length) {
      this.prefixOffset = this.readOffset; // nothing held back: no need to decode
      return "";
    }
    const prefix = this.decode(this.tokens.slice(this.prefixOffset, this.readOffset));
    const full = this.decode(this.tokens.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.tokens.length;
    return full.length > prefix.length ? full.slice(prefix.length) : "";
  }
}
