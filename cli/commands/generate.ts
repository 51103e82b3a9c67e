/**
 * `latentmesh generate`: print text as a checkpoint produces it, for humans (no NATS, no router).
 * `--ranks N` runs it through an N-rank expert-parallel group of CPU processes (the other ranks
 * hold the rest of the experts and step empty batches).
 */
import { resolve } from "node:path";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { boolFlag, defineCommand, flag, parse } from "../../core/flags.js";
import { createLogger } from "../../core/log.js";
import { IncrementalDetokenizer } from "../../router/detokenizer.js";
import { TextCodec } from "../../router/tokenizer.js";
import { freePort } from "../../core/net.js";
import { CLI_GROUP_FLAGS, groupOf, LocalRanks, LockstepStepper } from "./group.js";
import { loadOneSequenceEngine } from "./one-sequence.js";
import { OneSequenceDecoder, SPECULATIVE_TOKENS, speculationHeadroom } from "./speculate.js";

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
    speculativeTokens: flag(SPECULATIVE_TOKENS, "MTP drafts verified per step: K (0 = off) or auto (adaptive)", { placeholder: "K|auto", env: null }),
    ...CLI_GROUP_FLAGS,
  },
  async run(f, ctx) {
    const log = createLogger({ name: "generate", level: f.logLevel, format: f.logFormat });
    const dir = resolve(f.model);
    const codec = TextCodec.load(dir);
    const text = f.chat ? codec.applyChatTemplate([{ role: "user", content: f.prompt }]) : f.prompt;
    const prompt = codec.encode(text, !f.chat);
    if (prompt.length === 0) throw invalid("the prompt encodes to no tokens", "prompt");
    const spec = f.speculativeTokens;
    const speculating = spec.mode === "auto" || spec.k > 0;
    const total = prompt.length + f.maxTokens + (speculating ? speculationHeadroom(spec) : 0);
    if (f.rank !== undefined) throw invalid("generate runs rank 0 of its group; use --ranks N", "rank");
    if (f.ranks > 1 && f.backend !== "cpu") throw invalid("--ranks runs CPU processes on loopback; expert parallelism on cuda is not implemented yet", "backend");
    let local: LocalRanks | undefined;
    let leader: string | undefined;
    if (f.ranks > 1) {
      leader = `127.0.0.1:${await freePort()}`;
      local = new LocalRanks(f.ranks, (r) => [
        "logits", "--log-level", f.logLevel, "--log-format", f.logFormat, "--model", dir, "--load-format", f.loadFormat,
        "--rank", String(r), "--world-size", String(f.ranks), "--leader-address", leader as string, "--collective-timeout-ms", String(f.collectiveTimeoutMs),
        ...(f.shardPlan ? ["--shard-plan", resolve(f.shardPlan)] : []),
      ]);
    }
    const group = groupOf(f, leader);
    const loading = loadOneSequenceEngine({ modelDir: dir, loadFormat: f.loadFormat, backend: f.backend, totalTokens: total, log, group, mtp: speculating });
    let loaded: Awaited<typeof loading>;
    try {
      loaded = await (local ? Promise.race([loading, local.failed]) : loading);
    } catch (e) {
      local?.kill();
      throw e;
    }
    const { engine, blockTable } = loaded;
    const lockstep = new LockstepStepper(engine, group !== undefined);
    try {
      const bad = prompt.find((t) => t >= engine.config.vocabSize);
      if (bad !== undefined) throw invalid(`the tokenizer produced id ${bad}, beyond the model's vocab_size ${engine.config.vocabSize}`, "model");
      const sampling = { temperature: f.temperature, topK: f.topK, topP: f.topP, seed: f.seed };
      const detok = new IncrementalDetokenizer((ids) => codec.decode(ids));
      const eos = new Set(engine.eosTokenIds);
      const decoder = new OneSequenceDecoder(lockstep, blockTable, sampling, engine.config.vocabSize, spec);
      let produced = 0;
      let ended = false;
      const emit = (tokens: readonly number[]): void => {
        for (const t of tokens) {
          if (ended || produced >= f.maxTokens) return;
          produced++;
          if (eos.has(t)) {
            ended = true;
            return;
          }
          process.stdout.write(detok.push([t]));
        }
      };
      const started = Date.now();
      emit([(await decoder.prefill(prompt, "none")).token]);
      while (!ended && produced < f.maxTokens && !ctx.signal.aborted) emit((await decoder.next(false)).emitted);
      process.stdout.write(`${detok.flush()}\n`);
      await lockstep.finish();
      await local?.wait();
      const secs = (Date.now() - started) / 1000;
      const acc = decoder.policy.acceptance;
      log.info(
        {
          tokens: produced,
          seconds: Number(secs.toFixed(2)),
          tokensPerSecond: Number((produced / Math.max(secs, 1e-9)).toFixed(1)),
          decodeSteps: decoder.steps,
          tokensPerStep: Number(decoder.tokensPerStep.toFixed(3)),
          ...(speculating ? { draftTokens: acc.numDraftTokens, acceptedTokens: acc.numAcceptedTokens, acceptanceLength: Number(acc.acceptanceLength.toFixed(3)) } : {}),
        },
        "done",
      );
    } catch (e) {
      local?.kill();
      throw e;
    } finally {
      engine.close();
    }
  },
});
