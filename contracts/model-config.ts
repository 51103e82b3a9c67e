/**
 * config.json of NemotronH / Nemotron 3 checkpoints, in every spelling found in the wild, parsed into
 * one normalised ModelConfig. Defaults are transformers' (kernels/dev/REFERENCE.md §1): a released
 * checkpoint sets nearly every key, a hand-written tiny config may omit most of them.
 *
 * Layer layout: `layers_block_type` / `layer_types` lists (transformers 5: linear_attention,
 * full_attention, moe, mlp; older: mamba, attention) or the released `hybrid_override_pattern`
 * string (M = Mamba-2, E = MoE, * = attention, - = MLP). The normalised form is the pattern string.
 */
import { z } from "zod";
import { LatentMeshError } from "./errors.js";

/** One letter per block, as in `hybrid_override_pattern`. */
export type BlockLetter = "M" | "E" | "*" | "-";

/** Largest finite float32: "no upper dt clamp". */
export const FLOAT32_MAX = 3.4028234663852886e38;

const BLOCK_NAMES: Record<string, BlockLetter> = {
  linear_attention: "M",
  mamba: "M",
  full_attention: "*",
  attention: "*",
  moe: "E",
  mlp: "-",
};

const blockList = z.array(z.string().refine((s) => s in BLOCK_NAMES, { error: (i) => `unknown block type ${JSON.stringify(i.input)} (expected one of ${Object.keys(BLOCK_NAMES).join(", ")})` }));
const patternString = z.string().regex(/^[ME*-]*$/, "may contain only M (Mamba-2), E (MoE), * (attention) and - (MLP)");
const positiveInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const tokenIds = z.union([nonNegInt, z.array(nonNegInt)]);
/** A float as transformers 5 writes non-finite values: `{"__float__": "Infinity"}` (or a plain number). */
const jsonFloat = z.union([
  z.number(),
  z.object({ __float__: z.enum(["Infinity", "-Infinity", "inf", "-inf"]) }).transform((v) => (v.__float__.startsWith("-") ? -Infinity : Infinity)),
]);
const dtLimit = z.tuple([jsonFloat, jsonFloat.nullable()]);

/** The raw file, as far as LatentMesh reads it; unknown keys are allowed and ignored. */
export const RawModelConfig = z.looseObject({
  model_type: z.string().optional(),
  vocab_size: positiveInt.default(131072),
  hidden_size: positiveInt.default(4096),
  layers_block_type: blockList.optional(),
  layer_types: blockList.optional(),
  hybrid_override_pattern: patternString.optional(),
  mtp_layers_block_type: blockList.optional(),
  mtp_hybrid_override_pattern: patternString.optional(),
  num_nextn_predict_layers: nonNegInt.default(0),
  num_hidden_layers: positiveInt.optional(),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  tie_word_embeddings: z.boolean().default(false),
  max_position_embeddings: positiveInt.default(262144),
  bos_token_id: nonNegInt.nullish(),
  eos_token_id: tokenIds.nullish(),
  pad_token_id: nonNegInt.nullish(),
  // Mamba-2
  mamba_num_heads: positiveInt.default(128),
  mamba_head_dim: positiveInt.default(64),
  ssm_state_size: positiveInt.default(128),
  n_groups: positiveInt.optional(),
  mamba_n_groups: positiveInt.optional(),
  conv_kernel: positiveInt.optional(),
  mamba_d_conv: positiveInt.optional(),
  chunk_size: positiveInt.optional(),
  mamba_chunk_size: positiveInt.optional(),
  use_conv_bias: z.boolean().optional(),
  mamba_conv_bias: z.boolean().optional(),
  use_bias: z.boolean().default(false),
  time_step_limit: dtLimit.nullish(),
  mamba_dt_limit: dtLimit.nullish(),
  mamba_hidden_act: z.literal("silu").default("silu"),
  // attention
  num_attention_heads: positiveInt.default(32),
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  // MLP / MoE
  mlp_hidden_act: z.literal("relu2").default("relu2"),
  intermediate_size: positiveInt.default(21504),
  mlp_bias: z.boolean().default(false),
  n_routed_experts: positiveInt.optional(),
  num_local_experts: positiveInt.optional(),
  num_experts_per_tok: positiveInt.default(2),
  moe_intermediate_size: positiveInt.default(7688),
  moe_shared_expert_intermediate_size: positiveInt.default(7688),
  moe_latent_size: positiveInt.nullish(),
  n_group: positiveInt.default(1),
  topk_group: positiveInt.default(1),
  norm_topk_prob: z.boolean().default(true),
  routed_scaling_factor: z.number().positive().default(1),
});
export type RawModelConfig = z.infer<typeof RawModelConfig>;

/** The normalised model description every component uses. Field names match the native spec. */
export interface ModelConfig {
  readonly modelType: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  /** One letter per layer: M, E, *, -. */
  readonly pattern: string;
  /** MTP block layout (e.g. "*E"); empty without MTP. */
  readonly mtpPattern: string;
  readonly numNextnPredictLayers: number;
  readonly normEps: number;
  readonly tieWordEmbeddings: boolean;
  readonly maxPositionEmbeddings: number;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  readonly mambaNumHeads: number;
  readonly mambaHeadDim: number;
  readonly ssmStateSize: number;
  readonly nGroups: number;
  readonly convKernel: number;
  readonly chunkSize: number;
  /** dt clamp from time_step_limit (the kernels' semantics): default (0, +inf), i.e. none. */
  readonly timeStepMin: number;
  readonly timeStepMax: number;
  readonly useConvBias: boolean;
  /** Bias on Mamba in_proj/out_proj (config `use_bias`). */
  readonly mambaProjBias: boolean;
  readonly numAttentionHeads: number;
  readonly numKeyValueHeads: number;
  readonly headDim: number;
  /** Always false: transformers builds q/k/v/o without bias whatever the config says. */
  readonly attentionBias: boolean;
  readonly intermediateSize: number;
  readonly moeIntermediateSize: number;
  readonly moeSharedExpertIntermediateSize: number;
  readonly nRoutedExperts: number;
  readonly numExpertsPerTok: number;
  readonly nGroup: number;
  readonly topkGroup: number;
  readonly normTopkProb: boolean;
  readonly routedScalingFactor: number;
  /** 0 without LatentMoE. */
  readonly moeLatentSize: number;
  readonly mlpBias: boolean;
}

function letters(list: readonly string[]): string {
  return list.map((n) => BLOCK_NAMES[n] ?? "?").join("");
}

function fail(file: string, field: string, message: string): never {
  throw new LatentMeshError("invalid_config", `${file}: ${field}: ${message}`, field);
}

/**
 * Parses config.json's JSON value. `file` names the file in every error: `<file>: <field>: <why>`.
 */
export function parseModelConfig(json: unknown, file = "config.json"): ModelConfig {
  const r = RawModelConfig.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    fail(file, issue && issue.path.length ? issue.path.map(String).join(".") : "(root)", issue?.message ?? "invalid");
  }
  const c = r.data;
  const list = c.layers_block_type ?? c.layer_types;
  const pattern = list ? letters(list) : c.hybrid_override_pattern;
  if (pattern === undefined) fail(file, "layers_block_type", "missing: give layers_block_type (list) or hybrid_override_pattern (string)");
  if (pattern.length === 0) fail(file, "layers_block_type", "the model has no layers");
  const mtpPattern = c.mtp_layers_block_type ? letters(c.mtp_layers_block_type) : (c.mtp_hybrid_override_pattern ?? "");
  const has = (l: BlockLetter) => pattern.includes(l) || mtpPattern.includes(l);

  const limit = c.time_step_limit ?? c.mamba_dt_limit;
  const cfg: ModelConfig = {
    modelType: c.model_type ?? "nemotron_h",
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    pattern,
    mtpPattern,
    numNextnPredictLayers: c.num_nextn_predict_layers,
    normEps: c.layer_norm_epsilon,
    tieWordEmbeddings: c.tie_word_embeddings,
    maxPositionEmbeddings: c.max_position_embeddings,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: c.eos_token_id === undefined || c.eos_token_id === null ? [] : Array.isArray(c.eos_token_id) ? c.eos_token_id : [c.eos_token_id],
    mambaNumHeads: c.mamba_num_heads,
    mambaHeadDim: c.mamba_head_dim,
    ssmStateSize: c.ssm_state_size,
    nGroups: c.n_groups ?? c.mamba_n_groups ?? 8,
    convKernel: c.conv_kernel ?? c.mamba_d_conv ?? 4,
    chunkSize: c.chunk_size ?? c.mamba_chunk_size ?? 128,
    timeStepMin: limit ? Math.max(limit[0], 0) : 0,
    timeStepMax: limit && limit[1] !== null ? Math.min(limit[1], FLOAT32_MAX) : FLOAT32_MAX,
    useConvBias: c.use_conv_bias ?? c.mamba_conv_bias ?? true,
    mambaProjBias: c.use_bias,
    numAttentionHeads: c.num_attention_heads,
    numKeyValueHeads: c.num_key_value_heads ?? c.num_attention_heads,
    headDim: c.head_dim ?? 128,
    attentionBias: false,
    intermediateSize: c.intermediate_size,
    moeIntermediateSize: c.moe_intermediate_size,
    moeSharedExpertIntermediateSize: c.moe_shared_expert_intermediate_size,
    nRoutedExperts: c.n_routed_experts ?? c.num_local_experts ?? 8,
    numExpertsPerTok: c.num_experts_per_tok,
    nGroup: c.n_group,
    topkGroup: c.topk_group,
    normTopkProb: c.norm_topk_prob,
    routedScalingFactor: c.routed_scaling_factor,
    moeLatentSize: c.moe_latent_size ?? 0,
    mlpBias: c.mlp_bias,
  };

  if (has("M")) {
    if (cfg.mambaNumHeads % cfg.nGroups !== 0) fail(file, "n_groups", `mamba_num_heads (${cfg.mambaNumHeads}) must be divisible by n_groups (${cfg.nGroups})`);
    if (cfg.timeStepMin > cfg.timeStepMax) fail(file, "time_step_limit", "lower bound exceeds upper bound");
  }
  if (has("*") && cfg.numAttentionHeads % cfg.numKeyValueHeads !== 0) {
    fail(file, "num_key_value_heads", `num_attention_heads (${cfg.numAttentionHeads}) must be divisible by num_key_value_heads (${cfg.numKeyValueHeads})`);
  }
  if (has("E")) {
    if (cfg.numExpertsPerTok > cfg.nRoutedExperts) fail(file, "num_experts_per_tok", `${cfg.numExpertsPerTok} exceeds n_routed_experts (${cfg.nRoutedExperts})`);
    if (cfg.nRoutedExperts % cfg.nGroup !== 0) fail(file, "n_group", `n_routed_experts (${cfg.nRoutedExperts}) must be divisible by n_group (${cfg.nGroup})`);
    if (cfg.topkGroup > cfg.nGroup) fail(file, "topk_group", `${cfg.topkGroup} exceeds n_group (${cfg.nGroup})`);
    if (cfg.nGroup > 1 && cfg.nRoutedExperts / cfg.nGroup < 2) fail(file, "n_group", "each expert group needs at least 2 experts (groups are scored by their top-2 sum)");
    if (cfg.numExpertsPerTok > (cfg.nRoutedExperts / cfg.nGroup) * cfg.topkGroup) fail(file, "num_experts_per_tok", "exceeds the experts in the kept groups (topk_group × experts per group)");
  }
  return cfg;
}

/** generation_config.json: only what serving needs. */
export const RawGenerationConfig = z.looseObject({
  eos_token_id: tokenIds.nullish(),
  bos_token_id: nonNegInt.nullish(),
  pad_token_id: nonNegInt.nullish(),
});

/** eos ids from generation_config.json (a number or a list like [2, 11]). */
export function parseGenerationConfig(json: unknown, file = "generation_config.json"): { eosTokenIds: number[] | null } {
  const r = RawGenerationConfig.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    fail(file, issue && issue.path.length ? issue.path.map(String).join(".") : "(root)", issue?.message ?? "invalid");
  }
  const e = r.data.eos_token_id;
  return { eosTokenIds: e === undefined || e === null ? null : Array.isArray(e) ? e : [e] };
}

/** Which block kinds a layout string contains, counted. */
export function countBlocks(pattern: string): Record<BlockLetter, number> {
  const out: Record<BlockLetter, number> = { M: 0, E: 0, "*": 0, "-": 0 };
  for (const ch of pattern) out[ch as BlockLetter] += 1;
  return out;
}
