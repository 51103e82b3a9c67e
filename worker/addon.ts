/**
 * Loads the native addon. worker/engine.ts is its only user (STYLE rule 4); the CLI's parity tools
 * go through worker/engine.ts as well.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { LatentMeshError } from "../contracts/errors.js";
import type { NativeAddon } from "./native.js";

let cached: NativeAddon | undefined;

/** Path of the built addon, relative to the repository root. */
export const ADDON_PATH = "kernels/build/latentmesh_native.node";

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  // dist/worker/addon.js and worker/addon.ts both sit two levels below the repository root.
  const candidates = ["../../kernels/build/latentmesh_native.node", "../kernels/build/latentmesh_native.node"].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const path = process.env.LATENTMESH_ADDON ?? candidates.find((p) => existsSync(p));
  if (!path) {
    throw new LatentMeshError("engine_error", `native engine not built: ${ADDON_PATH} is missing (run 'npm run build:native')`);
  }
  cached = createRequire(import.meta.url)(path) as NativeAddon;
  return cached;
}
