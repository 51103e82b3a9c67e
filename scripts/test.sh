#!/usr/bin/env bash
# The whole test suite, from a fresh clone: system packages, npm packages, build (TypeScript +
# native CPU engine), lint, typecheck, then every test tier. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( major < 20 )); then echo "latentmesh: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2; exit 2; fi
scripts/ensure-system-deps.sh
echo "== npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error
echo "== build" >&2
npm run --silent build
echo "== lint" >&2
npm run --silent lint
echo "== tests" >&2
node scripts/run-tests.mjs "$@"
