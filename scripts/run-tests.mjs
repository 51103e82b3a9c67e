#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with node's test runner.
// Usage: node scripts/run-tests.mjs [tier ...]   tiers: unit integration operator parity e2e (default: all)
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tiers = process.argv.slice(2);
const base = join(root, "dist", "test");
if (!existsSync(base)) {
  console.error("run-tests: dist/test is missing: run 'npm run build' first");
  process.exit(2);
}
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) walk(full);
    else if (name.endsWith(".test.js")) files.push(full);
  }
};
for (const tier of tiers.length ? tiers : readdirSync(base)) {
  const dir = join(base, tier);
  if (existsSync(dir) && statSync(dir).isDirectory()) walk(dir);
  else if (tiers.length) {
    console.error(`run-tests: no tests for tier '${tier}'`);
    process.exit(2);
  }
}
if (files.length === 0) {
  console.error("run-tests: no test files found");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-reporter=spec", "--test-concurrency=2", ...files], { stdio: "inherit", cwd: root });
process.exit(r.status ?? 1);
