#!/usr/bin/env node
// GPU machine check: whole-model parity of the CUDA backend on the committed fixtures, through
// `latentmesh logits --backend cuda`, against the transformers f32 reference. Criterion (issue 4):
// relative L2 ≤ 1e-1 per row and top-3 closeness (the reference's argmax within our top 3 and ours
// within its top 3) at every prompt position and decode step. Where transformers' own bf16
// arithmetic (reference/prefill_logits.bf16arith.f32) misses that bound itself — random MoE routing
// flipping on near-ties — the fixture is held to transformers' bf16 instead: worst rel L2 at most
// 1.25 × its, and top-3 closeness at least its fraction. Prints a table; exits 1 on failure.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const fixtures = join(root, "test", "fixtures");
const backend = process.argv[2] ?? "cuda";
const f32 = (p) => {
  const b = readFileSync(p);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
};
const top3 = (row) => [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, 3);

function compare(got, want, V) {
  let worst = 0, close = 0, same = 0;
  const rows = want.length / V;
  for (let r = 0; r < rows; r++) {
    const g = got.subarray(r * V, (r + 1) * V), w = want.subarray(r * V, (r + 1) * V);
    let e = 0, n = 0;
    for (let i = 0; i < V; i++) {
      e += (g[i] - w[i]) ** 2;
      n += w[i] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(e / n));
    const tg = top3(g), tw = top3(w);
    if (tg.includes(tw[0]) && tw.includes(tg[0])) close++;
    if (tg[0] === tw[0]) same++;
  }
  return { rows, worst, close, same };
}

let failed = false;
console.log(`backend ${backend}`);
console.log("| fixture | rows | worst rel L2 | top-3 close | same argmax | transformers bf16 (prefill): rel L2, top-3 | criterion | ok |");
console.log("|---|---|---|---|---|---|---|---|");
for (const name of readdirSync(fixtures).sort()) {
  const dir = join(fixtures, name);
  if (!existsSync(join(dir, "reference", "prefill_logits.f32"))) continue;
  const prompt = JSON.parse(readFileSync(join(dir, "reference", "prompt_ids.json"), "utf8"));
  const feed = JSON.parse(readFileSync(join(dir, "reference", "feed_ids.json"), "utf8"));
  const V = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).vocab_size;
  const out = mkdtempSync(join(tmpdir(), "gpu-parity-"));
  const r = spawnSync(process.execPath, [join(root, "bin", "latentmesh"), "logits", "--log-level", "warn", "--backend", backend, "--model", dir, "--prompt-ids", prompt.join(","), "--feed", feed.join(","), "--out", out], { encoding: "utf8" });
  if (r.status !== 0) {
    console.log(`| ${name} | - | - | - | - | FAILED: ${r.stderr.trim().split("\n").pop()} |`);
    failed = true;
    continue;
  }
  const pre = compare(f32(join(out, "prefill_logits.f32")), f32(join(dir, "reference", "prefill_logits.f32")), V);
  const dec = compare(f32(join(out, "decode_logits.f32")), f32(join(dir, "reference", "decode_logits.f32")), V);
  const rows = pre.rows + dec.rows, close = pre.close + dec.close, same = pre.same + dec.same;
  const worst = Math.max(pre.worst, dec.worst);
  const bf16Path = join(dir, "reference", "prefill_logits.bf16arith.f32");
  const tb = existsSync(bf16Path) ? compare(f32(bf16Path), f32(join(dir, "reference", "prefill_logits.f32")), V) : null;
  const tbMeets = !tb || (tb.worst <= 0.1 && tb.close === tb.rows);
  const ok = tbMeets ? worst <= 0.1 && close === rows : worst <= Math.max(0.1, 1.25 * tb.worst) && close / rows >= tb.close / tb.rows;
  failed ||= !ok;
  const tbText = tb ? `${tb.worst.toExponential(2)}, ${tb.close}/${tb.rows}` : "-";
  console.log(`| ${name} | ${rows} | ${worst.toExponential(2)} (prefill ${pre.worst.toExponential(2)}, decode ${dec.worst.toExponential(2)}) | ${close}/${rows} (prefill ${pre.close}/${pre.rows}, decode ${dec.close}/${dec.rows}) | ${same}/${rows} | ${tbText} | ${tbMeets ? "≤ 1e-1, all top-3" : "no worse than transformers bf16"} | ${ok ? "yes" : "NO"} |`);
}

// MTP on the backend: the head's logits over the prompt (and its drafts) against the float64 MTP
// reference with the same bf16 criterion, and greedy agreement: how many of the tokens generated with
// drafts verified (k = 1, 2, 3, auto) equal the plain greedy tokens of the same backend (required
// to be all of them, issue 7).
const cli = (args) => spawnSync(process.execPath, [join(root, "bin", "latentmesh"), "logits", "--log-level", "warn", "--backend", backend, ...args], { encoding: "utf8" });
const mtpFixtures = readdirSync(fixtures)
  .filter((d) => existsSync(join(fixtures, d, "config.json")) && (JSON.parse(readFileSync(join(fixtures, d, "config.json"), "utf8")).num_nextn_predict_layers ?? 0) > 0)
  .sort();
if (mtpFixtures.length > 0) {
  console.log("");
  console.log("| MTP fixture | head rows | worst rel L2 | top-3 close | same argmax | drafts as reference | greedy tokens, k = 1 / 2 / 3 / auto vs plain | tokens per step (k = 3, auto) | ok |");
  console.log("|---|---|---|---|---|---|---|---|---|");
}
for (const name of mtpFixtures) {
  const dir = join(fixtures, name);
  const hasRef = existsSync(join(dir, "reference", "mtp_prefill_logits.f32"));
  const meta = hasRef ? JSON.parse(readFileSync(join(dir, "reference", "meta.json"), "utf8")) : { prompt_ids: JSON.parse(readFileSync(join(dir, "reference", "prompt_ids.json"), "utf8")) };
  const V = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).vocab_size;
  let head = { rows: 0, worst: 0, close: 0, same: 0 };
  let draftsSame = true, draftsText = "-";
  if (hasRef) {
    const out = mkdtempSync(join(tmpdir(), "gpu-mtp-"));
    const r = cli(["--model", dir, "--prompt-ids", meta.prompt_ids.join(","), "--decode", "0", "--speculative-tokens", String(meta.speculative_tokens), "--out", out]);
    if (r.status !== 0) {
      console.log(`| ${name} | FAILED: ${r.stderr.trim().split("\n").pop()} |`);
      failed = true;
      continue;
    }
    head = compare(f32(join(out, "mtp_prefill_logits.f32")), f32(join(dir, "reference", "mtp_prefill_logits.f32")), V);
    const drafts = JSON.parse(readFileSync(join(out, "result.json"), "utf8")).mtp_prefill_drafts ?? [];
    draftsSame = JSON.stringify(drafts) === JSON.stringify(meta.drafts);
    draftsText = draftsSame ? "yes" : `no (${drafts} vs ${meta.drafts})`;
  }
  const N = 48;
  const gen = {};
  const tps = {};
  for (const k of ["0", "1", "2", "3", "auto"]) {
    const o = mkdtempSync(join(tmpdir(), `gpu-mtp-${k}-`));
    const g = cli(["--model", dir, "--prompt-ids", meta.prompt_ids.join(","), "--decode", String(N), "--speculative-tokens", k, "--out", o]);
    if (g.status !== 0) {
      gen[k] = `FAILED: ${g.stderr.trim().split("\n").pop()}`;
      continue;
    }
    const res = JSON.parse(readFileSync(join(o, "result.json"), "utf8"));
    gen[k] = res.generated_ids;
    tps[k] = res.speculative?.tokens_per_step;
  }
  const same = ["1", "2", "3", "auto"].map((k) => (Array.isArray(gen[k]) && Array.isArray(gen["0"]) ? gen[k].filter((t, i) => t === gen["0"][i]).length : gen[k] ?? "-"));
  const exact = same.every((n) => n === N);
  // The algorithm is exact, and so is the arithmetic at this batch of one sequence: on the CPU every
  // row is computed alone; on CUDA a verify step's k + 1 rows take the kernels and partitions of the
  // plain one-row decode step (choices by sequence count: skinny GEMM, attention splits, small-batch
  // MoE), which compute each row alone (kernels/tests/test-cuda-rows.cc), so the logits are bitwise
  // those of plain decoding. (On CUDA above 2 sequences per step cuBLASLt's rows follow the row
  // count, and exactness is not claimed there.)
  const ok = head.worst <= 0.1 && head.close === head.rows && exact;
  failed ||= !ok;
  console.log(`| ${name} | ${head.rows || "-"} | ${hasRef ? head.worst.toExponential(2) : "-"} | ${head.close}/${head.rows} | ${head.same}/${head.rows} | ${draftsText} | ${same.map((n) => `${n}/${N}`).join(" / ")} | ${tps["3"]?.toFixed?.(2) ?? "-"}, ${tps.auto?.toFixed?.(2) ?? "-"} | ${ok ? "yes" : "NO"} |`);
}
process.exit(failed ? 1 : 0);
