/** Comparing logits files of `latentmesh logits` (parity tests). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

/** Worst per-row relative L2 error and the rows whose argmax differs. */
export function compareRows(got: Float32Array, want: Float32Array, vocab: number): { worst: number; argmaxMismatches: number[] } {
  assert.equal(got.length, want.length, "logits shapes differ");
  let worst = 0;
  const argmaxMismatches: number[] = [];
  for (let r = 0; r < want.length / vocab; r++) {
    let err = 0, norm = 0, ag = 0, aw = 0;
    for (let i = 0; i < vocab; i++) {
      const g = got[r * vocab + i] as number, w = want[r * vocab + i] as number;
      err += (g - w) ** 2;
      norm += w * w;
      if (g > (got[r * vocab + ag] as number)) ag = i;
      if (w > (want[r * vocab + aw] as number)) aw = i;
    }
    worst = Math.max(worst, Math.sqrt(err / Math.max(norm, 1e-30)));
    if (ag !== aw) argmaxMismatches.push(r);
  }
  return { worst, argmaxMismatches };
}

/** A little-endian float32 file (`*_logits.f32`) as a Float32Array. */
export function readF32(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
}
