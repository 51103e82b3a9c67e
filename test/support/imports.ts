/** Import-boundary scanner used by test/unit/import-boundaries.test.ts (STYLE rule 4). */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative, sep } from "node:path";

/** Components that may import contracts/ and core/ but never each other. */
export const COMPONENTS = ["router", "worker", "operator"] as const;
/** What each shared module may import from the repository (besides npm packages). */
const SHARED_ALLOWED: Record<string, readonly string[]> = {
  contracts: ["contracts"],
  core: ["core", "contracts"],
};

export interface SourceFile {
  /** Path relative to the repository root, with forward slashes. */
  readonly path: string;
  readonly source: string;
}

export interface Violation {
  readonly file: string;
  readonly specifier: string;
  readonly reason: string;
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|(?:^|[\s;(])import\s*\(\s*["']([^"']+)["']\s*\)|(?:^|[\s;])import\s*["']([^"']+)["']/gm;

/** Every module specifier a TypeScript source imports or re-exports. */
export function importSpecifiers(source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec) out.push(spec);
  }
  return out;
}

function topDir(path: string): string {
  return path.split("/")[0] ?? "";
}

/** Imports that cross a forbidden boundary. */
export function findViolations(files: readonly SourceFile[]): Violation[] {
  const violations: Violation[] = [];
  for (const file of files) {
    const from = topDir(file.path);
    const isComponent = (COMPONENTS as readonly string[]).includes(from);
    const shared = SHARED_ALLOWED[from];
    if (!isComponent && !shared) continue;
    for (const spec of importSpecifiers(file.source)) {
      if (!spec.startsWith(".")) {
        if (from === "contracts" && spec !== "zod" && !spec.startsWith("node:")) {
          violations.push({ file: file.path, specifier: spec, reason: "contracts/ depends on zod only" });
        }
        continue;
      }
      const target = normalize(join(dirname(file.path), spec)).split(sep).join("/");
      const to = topDir(target);
      if (to === from) continue;
      if (isComponent && (to === "contracts" || to === "core")) continue;
      if (shared && shared.includes(to)) continue;
      violations.push({ file: file.path, specifier: spec, reason: `${from}/ must not import ${to}/` });
    }
  }
  return violations;
}

/** Reads every .ts source under the given top-level directories of `root`. */
export function readSources(root: string, dirs: readonly string[]): SourceFile[] {
  const files: SourceFile[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (/\.(ts|mts|js|mjs)$/.test(name)) files.push({ path: relative(root, full).split(sep).join("/"), source: readFileSync(full, "utf8") });
    }
  };
  for (const d of dirs) {
    try {
      walk(join(root, d));
    } catch {
      // a component directory that does not exist yet has nothing to check
    }
  }
  return files;
}
