/** `latentmesh generate`: print text as a checkpoint produces it, for humans (no NATS, no router). */
import { resolve } from "node:path";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { boolFlag, defineCommand, flag, parse } from "../../core/flags.js";
import { createLogger } from "../../core/log.js";
import { IncrementalDetokenizer } from "../../router/detokenizer.js";
import { TextCodec } from "../../router/tokenizer.js";
import { loadOneSequenceEngine } from "./one-sequence.js";

export const generateCommand = defineCommand({
  name: "generate",
  summary: "generate text from a checkpoint on this machine and print it as it is produced",
  flags: {
    model: flag(z.string().min(1), "checkpoint directory with tokenizer.json", { placeholder: "DIR" }),
    prompt: flag(z.string(), "prompt text", { placeholder: "TEXT", env: null }),
    chat: boolFlag("wrap the prompt as a user message with the checkpoint's chat template"),
    maxTokens: flag(parse.int({ min: 1, max: 1_000_000 }).default(64), "tokens to generate at most", { placeholder: "N", env: null }),
    temperature: flag(parse.number({ min: 0, max: 100 }).default(0), "sampling temperature (0 = greedy)", { placeholder: "T", env: null }),
    topK: flag(parse.int({ min: 0 }).default(0), "sample from the K most likely tokens (0 = all)", { placeholder: "K", env: null }),
    topP: flag(parse.number({ min: 0, max: 1 }).default(1), "nucleus sampling mass (1 = off)", { placeholder: "P", env: null }),
    seed: flag(parse.int({ min: 0 }).default(0), "sampling seed: the same seed gives the same text", { placeholder: "S", env: null }),
    backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
    loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights of its config", { placeholder: "FORMAT" }),
  },
  async run(f, ctx) {
    const log = createLogger({ name: "generate", level: f.logLevel, format: f.logFormat });
    const dir = resolve(f.model);
    const codec = TextCodec.load(dir);
    const text = f.chat ? codec.applyChatTemplate([{ role: "user", content: f.prompt }]) : f.prompt;
    const prompt = codec.encode(text, !f.chat);
    if (prompt.length === 0) throw invalid("the prompt encodes to no tokens", "prompt");
    const total = prompt.length + f.maxTokens;
    const { engine, blockTable } = await loadOneSequenceEngine({ modelDir: dir, loadFormat: f.loadFormat, backend: f.backend, totalTokens: total, log });
    try {
      const bad = prompt.find((t) => t >= engine.config.vocabSize);
      if (bad !== undefined) throw invalid(`the tokenizer produced id ${bad}, beyond the model's vocab_size ${engine.config.vocabSize}`, "model");
      const sampling = { temperature: f.temperature, topK: f.topK, topP: f.topP, seed: f.seed };
      const detok = new IncrementalDetokenizer((ids) => codec.decode(ids));
      const eos = new Set(engine.eosTokenIds);
      let tokens = Int32Array.from(prompt);
      let position = 0;
      let produced = 0;
      const started = Date.now();
      while (produced < f.maxTokens && !ctx.signal.aborted) {
        const r = await engine.step([{ slotId: 0, tokens, position, blockTable, sample: true, logits: "none", sampling }]);
        position += tokens.length;
        const next = r.tokens[0] ?? 0;
        produced++;
        if (eos.has(next)) break;
        process.stdout.write(detok.push([next]));
        tokens = Int32Array.of(next);
      }
      process.stdout.write(`${detok.flush()}\n`);
      const secs = (Date.now() - started) / 1000;
      log.info({ tokens: produced, seconds: Number(secs.toFixed(2)), tokensPerSecond: Number((produced / Math.max(secs, 1e-9)).toFixed(1)) }, "done");
    } finally {
      engine.close();
    }
  },
});
