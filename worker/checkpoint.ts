/**
 * Reads a checkpoint directory: config.json, generation_config.json, and safetensors (one file or
 * sharded through model.safetensors.index.json). Every tensor is checked against the shapes the
 * config implies before the native side reads a byte: a missing, unknown or mis-shaped tensor is an
 * `invalid_config` error naming the tensor, its file and the expected shape.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { LatentMeshError } from "../contracts/errors.js";
import { parseGenerationConfig, parseModelConfig, type ModelConfig } from "../contracts/model-config.js";
import type { NativeTensorRef } from "./native.js";

export type TensorDtype = NativeTensorRef["dtype"];
const ELEMENT_BYTES: Record<TensorDtype, number> = { F32: 4, BF16: 2, F16: 2 };

function bad(message: string, param?: string): never {
  throw new LatentMeshError("invalid_config", message, param);
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    bad(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    bad(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** Tensor names and shapes a config implies; `optional` ones may be absent. */
export interface ExpectedTensor {
  readonly shape: readonly number[];
  readonly optional?: boolean;
}

/** The checkpoint's tensors (canonical names) for a config: a pure function of the config. */
export function expectedTensors(cfg: ModelConfig): Map<string, ExpectedTensor> {
  const out = new Map<string, ExpectedTensor>();
  const H = cfg.hiddenSize;
  const add = (name: string, shape: number[], optional = false) => out.set(name, optional ? { shape, optional } : { shape });
  add("backbone.embeddings.weight", [cfg.vocabSize, H]);
  add("backbone.norm_f.weight", [H]);
  add("lm_head.weight", [cfg.vocabSize, H], cfg.tieWordEmbeddings);
  const mlp = (p: string, inter: number) => {
    add(`${p}up_proj.weight`, [inter, H]);
    add(`${p}down_proj.weight`, [H, inter]);
    if (cfg.mlpBias) {
      add(`${p}up_proj.bias`, [inter]);
      add(`${p}down_proj.bias`, [H]);
    }
  };
  const block = (kind: string, p: string) => {
    const m = `${p}mixer.`;
    add(`${p}norm.weight`, [H]);
    if (kind === "M") {
      const I = cfg.mambaNumHeads * cfg.mambaHeadDim;
      const convDim = I + 2 * cfg.nGroups * cfg.ssmStateSize;
      const proj = I + convDim + cfg.mambaNumHeads;
      add(`${m}in_proj.weight`, [proj, H]);
      add(`${m}conv1d.weight`, [convDim, 1, cfg.convKernel]);
      if (cfg.useConvBias) add(`${m}conv1d.bias`, [convDim]);
      add(`${m}dt_bias`, [cfg.mambaNumHeads]);
      add(`${m}A_log`, [cfg.mambaNumHeads]);
      add(`${m}D`, [cfg.mambaNumHeads]);
      add(`${m}norm.weight`, [I]);
      add(`${m}out_proj.weight`, [H, I]);
      if (cfg.mambaProjBias) {
        add(`${m}in_proj.bias`, [proj]);
        add(`${m}out_proj.bias`, [H]);
      }
    } else if (kind === "*") {
      const q = cfg.numAttentionHeads * cfg.headDim;
      const kv = cfg.numKeyValueHeads * cfg.headDim;
      add(`${m}q_proj.weight`, [q, H]);
      add(`${m}k_proj.weight`, [kv, H]);
      add(`${m}v_proj.weight`, [kv, H]);
      add(`${m}o_proj.weight`, [H, q]);
    } else if (kind === "-") {
      mlp(m, cfg.intermediateSize);
    } else {
      const din = cfg.moeLatentSize > 0 ? cfg.moeLatentSize : H;
      add(`${m}gate.weight`, [cfg.nRoutedExperts, H]);
      add(`${m}gate.e_score_correction_bias`, [cfg.nRoutedExperts]);
      for (let e = 0; e < cfg.nRoutedExperts; e++) {
        add(`${m}experts.${e}.up_proj.weight`, [cfg.moeIntermediateSize, din]);
        add(`${m}experts.${e}.down_proj.weight`, [din, cfg.moeIntermediateSize]);
      }
      mlp(`${m}shared_experts.`, cfg.moeSharedExpertIntermediateSize);
      if (cfg.moeLatentSize > 0) {
        add(`${m}fc1_latent_proj.weight`, [cfg.moeLatentSize, H]);
        add(`${m}fc2_latent_proj.weight`, [H, cfg.moeLatentSize]);
        if (cfg.mlpBias) {
          add(`${m}fc1_latent_proj.bias`, [cfg.moeLatentSize]);
          add(`${m}fc2_latent_proj.bias`, [H]);
        }
      }
    }
  };
  [...cfg.pattern].forEach((kind, i) => block(kind, `backbone.layers.${i}.`));
  return out;
}

/**
 * The MTP tensors of the released layout (kernels/dev/REFERENCE.md §10), for a config with
 * num_nextn_predict_layers 1: `mtp.layers.{j}` per character of the MTP pattern, each a block
 * like the main model's (`norm.weight`, `mixer.*`); the first also has `enorm`, `hnorm` and
 * `eh_proj` [H, 2H], the last `final_layernorm`. Embeddings and lm_head are the main model's.
 * Empty without MTP layers.
 */
export function expectedMtpTensors(cfg: ModelConfig): Map<string, ExpectedTensor> {
  if (cfg.numNextnPredictLayers === 0 || cfg.mtpPattern === "") return new Map();
  const all = expectedTensors({ ...cfg, pattern: cfg.mtpPattern });
  const out = new Map<string, ExpectedTensor>();
  const H = cfg.hiddenSize;
  out.set("mtp.layers.0.enorm.weight", { shape: [H] });
  out.set("mtp.layers.0.hnorm.weight", { shape: [H] });
  out.set("mtp.layers.0.eh_proj.weight", { shape: [H, 2 * H] });
  for (const [name, t] of all) if (name.startsWith("backbone.layers.")) out.set(name.replace(/^backbone\.layers\./, "mtp.layers."), t);
  out.set(`mtp.layers.${cfg.mtpPattern.length - 1}.final_layernorm.weight`, { shape: [H] });
  return out;
}

/** One tensor entry of a safetensors header, with absolute byte offsets. */
export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly offset: number;
  readonly nbytes: number;
}

/** Parses the header of one .safetensors file (8-byte little-endian length, then JSON). */
export function readSafetensorsHeader(file: string): SafetensorsEntry[] {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    bad(`cannot open ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const size = fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (size < 8 || readSync(fd, lenBuf, 0, 8, 0) !== 8) bad(`${file}: not a safetensors file (shorter than its 8-byte header length)`);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 0 || headerLen > 100 * 1024 * 1024 || 8 + headerLen > size) bad(`${file}: not a safetensors file (header length ${headerLen} does not fit the file)`);
    const hdr = Buffer.alloc(headerLen);
    readSync(fd, hdr, 0, headerLen, 8);
    let json: unknown;
    try {
      json = JSON.parse(hdr.toString("utf8"));
    } catch {
      bad(`${file}: safetensors header is not valid JSON`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) bad(`${file}: safetensors header is not a JSON object`);
    const dataStart = 8 + headerLen;
    const entries: SafetensorsEntry[] = [];
    for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
      if (name === "__metadata__") continue;
      const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const shape = t.shape;
      const offs = t.data_offsets;
      if (typeof t.dtype !== "string" || !Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0) || !Array.isArray(offs) || offs.length !== 2) {
        bad(`${file}: tensor ${name}: malformed header entry`, name);
      }
      const [b, e] = offs as [number, number];
      if (!(Number.isInteger(b) && Number.isInteger(e) && b >= 0 && e >= b && dataStart + e <= size)) bad(`${file}: tensor ${name}: data offsets [${b}, ${e}] lie outside the file`, name);
      entries.push({ name, dtype: t.dtype, shape: shape as number[], offset: dataStart + b, nbytes: e - b });
    }
    return entries;
  } finally {
    closeSync(fd);
  }
}

/** The safetensors files of a checkpoint directory, sharded or not. */
export function checkpointFiles(dir: string): string[] {
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index)) {
    const json = readJson(index) as { weight_map?: unknown };
    if (!json || typeof json.weight_map !== "object" || json.weight_map === null) bad(`${index}: weight_map missing`);
    const files = [...new Set(Object.values(json.weight_map as Record<string, unknown>))];
    if (!files.every((f): f is string => typeof f === "string" && !f.includes("/") && !f.includes(".."))) bad(`${index}: weight_map must map tensor names to file names in the same directory`);
    for (const f of files) if (!existsSync(join(dir, f))) bad(`${index}: shard ${f} is missing`);
    return files.map((f) => join(dir, f));
  }
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return [single];
  bad(`${dir}: no model.safetensors or model.safetensors.index.json`);
}

const EXPERT_STACKED = /^(backbone\.layers\.\d+\.mixer\.experts)\.(up_proj|down_proj)(\.weight)?$/;

/** Canonical names: `model.` → `backbone.`, `embedding.` → `embeddings.`; stacked experts split. */
function canonical(entry: SafetensorsEntry, file: string): NativeTensorRef[] {
  let name = entry.name.replace(/^model\./, "backbone.").replace(/^backbone\.embedding\.weight$/, "backbone.embeddings.weight");
  const dtype = entry.dtype as TensorDtype;
  if (!(dtype in ELEMENT_BYTES)) bad(`${file}: tensor ${entry.name} has dtype ${entry.dtype}; supported: F32, BF16, F16`, entry.name);
  const numel = entry.shape.reduce((a, b) => a * b, 1);
  if (numel * ELEMENT_BYTES[dtype] !== entry.nbytes) bad(`${file}: tensor ${entry.name}: ${entry.nbytes} bytes for shape [${entry.shape.join(", ")}] of ${dtype}`, entry.name);
  const stacked = EXPERT_STACKED.exec(name);
  if (stacked && entry.shape.length === 3) {
    const [E, rows, cols] = entry.shape as [number, number, number];
    const per = rows * cols * ELEMENT_BYTES[dtype];
    return Array.from({ length: E }, (_, e) => ({ name: `${stacked[1]}.${e}.${stacked[2]}.weight`, file, offset: entry.offset + e * per, nbytes: per, dtype, shape: [rows, cols] }));
  }
  name = name.replace(/^backbone\.layers\.(\d+)\.mixer\.experts\.(\d+)\.(up_proj|down_proj)$/, "backbone.layers.$1.mixer.experts.$2.$3.weight");
  return [{ name, file, offset: entry.offset, nbytes: entry.nbytes, dtype, shape: [...entry.shape] }];
}

/** What worker/engine.ts needs from a checkpoint directory. */
export interface Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  /** eos ids: generation_config.json's, else config.json's. */
  readonly eosTokenIds: readonly number[];
  /** Every tensor the model needs, validated; MTP tensors (`mtp.*`) included when present. */
  readonly tensors: NativeTensorRef[];
}

/** Reads config.json and (when present) generation_config.json. */
export function readConfigs(dir: string): { config: ModelConfig; eosTokenIds: readonly number[] } {
  if (!existsSync(dir)) bad(`model directory ${dir} does not exist`);
  const configPath = join(dir, "config.json");
  const config = parseModelConfig(readJson(configPath), configPath);
  const genPath = join(dir, "generation_config.json");
  const gen = existsSync(genPath) ? parseGenerationConfig(readJson(genPath), genPath) : { eosTokenIds: null };
  return { config, eosTokenIds: gen.eosTokenIds ?? config.eosTokenIds };
}

/** Reads and validates a whole checkpoint directory (headers only; no tensor data is read). */
export function readCheckpoint(dir: string): Checkpoint {
  const { config, eosTokenIds } = readConfigs(dir);
  const expected = expectedTensors(config);
  const found = new Map<string, NativeTensorRef>();
  for (const file of checkpointFiles(dir)) {
    for (const entry of readSafetensorsHeader(file)) {
      for (const ref of canonical(entry, file)) {
        if (found.has(ref.name)) bad(`tensor ${ref.name} appears twice (in ${found.get(ref.name)?.file} and ${file})`, ref.name);
        found.set(ref.name, ref);
      }
    }
  }
  for (const [name, ref] of found) {
    if (name.startsWith("mtp.")) continue;
    const want = expected.get(name);
    if (!want) bad(`${ref.file}: unexpected tensor ${name} (shape [${ref.shape.join(", ")}]): not part of this config's model`, name);
    if (want.shape.length !== ref.shape.length || want.shape.some((d, i) => d !== ref.shape[i])) {
      bad(`${ref.file}: tensor ${name} has shape [${ref.shape.join(", ")}], expected [${want.shape.join(", ")}]`, name);
    }
  }
  for (const [name, want] of expected) {
    if (!want.optional && !found.has(name)) bad(`${dir}: missing tensor ${name} (expected shape [${want.shape.join(", ")}])`, name);
  }
  return { dir, config, eosTokenIds, tensors: [...found.values()] };
}
