/**
 * The engine as the worker sees it: loads a checkpoint (or dummy weights of its config) into the
 * native engine and runs steps. The only module that touches the addon (STYLE rule 4).
 */
import { availableParallelism, totalmem } from "node:os";
import { LatentMeshError } from "../contracts/errors.js";
import type { ModelConfig } from "../contracts/model-config.js";
import type { ShardPlan } from "../contracts/model-deployment-shard-plan.js";
import { loadAddon } from "./addon.js";
import { expectedTensors, readCheckpoint, readConfigs } from "./checkpoint.js";
import type { NativeEngine, NativeEngineInfo, NativeGroupOptions, NativeModelSpec, NativeStepResult, NativeStepProfile, NativeStepSequence, NativeTensorRef } from "./native.js";
import { planForGroup } from "./shard-plan.js";

export type { NativeStepResult as StepResult, NativeStepSequence as StepSequence, NativeEngineInfo as EngineInfo };

/** This process's place in an expert-parallel group (DESIGN §3). */
export interface EngineGroupOptions {
  readonly rank: number;
  readonly worldSize: number;
  /** host:port of rank 0's rendezvous endpoint. */
  readonly leaderAddress: string;
  /** Where each routed expert lives; resolved against the checkpoint's expert count at load. */
  readonly shardPlan: ShardPlan;
  /** A collective not finished in this time fails the step on every rank. */
  readonly collectiveTimeoutMs: number;
  /** How long loading waits for every rank to arrive. */
  readonly rendezvousTimeoutMs: number;
}

/** Tokens routed to each expert since load, as counted by this rank (its own sequences' tokens). */
export interface ExpertTokenCounts {
  /** Model layer index of each MoE layer (rows of `counts`). */
  readonly layers: readonly number[];
  readonly numExperts: number;
  /** (layers, numExperts) row-major. */
  readonly counts: Float64Array;
}

const EXPERT_TENSOR = /^backbone\.layers\.\d+\.mixer\.experts\.(\d+)\./;

export interface EngineLoadOptions {
  /** Checkpoint directory; with loadFormat "dummy" only its config.json (and generation_config.json) is read. */
  readonly modelDir: string;
  readonly loadFormat: "auto" | "dummy";
  readonly backend: "cpu" | "cuda";
  /** Sequences that can be live at once (one Mamba state slot each). */
  readonly maxSlots: number;
  /** Tokens per KV-cache block. */
  readonly kvBlockSize: number;
  /** KV-cache blocks in the pool. */
  readonly numKvBlocks: number;
  /** CPU threads for the cpu backend's GEMMs; 0 = all cores. */
  readonly threads?: number;
  /** Seed of dummy weights. */
  readonly dummySeed?: number;
  /** Progress lines for humans (loading can take minutes on real checkpoints). */
  readonly onProgress?: (line: string) => void;
  /** Expert parallelism; absent: a group of one holding every expert. */
  readonly group?: EngineGroupOptions;
  /**
   * Load the MTP layers for speculative decoding (kernels/dev/REFERENCE.md §10). True: required
   * (an error if the checkpoint has none); "auto": when the checkpoint has them and the backend and
   * group allow it; absent/false: off.
   */
  readonly mtp?: boolean | "auto";
  /** cuda backend decode graphs (NativeEngineOptions.cudaGraphs); absent: "replay". */
  readonly cudaGraphs?: "replay" | "padded" | "off";
  /** Time each component of every step (takeProfile); steps run eagerly while on. */
  readonly profile?: boolean;
  /** Dummy weights: Zipf-like expert popularity exponent (0: uniform, the default). */
  readonly dummyRouteSkew?: number;
}

/** Whether MTP can run: the checkpoint has one MTP layer and there is no expert-parallel group. */
export function mtpSupport(config: ModelConfig, backend: "cpu" | "cuda", worldSize: number): { ok: true } | { ok: false; reason: string } {
  if (config.numNextnPredictLayers === 0 || config.mtpPattern === "") return { ok: false, reason: "the checkpoint has no MTP layers (num_nextn_predict_layers is 0)" };
  if (config.numNextnPredictLayers !== 1) return { ok: false, reason: `num_nextn_predict_layers ${config.numNextnPredictLayers} is not supported (1 is, the released layout)` };
  if (worldSize > 1) return { ok: false, reason: "MTP speculative decoding with expert parallelism is not implemented yet" };
  return { ok: true };
}

/** The native group options: the plan resolved to expert → ranks, and the experts this rank holds. */
function nativeGroup(config: ModelConfig, g: EngineGroupOptions | undefined): { group: NativeGroupOptions; held: (expert: number) => boolean } {
  if (!g || g.worldSize === 1) {
    return { group: { rank: 0, worldSize: 1, expertRanks: [], leaderAddress: "", collectiveTimeoutMs: 1, rendezvousTimeoutMs: 1 }, held: () => true };
  }
  if (g.rank < 0 || g.rank >= g.worldSize) throw new LatentMeshError("invalid_config", `rank ${g.rank} is outside [0, ${g.worldSize})`, "rank");
  const hasMoe = config.pattern.includes("E");
  const plan = hasMoe ? planForGroup(g.shardPlan, g.worldSize, config.nRoutedExperts) : null;
  const expertRanks = plan ? plan.ranksByExpert.map((r) => [...r]) : [];
  const mine = new Set(plan?.expertsByRank[g.rank] ?? []);
  return {
    group: { rank: g.rank, worldSize: g.worldSize, expertRanks, leaderAddress: g.leaderAddress, collectiveTimeoutMs: g.collectiveTimeoutMs, rendezvousTimeoutMs: g.rendezvousTimeoutMs },
    held: (e) => mine.has(e),
  };
}

/** Whether this rank loads the tensor: every replicated one, and the routed experts it holds. */
function loadsTensor(name: string, held: (expert: number) => boolean): boolean {
  const m = EXPERT_TENSOR.exec(name);
  return !m || held(Number(m[1]));
}

/** The native spec: the ModelConfig fields the engine computes with. */
export function nativeSpec(c: ModelConfig): NativeModelSpec {
  return {
    vocabSize: c.vocabSize,
    hiddenSize: c.hiddenSize,
    pattern: c.pattern,
    mtpPattern: c.mtpPattern,
    numNextnPredictLayers: c.numNextnPredictLayers,
    normEps: c.normEps,
    tieWordEmbeddings: c.tieWordEmbeddings,
    mambaNumHeads: c.mambaNumHeads,
    mambaHeadDim: c.mambaHeadDim,
    ssmStateSize: c.ssmStateSize,
    nGroups: c.nGroups,
    convKernel: c.convKernel,
    chunkSize: c.chunkSize,
    timeStepMin: c.timeStepMin,
    timeStepMax: c.timeStepMax,
    useConvBias: c.useConvBias,
    mambaProjBias: c.mambaProjBias,
    numAttentionHeads: c.numAttentionHeads,
    numKeyValueHeads: c.numKeyValueHeads,
    headDim: c.headDim,
    attentionBias: c.attentionBias,
    intermediateSize: c.intermediateSize,
    moeIntermediateSize: c.moeIntermediateSize,
    moeSharedExpertIntermediateSize: c.moeSharedExpertIntermediateSize,
    nRoutedExperts: c.nRoutedExperts,
    numExpertsPerTok: c.numExpertsPerTok,
    nGroup: c.nGroup,
    topkGroup: c.topkGroup,
    normTopkProb: c.normTopkProb,
    routedScalingFactor: c.routedScalingFactor,
    moeLatentSize: c.moeLatentSize,
    mlpBias: c.mlpBias,
  };
}

/** The backend's ceilings measured now: copy bandwidth (GB/s, read + write) and GEMM rate (TFLOP/s). */
export function measureRoofline(backend: "cpu" | "cuda", threads = availableParallelism()): Promise<{ copyGBps: number; matmulTflops: number }> {
  return loadAddon().measureRoofline(backend, threads);
}

export class Engine {
  private inFlight = false;

  private constructor(
    private readonly native: NativeEngine,
    /** The model's normalised config. */
    readonly config: ModelConfig,
    /** End-of-sequence ids (generation_config.json's list, else config.json's). */
    readonly eosTokenIds: readonly number[],
    /** The MTP layers are loaded: steps may verify and propose drafts. */
    readonly mtp: boolean = false,
  ) {}

  get info(): NativeEngineInfo {
    return this.native.info;
  }

  /** The cpu backend keeps rows of steps that skip the MTP head and catches its KV up later (cuda does not yet). */
  get mtpCatchesUp(): boolean {
    return this.mtp && this.native.info.backend === "cpu";
  }

  static async load(opts: EngineLoadOptions): Promise<Engine> {
    const progress = opts.onProgress ?? (() => {});
    const started = Date.now();
    const addon = loadAddon();
    if (!addon.backends().includes(opts.backend)) {
      throw new LatentMeshError("invalid_config", `backend '${opts.backend}' is not in this build (available: ${addon.backends().join(", ")})`, "backend");
    }
    let config: ModelConfig, eosTokenIds: readonly number[], tensors: NativeTensorRef[];
    if (opts.loadFormat === "dummy") {
      ({ config, eosTokenIds } = readConfigs(opts.modelDir));
      tensors = [];
      progress(`building dummy weights for ${opts.modelDir}/config.json (${config.pattern.length} layers)`);
    } else {
      const ckpt = readCheckpoint(opts.modelDir);
      ({ config, eosTokenIds, tensors } = ckpt);
      const bytes = tensors.reduce((a, t) => a + t.nbytes, 0);
      progress(`loading ${tensors.length} tensors (${(bytes / 2 ** 20).toFixed(1)} MiB) from ${opts.modelDir}`);
    }
    const { group, held } = nativeGroup(config, opts.group);
    tensors = tensors.filter((t) => loadsTensor(t.name, held));
    if (group.worldSize > 1) progress(`rank ${group.rank} of ${group.worldSize}: holds ${Array.from({ length: config.nRoutedExperts }, (_, e) => e).filter(held).length} of ${config.nRoutedExperts} routed experts; waiting for the group at ${group.leaderAddress}`);
    if (opts.backend === "cpu") {
      // The CPU backend keeps every weight in fp32: refuse up front rather than die of OOM.
      let params = 0;
      for (const [name, t] of expectedTensors(config)) if (loadsTensor(name, held)) params += t.shape.reduce((a, b) => a * b, 1);
      const need = params * 4;
      if (need > totalmem() * 0.8) {
        throw new LatentMeshError("invalid_config", `this model needs ${(need / 2 ** 30).toFixed(1)} GiB of fp32 weights on the cpu backend; this machine has ${(totalmem() / 2 ** 30).toFixed(1)} GiB (use --backend cuda)`, "backend");
      }
    }
    let mtp = false;
    if (opts.mtp) {
      const support = mtpSupport(config, opts.backend, group.worldSize);
      if (support.ok) mtp = true;
      else if (opts.mtp === true) throw new LatentMeshError("invalid_config", `speculative decoding: ${support.reason}`, "speculative-tokens");
      else progress(`MTP speculation off: ${support.reason}`);
    }
    const native = await addon.createEngine({
      spec: nativeSpec(config),
      group,
      tensors,
      loadFormat: opts.loadFormat === "dummy" ? "dummy" : "safetensors",
      dummySeed: opts.dummySeed ?? 0,
      backend: opts.backend,
      maxSlots: opts.maxSlots,
      kvBlockSize: opts.kvBlockSize,
      numKvBlocks: opts.numKvBlocks,
      threads: opts.threads ?? availableParallelism(),
      mtp,
      ...(opts.cudaGraphs ? { cudaGraphs: opts.cudaGraphs } : {}),
      ...(opts.profile ? { profile: true } : {}),
      ...(opts.dummyRouteSkew ? { dummyRouteSkew: opts.dummyRouteSkew } : {}),
    });
    progress(`engine ready: ${(native.info.numParameters / 1e6).toFixed(2)} M parameters on ${native.info.backend} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return new Engine(native, config, eosTokenIds, mtp);
  }

  /** One forward step over a mixed batch. Rejects if a step is already running. */
  /** Per-expert token counts since load (may be read while a step runs). */
  expertTokenCounts(): ExpertTokenCounts {
    const layers = [...this.config.pattern].flatMap((kind, i) => (kind === "E" ? [i] : []));
    return { layers, numExperts: this.config.nRoutedExperts, counts: this.native.expertTokenCounts() };
  }

  async step(sequences: NativeStepSequence[]): Promise<NativeStepResult> {
    if (this.inFlight) throw new LatentMeshError("engine_error", "Engine.step: a step is already running");
    this.inFlight = true;
    try {
      return await this.native.step(sequences);
    } catch (e) {
      throw new LatentMeshError("engine_error", e instanceof Error ? e.message : String(e), undefined, { cause: e });
    } finally {
      this.inFlight = false;
    }
  }

  /** Per-component device time of the steps since the last call (engines loaded with profile). */
  takeProfile(): NativeStepProfile {
    return this.native.takeProfile();
  }

  close(): void {
    this.native.close();
  }
}
