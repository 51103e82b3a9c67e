/**
 * Optional API keys: from --api-keys (LATENTMESH_API_KEYS, comma-separated) and --api-keys-file (one
 * per line). Keys are compared as SHA-256 digests in constant time and never logged.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { LatentMeshError } from "../contracts/errors.js";

export class ApiKeys {
  private constructor(private readonly digests: readonly Buffer[]) {}

  static load(inline: string | undefined, file: string | undefined): ApiKeys {
    const keys: string[] = [];
    if (inline) keys.push(...inline.split(","));
    if (file) {
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch (err) {
        throw new LatentMeshError("invalid_config", `cannot read API keys file ${file}: ${(err as Error).message}`);
      }
      keys.push(...text.split("\n").filter((l) => !l.trim().startsWith("#")));
    }
    return new ApiKeys(keys.map((k) => k.trim()).filter((k) => k.length > 0).map(digest));
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** Checks an Authorization header; throws unauthorized. */
  check(authorization: string | undefined): void {
    if (!this.enabled) return;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!m?.[1]) throw new LatentMeshError("unauthorized", "missing API key: send 'Authorization: Bearer <key>'");
    const d = digest(m[1]);
    let ok = false;
    for (const k of this.digests) ok = timingSafeEqual(k, d) || ok;
    if (!ok) throw new LatentMeshError("unauthorized", "incorrect API key");
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}
