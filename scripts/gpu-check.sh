#!/usr/bin/env bash
# The whole GPU check in one command, on the GPU machine (see kernels/dev/NOTES.md):
#   run(command="bash scripts/gpu-check.sh", carry=[".carry", ".gpu", "dist"])
# Builds the native engine with CUDA, runs the CPU op tests, the CUDA whole-model parity on the
# fixtures, and a dummy-weight smoke run of a released config. Writes logs under $OUT when set.
set -uo pipefail
cd "$(dirname "$0")/.."
source .carry/env.sh
[[ -d node_modules ]] || cp -r .gpu/node_modules node_modules
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== build (LM_CUDA=ON)"
if ! LM_CUDA=ON node scripts/build-native.mjs >"$out/build.log" 2>&1; then tail -40 "$out/build.log"; exit 1; fi
grep -E "CUDA backend|kernels: compiled" "$out/build.log"
echo "== CPU op tests"
./kernels/build/test-ops >"$out/test-ops.log" 2>&1 || status_ops=1
grep -E "^FAIL|passed" "$out/test-ops.log" | tail -12
echo "== CUDA ops vs CPU reference"
for t in ./kernels/build/test-cuda-*; do [[ -x $t ]] || continue; echo "-- ${t##*/}"; "$t" || status_ops=1; done
echo "== CUDA parity on fixtures"
node scripts/gpu-parity.mjs cuda
status=$?
echo "== dummy ${SMOKE_CONFIG:=test/fixtures/configs/nemotron-3-nano-30b-a3b.config.json}"
mkdir -p /tmp/smoke && cp "$SMOKE_CONFIG" /tmp/smoke/config.json
ids=$(seq -s, 1 "${SMOKE_PROMPT:=512}")
/usr/bin/time -v node bin/latentmesh logits --backend cuda --load-format dummy --model /tmp/smoke --prompt-ids "$ids" --decode 16 --out /tmp/smoke/out 2>"$out/smoke.log"
echo "smoke exit $?"; grep -E "engine ready|wrote logits|Maximum resident|Elapsed|latentmesh" "$out/smoke.log" | cut -c1-240
nvidia-smi --query-gpu=memory.used --format=csv,noheader
exit $(( status || ${status_ops:-0} ))
