#!/usr/bin/env bash
# Quick start: install what is needed, build, and run the whole stack locally (`latentmesh up`).
# Extra arguments go to `latentmesh up` (e.g. --port 8001 --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( major < 20 )); then echo "latentmesh: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2; exit 2; fi
scripts/ensure-system-deps.sh
[[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
exec bin/latentmesh up "$@"
