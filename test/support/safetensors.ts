/** Writes real .safetensors files for tests (8-byte LE header length, JSON header, raw data). */
import { writeFileSync } from "node:fs";

export interface TensorSpec {
  readonly dtype: "F32" | "BF16" | "F16";
  readonly shape: readonly number[];
  /** Values; converted to the dtype. Defaults to a deterministic pattern. */
  readonly data?: readonly number[];
}

function f32ToBf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0] as number;
  return ((u + 0x7fff + ((u >> 16) & 1)) >>> 16) & 0xffff;
}

export function writeSafetensors(path: string, tensors: Record<string, TensorSpec>, options: { headerOverride?: string } = {}): void {
  const header: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = t.dtype === "F32" ? 4 : 2;
    const buf = Buffer.alloc(n * bytes);
    for (let i = 0; i < n; i++) {
      const v = t.data?.[i] ?? Math.sin(i * 0.37 + name.length) * 0.05;
      if (t.dtype === "F32") buf.writeFloatLE(v, i * 4);
      else buf.writeUInt16LE(f32ToBf16(v), i * 2);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + buf.length] };
    chunks.push(buf);
    offset += buf.length;
  }
  const json = Buffer.from(options.headerOverride ?? JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...chunks]));
}
