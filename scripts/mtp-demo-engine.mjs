#!/usr/bin/env node
// MTP on one sequence straight through the engine (no worker loop): greedy decode of N tokens on the
// demo model with MTP off (the plain engine, decode graphs) and with fixed k = 1, 2, 3 drafts per
// verify step; prints ms per step, tokens per verify step, the speedup and the first token that
// differs from MTP off (none: at one sequence CUDA verify rows equal plain rows bitwise, see
// docs/serving.md). The GPU counterpart of `latentmesh bench mtp-demo`.
//   BACKEND=cuda node scripts/mtp-demo-engine.mjs        (after npx tsc; BACKEND=cpu works anywhere)
import { Engine } from "../dist/worker/engine.js";
import { readFileSync } from "node:fs";
const dir = "test/fixtures/demo-chat", N = 512, BS = 16;
const prompt = JSON.parse(readFileSync(`${dir}/reference/prompt_ids.json`, "utf8"));
const perSeq = Math.ceil((prompt.length + N + 16) / BS);
const table = Int32Array.from({ length: perSeq }, (_, i) => i);
const G = { temperature: 0, topK: 0, topP: 1, seed: 0 };
async function run(k) {
  const e = await Engine.load({ modelDir: dir, loadFormat: "auto", backend: process.env.BACKEND ?? "cuda", maxSlots: 1, kvBlockSize: BS, numKvBlocks: perSeq, mtp: k > 0, onProgress: () => {} });
  const out = [];
  let best = Infinity, steps = 0;
  for (let rep = 0; rep < 3; rep++) {
    out.length = 0;
    let r = await e.step([{ slotId: 0, tokens: Int32Array.from(prompt), position: 0, blockTable: table, sample: true, logits: "none", sampling: G, ...(k > 0 ? { draftTokens: k } : {}) }]);
    let pos = prompt.length, last = r.tokens[0], drafts = k > 0 ? [...r.drafts] : [];
    out.push(last);
    steps = 0;
    const t0 = performance.now();
    while (out.length < N) {
      const toks = [last, ...drafts];
      r = await e.step([{ slotId: 0, tokens: Int32Array.from(toks), position: pos, blockTable: table, sample: true, logits: "none", sampling: G, ...(k > 0 ? { numDrafts: drafts.length, draftTokens: k } : {}) }]);
      steps++;
      const a = k > 0 ? r.numAccepted[0] : 0;
      out.push(...drafts.slice(0, a), r.tokens[0]);
      pos += 1 + a;
      last = r.tokens[0];
      drafts = k > 0 ? [...r.drafts] : [];
    }
    best = Math.min(best, performance.now() - t0);
  }
  e.close();
  return { ms: best, steps, tokens: out.slice(0, N) };
}
const base = await run(0);
console.log(`off: ${base.ms.toFixed(1)} ms for ${N} tokens, ${(base.ms / base.steps).toFixed(3)} ms/step`);
for (const k of [1, 2, 3]) {
  const r = await run(k);
  const agree = r.tokens.findIndex((t, i) => t !== base.tokens[i]);
  console.log(`k=${k}: ${r.ms.toFixed(1)} ms, ${(N / r.steps).toFixed(2)} tokens/step, ${(r.ms / r.steps).toFixed(3)} ms/step (${((r.ms / r.steps) / (base.ms / base.steps)).toFixed(2)}× a plain step), speedup ${(base.ms / r.ms).toFixed(2)}×, first token differing from off: ${agree < 0 ? "none" : agree}`);
}
