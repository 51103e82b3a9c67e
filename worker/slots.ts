/**
 * The two resources a running sequence holds: one state slot (Mamba conv + SSM state) and enough
 * paged-KV blocks for its attention layers. Both are free lists of ids handed to the engine.
 */

/** Fixed pool of state slots 0..size-1. */
export class SlotPool {
  private readonly freeIds: number[];

  constructor(readonly size: number) {
    // pop() hands out the lowest id first
    this.freeIds = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  get numFree(): number {
    return this.freeIds.length;
  }

  acquire(): number | null {
    return this.freeIds.pop() ?? null;
  }

  release(slotId: number): void {
    this.freeIds.push(slotId);
  }
}

/** Fixed pool of KV blocks of `blockSize` tokens each. */
export class KvBlockPool {
  private readonly freeIds: number[];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    this.freeIds = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get numFree(): number {
    return this.freeIds.length;
  }

  /** Blocks covering `numTokens` positions. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /** Grows `blockIds` to cover `numTokens` positions; false (and nothing taken) when the pool is short. */
  grow(blockIds: number[], numTokens: number): boolean {
    const missing = this.blocksFor(numTokens) - blockIds.length;
    if (missing <= 0) return true;
    if (missing > this.freeIds.length) return false;
    for (let i = 0; i < missing; i++) blockIds.push(this.freeIds.pop() as number);
    return true;
  }

  /** Returns every block of `blockIds` to the pool and empties it. */
  releaseAll(blockIds: number[]): void {
    for (const id of blockIds) this.freeIds.push(id);
    blockIds.length = 0;
  }
}
