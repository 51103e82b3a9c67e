/** Where the installed package lives, for code that needs its bundled files (models, bin/, crds/). */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { LatentMeshError } from "../contracts/errors.js";

/**
 * The repository (package) root: the nearest directory above `fromUrl` holding package.json. Works
 * from sources and from compiled dist/ alike.
 */
export function repoRoot(fromUrl: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(fromUrl));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new LatentMeshError("internal", "cannot find the repository root (no package.json above the code)");
    dir = up;
  }
  return dir;
}
