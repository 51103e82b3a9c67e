/** An engine sized for one sequence of up to `totalTokens` tokens, for the CLI's local tools. */
import type { Logger } from "../../core/log.js";
import { Engine, type EngineGroupOptions } from "../../worker/engine.js";

const KV_BLOCK = 16;

export interface OneSequenceEngine {
  readonly engine: Engine;
  /** KV blocks covering every position the sequence may reach. */
  readonly blockTable: Int32Array;
}

export async function loadOneSequenceEngine(opts: {
  modelDir: string;
  loadFormat: "auto" | "dummy";
  backend: "cpu" | "cuda";
  totalTokens: number;
  log: Logger;
  /** Expert-parallel group membership (absent: one process). */
  group?: EngineGroupOptions | undefined;
  /** Load the MTP layers (speculative decoding); an error when the checkpoint cannot. */
  mtp?: boolean;
}): Promise<OneSequenceEngine> {
  const blocks = Math.ceil(opts.totalTokens / KV_BLOCK) + 1;
  const engine = await Engine.load({
    modelDir: opts.modelDir,
    loadFormat: opts.loadFormat,
    backend: opts.backend,
    maxSlots: 1,
    kvBlockSize: KV_BLOCK,
    numKvBlocks: blocks,
    onProgress: (line) => opts.log.info(line),
    ...(opts.group ? { group: opts.group } : {}),
    ...(opts.mtp ? { mtp: true } : {}),
  });
  return { engine, blockTable: Int32Array.from({ length: blocks }, (_, i) => i) };
}
