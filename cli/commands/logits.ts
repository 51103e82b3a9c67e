/**
 * `latentmesh logits`: the parity tool (its interface is fixed; other checks call it).
 *  Writes OUTDIR/prefill_logits.f32 (T×V float32 LE: the logits at every prompt position),
 * OUTDIR/decode_logits.f32 (N×V: the logits after each fed or greedily generated token, computed
 * through the incremental state path, never by re-running the prompt) and OUTDIR/result.json.
 * With `--ranks N` the same tool runs through an N-rank expert-parallel group of CPU processes
 * (cli/commands/group.ts); rank 0 holds the sequence, the other ranks step their own (optional)
 * prompts from `--peer-prompt-ids`, writing OUTDIR/rank-<r>/, or empty batches.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "../../core/log.js";
import type { EngineGroupOptions } from "../../worker/engine.js";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { defineCommand, flag, parse } from "../../core/flags.js";
import { createLogger } from "../../core/log.js";
import { freePort } from "../../core/net.js";
import { CLI_GROUP_FLAGS, groupOf, LocalRanks, LockstepStepper } from "./group.js";
import { loadOneSequenceEngine } from "./one-sequence.js";
import { OneSequenceDecoder, SPECULATIVE_TOKENS, speculationHeadroom } from "./speculate.js";
import type { SpeculativeTokens } from "../../worker/speculation.js";

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

/** What one rank computes: its prompt, then fed or greedily decoded tokens. */
interface RankWork {
  readonly model: string;
  readonly loadFormat: "auto" | "dummy";
  readonly backend: "cpu" | "cuda";
  /** Absent: a rank with no sequence (it steps empty batches until the group is idle). */
  readonly prompt: readonly number[] | undefined;
  readonly feed: readonly number[] | undefined;
  readonly decode: number | undefined;
  readonly out: string | undefined;
  readonly group: EngineGroupOptions | undefined;
  readonly speculative: SpeculativeTokens;
}

const PEER_PROMPTS = z
  .string()
  .regex(/^(\s*(\d+(\s*,\s*\d+)*)?\s*)(;\s*(\d+(\s*,\s*\d+)*)?\s*)*$/, "expected prompts separated by ';' (an empty one: a rank with no sequence), e.g. '5,6,7;;9,10'")
  .transform((s) => s.split(";").map((p) => (p.trim() === "" ? null : p.split(",").map((x) => Number(x.trim())))));

export const logitsCommand = defineCommand({
  name: "logits",
  summary: "parity tool: write a checkpoint's prefill and decode logits as float32 files",
  details: `Outputs: OUTDIR/prefill_logits.f32 (T x V), OUTDIR/decode_logits.f32 (N x V), OUTDIR/result.json.
Example: latentmesh logits --model DIR --prompt-ids 5,17,300 --feed 12,45,9 --out /tmp/out
Expert parallel: latentmesh logits --ranks 4 --peer-prompt-ids '3,4;;8,9,10' --model DIR --prompt-ids 5,17 --decode 4 --out /tmp/out
(rank 0 runs --prompt-ids; rank r runs the r-th peer prompt with --peer-decode greedy steps into OUTDIR/rank-r, or nothing)`,
  flags: {
    model: flag(z.string().min(1), "checkpoint directory", { placeholder: "DIR", env: null }),
    promptIds: flag(parse.intList({ min: 0 }).optional(), "prompt token ids, e.g. 5,17,300 (optional only for ranks > 0 of a group)", { placeholder: "IDS", env: null }),
    feed: flag(parse.intList({ min: 0 }).optional(), "tokens fed one at a time after the prompt", { placeholder: "IDS", env: null }),
    decode: flag(parse.int({ min: 0, max: 100000 }).optional(), "greedily generate N tokens after the prompt", { placeholder: "N", env: null }),
    out: flag(z.string().min(1).optional(), "output directory (required with a prompt)", { placeholder: "DIR", env: null }),
    backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
    loadFormat: flag(z.enum(["auto", "dummy"]).default("auto"), "auto: read the checkpoint; dummy: random weights of its config", { placeholder: "FORMAT" }),
    ...CLI_GROUP_FLAGS,
    peerPromptIds: flag(PEER_PROMPTS.optional(), "with --ranks: prompts of ranks 1.. separated by ';' (empty: no sequence)", { placeholder: "IDS;IDS", env: null }),
    peerDecode: flag(parse.int({ min: 0, max: 100000 }).default(3), "with --peer-prompt-ids: greedy steps of each peer after its prompt", { placeholder: "N", env: null }),
    speculativeTokens: flag(SPECULATIVE_TOKENS, "with --decode: MTP drafts verified per step, K (0 = off) or auto; the logits are the same, result.json reports tokens per step", { placeholder: "K|auto", env: null }),
  },
  async run(f) {
    if (f.feed && f.decode !== undefined) throw invalid("give --feed or --decode, not both", "feed");
    const speculating = f.speculativeTokens.mode === "auto" || f.speculativeTokens.k > 0;
    if (speculating && f.feed) throw invalid("--speculative-tokens applies to --decode (fed tokens are not drafted)", "speculative-tokens");
    const log = createLogger({ name: "logits", level: f.logLevel, format: f.logFormat });
    const member = f.rank !== undefined;
    if (!f.promptIds && !(member && (f.rank ?? 0) > 0)) throw invalid("--prompt-ids is required", "prompt-ids");
    if (f.promptIds && !f.out) throw invalid("--out is required", "out");
    const peers = f.peerPromptIds ?? [];
    if (peers.length > 0 && f.ranks === 1) throw invalid("--peer-prompt-ids needs --ranks N", "peer-prompt-ids");
    if (peers.length > f.ranks - 1 && f.ranks > 1) throw invalid(`--peer-prompt-ids lists ${peers.length} prompts for ${f.ranks - 1} other ranks`, "peer-prompt-ids");
    if (f.ranks > 1 && f.backend !== "cpu") throw invalid("--ranks runs CPU processes on loopback; expert parallelism on cuda is not implemented yet", "backend");
    const model = resolve(f.model);
    let local: LocalRanks | undefined;
    let leader: string | undefined;
    if (f.ranks > 1) {
      leader = `127.0.0.1:${await freePort()}`;
      const out = f.out ? resolve(f.out) : undefined;
      local = new LocalRanks(f.ranks, (r) => {
        const prompt = peers[r - 1];
        return [
          "logits", "--log-level", f.logLevel, "--log-format", f.logFormat, "--model", model, "--load-format", f.loadFormat,
          "--rank", String(r), "--world-size", String(f.ranks), "--leader-address", leader as string, "--collective-timeout-ms", String(f.collectiveTimeoutMs),
          ...(f.shardPlan ? ["--shard-plan", resolve(f.shardPlan)] : []),
          ...(prompt && out ? ["--prompt-ids", prompt.join(","), "--decode", String(f.peerDecode), "--out", join(out, `rank-${r}`)] : []),
        ];
      });
      log.info({ ranks: f.ranks, leader }, "started the local expert-parallel group");
    }
    const work: RankWork = { model, loadFormat: f.loadFormat, backend: f.backend, prompt: f.promptIds, feed: f.feed, decode: f.decode, out: f.out, group: groupOf(f, leader), speculative: f.speculativeTokens };
    try {
      await (local ? Promise.race([runRank(work, log), local.failed]) : runRank(work, log));
      await local?.wait();
    } catch (e) {
      local?.kill();
      throw e;
    }
  },
});

async function runRank(w: RankWork, log: Logger): Promise<void> {
  const prompt = w.prompt ?? [];
  const steps = w.prompt ? (w.feed?.length ?? w.decode ?? 0) : 0;
  const speculating = w.prompt !== undefined && w.decode !== undefined && (w.speculative.mode === "auto" || w.speculative.k > 0);
  const total = Math.max(1, prompt.length + steps) + (speculating ? speculationHeadroom(w.speculative) : 0);
  const { engine, blockTable } = await loadOneSequenceEngine({ modelDir: w.model, loadFormat: w.loadFormat, backend: w.backend, totalTokens: total, log, group: w.group, mtp: speculating });
  try {
    const lockstep = new LockstepStepper(engine, w.group !== undefined && w.group.worldSize > 1);
    const V = engine.config.vocabSize;
    const bad = [...prompt, ...(w.feed ?? [])].find((t) => t >= V);
    if (bad !== undefined) throw invalid(`token id ${bad} is out of range for vocab_size ${V}`, "prompt-ids");
    if (!w.prompt || !w.out) {
      await lockstep.finish();
      return;
    }
    const decodeRows: Float32Array[] = [];
    const fed: number[] = [];
    let prefill: { logits: Float32Array; tokens: ArrayLike<number> };
    let speculative: Record<string, unknown> | undefined;
    let mtpPrefill: { logits: Float32Array; drafts: number[] } | undefined;
    if (speculating) {
      // greedy decode with drafts: each step keeps the rows after every kept fed token, so the
      // rows (and generated ids) are those of the plain loop below
      const decoder = new OneSequenceDecoder(lockstep, blockTable, GREEDY, V, w.speculative);
      const first = await decoder.prefill(prompt, "all", true);
      prefill = { logits: first.logits, tokens: [first.token] };
      mtpPrefill = { logits: first.mtpLogits, drafts: first.drafts };
      while (fed.length < steps) {
        const r = await decoder.next(true);
        fed.push(...r.kept);
        decodeRows.push(...r.logits);
      }
      fed.length = steps;
      decodeRows.length = steps;
      const acc = decoder.policy.acceptance;
      speculative = {
        setting: w.speculative.mode === "auto" ? "auto" : w.speculative.k,
        decode_steps: decoder.steps,
        tokens_per_step: decoder.tokensPerStep,
        draft_tokens: acc.numDraftTokens,
        accepted_tokens: acc.numAcceptedTokens,
        accepted_per_position: [...acc.acceptedPerPos].map((x) => x ?? 0),
      };
    } else {
      prefill = await lockstep.step([{ slotId: 0, tokens: Int32Array.from(prompt), position: 0, blockTable, sample: true, logits: "all", sampling: GREEDY }]);
    }
    let next = prefill.tokens[0] ?? 0;
    for (let i = 0; i < (speculating ? 0 : steps); i++) {
      const tok = w.feed ? (w.feed[i] as number) : next;
      fed.push(tok);
      const r = await lockstep.step([
        { slotId: 0, tokens: Int32Array.of(tok), position: prompt.length + i, blockTable, sample: true, logits: "last", sampling: GREEDY },
      ]);
      decodeRows.push(r.logits);
      next = r.tokens[0] ?? 0;
    }
    await lockstep.finish();
    const outDir = resolve(w.out);
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, "prefill_logits.f32"), toBytes([prefill.logits]));
    writeFileSync(join(outDir, "decode_logits.f32"), toBytes(decodeRows));
    if (mtpPrefill) writeFileSync(join(outDir, "mtp_prefill_logits.f32"), toBytes([mtpPrefill.logits]));
    const result = {
      model: w.model,
      backend: w.backend,
      vocab_size: V,
      ...(w.group ? { rank: w.group.rank, world_size: w.group.worldSize } : {}),
      prompt_ids: prompt,
      [w.feed ? "fed_ids" : "generated_ids"]: fed,
      prefill_shape: [prompt.length, V],
      decode_shape: [steps, V],
      dtype: "float32",
      byte_order: "little",
      ...(speculative ? { speculative } : {}),
      // the MTP head over the prompt: row j (j < T-1) reads (h_j, prompt[j+1]), row T-1 (h_{T-1}, the
      // first generated token), then one row per further draft; rows predict tokens j+2
      ...(mtpPrefill ? { mtp_prefill_shape: [mtpPrefill.logits.length / V, V], mtp_prefill_drafts: mtpPrefill.drafts } : {}),
    };
    writeFileSync(join(outDir, "result.json"), JSON.stringify(result, null, 2) + "\n");
    log.info({ out: outDir, prefillRows: prompt.length, decodeRows: steps }, "wrote logits");
  } finally {
    engine.close();
  }
}
