/**
 * Hand-written types of the native addon (kernels/napi → kernels/build/latentmesh_native.node).
 * Only worker/engine.ts loads it. Slow calls return Promises; native errors arrive as Error
 * objects whose message starts with the native call's name (e.g. "Engine.step: ...").
 */

/** Dense model shape handed to the native side; built from a validated ModelConfig in TS. */
export interface NativeModelSpec {
  vocabSize: number;
  hiddenSize: number;
  /** One letter per block: M (Mamba-2), E (MoE), * (attention), - (MLP). */
  pattern: string;
  /** MTP block pattern (may be empty). */
  mtpPattern: string;
  /** MTP layers in the checkpoint (num_nextn_predict_layers); absent: 0. */
  numNextnPredictLayers?: number;
  normEps: number;
  tieWordEmbeddings: boolean;
  // Mamba-2
  mambaNumHeads: number;
  mambaHeadDim: number;
  ssmStateSize: number;
  nGroups: number;
  convKernel: number;
  chunkSize: number;
  timeStepMin: number;
  timeStepMax: number;
  useConvBias: boolean;
  mambaProjBias: boolean;
  // attention
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  attentionBias: boolean;
  // MoE / MLP
  intermediateSize: number;
  moeIntermediateSize: number;
  moeSharedExpertIntermediateSize: number;
  nRoutedExperts: number;
  numExpertsPerTok: number;
  nGroup: number;
  topkGroup: number;
  normTopkProb: boolean;
  routedScalingFactor: number;
  /** 0 when the model has no LatentMoE projections. */
  moeLatentSize: number;
  mlpBias: boolean;
}

/** Where one tensor's bytes are: validated by worker/checkpoint.ts before the native side reads them. */
export interface NativeTensorRef {
  name: string;
  file: string;
  /** Byte offset of the data in the file. */
  offset: number;
  nbytes: number;
  dtype: "F32" | "BF16" | "F16";
  shape: number[];
}

/**
 * This process's place in an expert-parallel group (kernels/engine/expert-parallel.h). With
 * worldSize 1 the other fields are ignored.
 */
export interface NativeGroupOptions {
  rank: number;
  worldSize: number;
  /** expert → ranks holding a copy, primary first (a resolved shard plan); empty when worldSize is 1. */
  expertRanks: number[][];
  /** host:port of rank 0's rendezvous endpoint (rank 0 listens on that port). */
  leaderAddress: string;
  /** A collective not finished within this time fails the step on every rank. */
  collectiveTimeoutMs: number;
  /** How long createEngine waits for every rank to arrive. */
  rendezvousTimeoutMs: number;
}

export interface NativeEngineOptions {
  spec: NativeModelSpec;
  group: NativeGroupOptions;
  /** Every tensor of the checkpoint; empty with loadFormat "dummy". */
  tensors: NativeTensorRef[];
  loadFormat: "safetensors" | "dummy";
  /** Seed of dummy weights. */
  dummySeed: number;
  backend: "cpu" | "cuda";
  /** Number of sequence slots (Mamba conv + SSM state each). */
  maxSlots: number;
  /** Tokens per KV-cache block. */
  kvBlockSize: number;
  /** KV blocks in the pool (shared by all slots, per attention layer). */
  numKvBlocks: number;
  /** CPU threads for GEMMs (cpu backend). */
  threads: number;
  /**
   * Load the MTP layers (`mtp.*`) and run them every step so sequences can verify and propose
   * drafts (numDrafts, draftTokens). Needs numNextnPredictLayers 1 and worldSize 1. Absent: false.
   */
  mtp?: boolean;
  /**
   * cuda backend decode steps: "replay" (captured CUDA graphs per batch-size bucket; default),
   * "padded" (the same padded step run eagerly, the bitwise reference for replay), "off" (eager).
   */
  cudaGraphs?: "replay" | "padded" | "off";
  /** Time each component of every step (takeProfile); steps run eagerly while on. Absent: false. */
  profile?: boolean;
  /** Dummy weights: Zipf-like expert popularity with about this exponent (0 / absent: uniform). */
  dummyRouteSkew?: number;
}

export interface NativeSampling {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** Per-request seed; the token at position p is drawn with a generator keyed by (seed, p). */
  seed: number;
}

/** One sequence's share of a step. */
export interface NativeStepSequence {
  slotId: number;
  /** Tokens fed in this step (a prefill chunk or one decode token). */
  tokens: Int32Array;
  /** Tokens already in the slot's state before this step; 0 resets the slot's state. */
  position: number;
  /** KV block ids covering positions [0, position + tokens.length); may be empty without attention layers. */
  blockTable: Int32Array;
  /** Sample a token after the last fed token (false for intermediate prefill chunks). */
  sample: boolean;
  /** Return logits: "none", "last" (1 row), or "all" (one row per fed token). */
  logits: "none" | "last" | "all";
  sampling: NativeSampling;
  /**
   * MTP engines only: the last `numDrafts` of `tokens` are drafts to verify. The engine keeps the
   * longest prefix equal to the target tokens (each drawn exactly as without speculation) plus one
   * target token, and leaves Mamba state and KV as if only those had been fed. Needs sample. Absent: 0.
   */
  numDrafts?: number;
  /**
   * MTP engines only: drafts to propose for the next step (absent: 0). With attention in the MTP
   * block the block table must cover draftTokens - 1 positions past position + tokens.length.
   */
  draftTokens?: number;
  /** MTP engines only: return the MTP head's logits of this step's rows (mtpLogits of the result), for parity checks. */
  mtpLogits?: boolean;
  /**
   * MTP engines only: skip the MTP head for this sequence this step (speculation off for now: the step
   * then costs what it costs without MTP). Stale MTP KV can only lower later acceptance, never change outputs.
   */
  mtpSkip?: boolean;
}

export interface NativeStepResult {
  /** One entry per sequence: the sampled token, or -1 where sample was false. */
  tokens: Int32Array;
  /** Rows of vocabSize floats for the sequences that asked for logits, in order ("last": the last accepted position). */
  logits: Float32Array;
  /**
   * Per sequence: drafts accepted (0..numDrafts). The emitted tokens are those drafts followed by
   * `tokens[i]`; the slot now holds position + tokens.length - numDrafts + numAccepted tokens.
   */
  numAccepted: Int32Array;
  /** Each sequence's `draftTokens` new drafts, concatenated in batch order. */
  drafts: Int32Array;
  /**
   * For sequences with mtpLogits, rows of vocabSize: the MTP head's logits of each row it ran this
   * step (one per accepted position whose next token is known, the last paired with the sampled
   * token; row j predicts token j+2), then one per further draft.
   */
  mtpLogits: Float32Array;
  /** Tokens fed by the whole expert-parallel group in this step (this batch's alone without a group); 0: the group is idle. */
  groupTokens: number;
}

export interface NativeEngineInfo {
  backend: "cpu" | "cuda";
  maxSlots: number;
  kvBlockSize: number;
  numKvBlocks: number;
  numParameters: number;
  /** Bytes of state per slot (conv + SSM). */
  stateBytesPerSlot: number;
}

export interface NativeStepProfile {
  steps: number;
  components: { name: string; ms: number }[];
}

export interface NativeEngine {
  readonly info: NativeEngineInfo;
  /** Run one forward step over a mixed batch. Never call again before the promise settles. */
  step(sequences: NativeStepSequence[]): Promise<NativeStepResult>;
  /**
   * Tokens of this rank's sequences routed to each expert since load: (MoE layers, routed experts)
   * row-major, MoE layers in model order; empty when the backend does not count. Safe during a step.
   */
  expertTokenCounts(): Float64Array;
  /**
   * With options.profile: device milliseconds per component summed over the steps since the last
   * call (and how many steps), then reset; `components` is empty when the engine does not profile.
   */
  takeProfile(): NativeStepProfile;
  /** Free native memory; the engine is unusable afterwards. */
  close(): void;
}

export interface NativeAddon {
  version(): string;
  backends(): string[];
  /** Measures the backend's copy bandwidth and GEMM rate now (benchmark ceilings). */
  measureRoofline(backend: "cpu" | "cuda", threads: number): Promise<{ copyGBps: number; matmulTflops: number }>;
  /** Loads weights (slow: runs off the main thread). */
  createEngine(options: NativeEngineOptions): Promise<NativeEngine>;
}
