/**
 * What the worker loop needs from the engine, as an interface: the real `Engine` of worker/engine.ts
 * satisfies it structurally, and unit tests drive the loop with a fake.
 */
import type { NativeEngineInfo, NativeStepResult, NativeStepSequence } from "./native.js";

/** One forward step over a mixed batch; never called again before the promise settles. */
export interface StepEngine {
  step(sequences: NativeStepSequence[]): Promise<NativeStepResult>;
  /**
   * The engine keeps the rows of steps that skip the MTP head (mtpSkip) and catches the head's
   * attention KV up when it runs again, so skipping never lowers later acceptance (absent: false,
   * skipped positions stay stale).
   */
  readonly mtpCatchesUp?: boolean;
}

/** The model facts the worker uses (a subset of contracts/model-config.ts's ModelConfig). */
export interface EngineModelFacts {
  readonly vocabSize: number;
  readonly maxPositionEmbeddings: number;
  /** One letter per layer; "*" marks attention (the only layers with a KV cache). */
  readonly pattern: string;
}

/** A loaded engine as the worker uses it (worker/engine.ts's Engine). */
export interface LoadedEngine extends StepEngine {
  readonly config: EngineModelFacts;
  readonly info: NativeEngineInfo;
  /** End-of-sequence ids from generation_config.json (or config.json). */
  readonly eosTokenIds: readonly number[];
  /** MTP layers are loaded (steps may carry drafts). */
  readonly mtp?: boolean;
  /** Tokens routed to each expert since load (worker/engine.ts's ExpertTokenCounts). */
  expertTokenCounts(): { layers: readonly number[]; numExperts: number; counts: ArrayLike<number> };
  close(): void;
}
