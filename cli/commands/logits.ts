/**
 * `latentmesh logits`: the parity tool (its interface is fixed; other checks call it).
 * Writes OUTDIR/prefill_logits.f32 (T×V float32 LE: the logits at every prompt position),
 * OUTDIR/decode_logits.f32 (N×V: the logits after each fed or greedily generated token, computed
 * through the incremental state path, never by re-running the prompt) and OUTDIR/result.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { defineCommand, flag, parse } from "../../core/flags.js";
import { createLogger } from "../../core/log.js";
import { loadOneSequenceEngine } from "./one-sequence.js";

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

function toBytes(rows: Float32Array[]): Buffer {
  const out = Buffer.alloc(rows.reduce((a, r) => a + r.byteLength, 0));
  let off = 0;
  for (const r of rows) {
    Buffer.from(r.buffer, r.byteOffset, r.byteLength).copy(out, off);
    off += r.byteLength;
  }
  return out;
}

export const logitsCommand = defineCommand({
  name: "logits",
  summary: "parity tool: write a checkpoint's prefill and decode logits as float32 files",
  details: `Outputs: OUTDIR/prefill_logits.f32 (T x V), OUTDIR/decode_logits.f32 (N x V), OUTDIR/result.json.
Example: latentmesh logits --model DIR --prompt-ids 5,17,300 --feed 12,45,9 --out /tmp/out`,
  flags: {
    model: flag(z.string().min(1), "checkpoint directory", { placeholder: "DIR", env: null }),
    promptIds: flag(parse.intList({ min: 0 }), "prompt token ids, e.g. 5,17,300", { placeholder: "IDS", env: null }),
    feed: flag(parse.intList({ min: 0 }).optional(), "tokens fed one at a time after the prompt", { placeholder: "IDS", env: null }),
    decode: flag(parse.int({ min: 0, max: 100000 }).optional(), "greedily generate N tokens after the prompt", { placeholder: "N", env: null }),
    out: flag(z.string().min(1), "output directory", { placeholder: "DIR", env: null }),
    backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
    loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights of its config", { placeholder: "FORMAT" }),
  },
  async run(f) {
    if (f.feed && f.decode !== undefined) throw invalid("give --feed or --decode, not both", "feed");
    const log = createLogger({ name: "logits", level: f.logLevel, format: f.logFormat });
    const prompt = f.promptIds;
    const steps = f.feed?.length ?? f.decode ?? 0;
    const total = prompt.length + steps;
    const { engine, blockTable } = await loadOneSequenceEngine({ modelDir: resolve(f.model), loadFormat: f.loadFormat, backend: f.backend, totalTokens: total, log });
    try {
      const V = engine.config.vocabSize;
      const bad = [...prompt, ...(f.feed ?? [])].find((t) => t >= V);
      if (bad !== undefined) throw invalid(`token id ${bad} is out of range for vocab_size ${V}`, "prompt-ids");
      const prefill = await engine.step([
        { slotId: 0, tokens: Int32Array.from(prompt), position: 0, blockTable, sample: true, logits: "all", sampling: GREEDY },
      ]);
      const decodeRows: Float32Array[] = [];
      const fed: number[] = [];
      let next = prefill.tokens[0] ?? 0;
      for (let i = 0; i < steps; i++) {
        const tok = f.feed ? (f.feed[i] as number) : next;
        fed.push(tok);
        const r = await engine.step([
          { slotId: 0, tokens: Int32Array.of(tok), position: prompt.length + i, blockTable, sample: true, logits: "last", sampling: GREEDY },
        ]);
        decodeRows.push(r.logits);
        next = r.tokens[0] ?? 0;
      }
      const outDir = resolve(f.out);
      mkdirSync(outDir, { recursive: true });
      writeFileSync(join(outDir, "prefill_logits.f32"), toBytes([prefill.logits]));
      writeFileSync(join(outDir, "decode_logits.f32"), toBytes(decodeRows));
      const result = {
        model: resolve(f.model),
        backend: f.backend,
        vocab_size: V,
        prompt_ids: prompt,
        [f.feed ? "fed_ids" : "generated_ids"]: fed,
        prefill_shape: [prompt.length, V],
        decode_shape: [steps, V],
        dtype: "float32",
        byte_order: "little",
      };
      writeFileSync(join(outDir, "result.json"), JSON.stringify(result, null, 2) + "\n");
      log.info({ out: outDir, prefillRows: prompt.length, decodeRows: steps }, "wrote logits");
    } finally {
      engine.close();
    }
  },
});
