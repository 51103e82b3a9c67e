/** Repository paths for tests, valid both from test/ sources and compiled dist/test/. */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("repository root not found");
    dir = up;
  }
  return dir;
}

export const REPO_ROOT = findRoot();
export const CLI = resolve(REPO_ROOT, "bin", "latentmesh");
export const FIXTURES = resolve(REPO_ROOT, "test", "fixtures");
