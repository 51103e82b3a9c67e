/** Repository paths for tests, valid both from test/ sources and compiled dist/test/. */
import { resolve } from "node:path";
import { repoRoot } from "../../core/paths.js";

export const REPO_ROOT = repoRoot();
export const CLI = resolve(REPO_ROOT, "bin", "latentmesh");
export const FIXTURES = resolve(REPO_ROOT, "test", "fixtures");
