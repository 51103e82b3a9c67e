/**
 * First-principles cost model of one engine step, for the engine benchmark's roofline column:
 * bytes a decode step must move and FLOPs a prefill must do, from the model's shapes alone.
 */
import { countBlocks, type ModelConfig } from "../contracts/model-config.js";
import { expectedTensors } from "../worker/checkpoint.js";

export interface ModelCosts {
  /** Parameters read by every step: everything but the embeddings and the routed experts. */
  readonly denseParams: number;
  /** Parameters of one routed expert (up + down). */
  readonly expertParams: number;
  readonly moeLayers: number;
  /** Mamba conv + SSM state bytes of one sequence (fp32 SSM, bf16 conv as stored on the device). */
  readonly stateBytesPerSeq: number;
  /** KV-cache bytes per token of context (bf16 K and V over all attention layers). */
  readonly kvBytesPerToken: number;
  /** Projection and expert FLOPs per prefill token (2 × active parameters). */
  readonly flopsPerToken: number;
}

export function modelCosts(cfg: ModelConfig): ModelCosts {
  let total = 0, embed = 0, routed = 0;
  for (const [name, t] of expectedTensors(cfg)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.optional) continue;
    total += n;
    if (name === "backbone.embeddings.weight") embed += n;
    else if (/\.mixer\.experts\.\d+\./.test(name)) routed += n;
  }
  const blocks = countBlocks(cfg.pattern);
  const din = cfg.moeLatentSize > 0 ? cfg.moeLatentSize : cfg.hiddenSize;
  const expertParams = 2 * cfg.moeIntermediateSize * din;
  const inner = cfg.mambaNumHeads * cfg.mambaHeadDim;
  const convDim = inner + 2 * cfg.nGroups * cfg.ssmStateSize;
  const ssm = cfg.mambaNumHeads * cfg.mambaHeadDim * cfg.ssmStateSize * 4;
  const conv = convDim * cfg.convKernel * 2;
  const denseParams = total - embed - routed;
  return {
    denseParams,
    expertParams,
    moeLayers: blocks.E,
    stateBytesPerSeq: blocks.M * (ssm + conv),
    kvBytesPerToken: blocks["*"] * 2 * cfg.numKeyValueHeads * cfg.headDim * 2,
    flopsPerToken: 2 * (denseParams + blocks.E * cfg.numExpertsPerTok * expertParams),
  };
}

/** Expected distinct experts one MoE layer touches when `tokens` tokens each pick k of E uniformly. */
export function distinctExperts(cfg: ModelConfig, tokens: number): number {
  const E = cfg.nRoutedExperts, k = cfg.numExpertsPerTok;
  return E * (1 - Math.pow(1 - k / E, tokens));
}

/** Bytes one decode step over `batch` sequences at `context` tokens moves (weights of `weightBytes` each: 2 for bf16). */
export function decodeBytes(cfg: ModelConfig, batch: number, context: number, weightBytes = 2): number {
  const c = modelCosts(cfg);
  const weights = weightBytes * (c.denseParams + c.moeLayers * distinctExperts(cfg, batch) * c.expertParams);
  return weights + batch * 2 * c.stateBytesPerSeq + batch * context * c.kvBytesPerToken;
}

/**
 * Bytes the weight-streaming components of one decode step must move (the names of the cuda
 * engine's profile, engine.h StepProfile), for the achieved GB/s of the profile table: their bf16
 * weights (`weightBytes` each), the routed experts the batch touches, and the Mamba state and KV the
 * SSM and attention read (and, for the state, write). Components missing here move little.
 */
export function componentBytes(cfg: ModelConfig, batch: number, context: number, weightBytes = 2): Record<string, number> {
  const blocks = countBlocks(cfg.pattern);
  const c = modelCosts(cfg);
  const H = cfg.hiddenSize;
  const inner = cfg.mambaNumHeads * cfg.mambaHeadDim;
  const convDim = inner + 2 * cfg.nGroups * cfg.ssmStateSize;
  const qkv = (cfg.numAttentionHeads + 2 * cfg.numKeyValueHeads) * cfg.headDim;
  const din = cfg.moeLatentSize > 0 ? cfg.moeLatentSize : H;
  const w = (params: number) => params * weightBytes;
  const out: Record<string, number> = {
    "mamba.in_proj": w(blocks.M * H * (inner + convDim + cfg.mambaNumHeads)),
    "mamba.out_proj": w(blocks.M * inner * H),
    "mamba.ssm": batch * blocks.M * 2 * cfg.mambaNumHeads * cfg.mambaHeadDim * cfg.ssmStateSize * 4,
    "attn.qkv_proj": w(blocks["*"] * H * qkv),
    "attn.core": batch * context * c.kvBytesPerToken,
    "attn.o_proj": w(blocks["*"] * cfg.numAttentionHeads * cfg.headDim * H),
    "moe.router": w(blocks.E * H * cfg.nRoutedExperts),
    "moe.experts": w(blocks.E * distinctExperts(cfg, batch) * c.expertParams),
    "moe.shared_expert": w(blocks.E * 2 * H * cfg.moeSharedExpertIntermediateSize),
    "lm_head": w(cfg.vocabSize * H),
  };
  if (cfg.moeLatentSize > 0) out["moe.latent_proj"] = w(blocks.E * H * din);
  if (blocks["-"] > 0) out.mlp = w(blocks["-"] * 2 * H * cfg.intermediateSize);
  return out;
}
