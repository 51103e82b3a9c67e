#!/usr/bin/env node
// Builds kernels/ (CMake) into kernels/build/latentmesh_native.node.
// The CPU backend always; the CUDA backend where nvcc exists (LM_CUDA=AUTO|ON|OFF overrides).
// Any failure exits non-zero with the compiler's output: a broken native build never passes quietly.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(root, "kernels");
const build = join(root, "kernels", "build");

function nodeApiInclude() {
  const candidates = [
    process.env.NODE_API_INCLUDE,
    join(dirname(process.execPath), "..", "include", "node"),
    "/usr/include/node",
    "/usr/local/include/node",
  ].filter(Boolean);
  const found = candidates.find((d) => existsSync(join(d, "node_api.h")));
  if (!found) {
    console.error(`build-native: node_api.h not found (looked in ${candidates.join(", ")}); install Node's headers or set NODE_API_INCLUDE`);
    process.exit(1);
  }
  return found;
}

function run(cmd, args) {
  console.error(`build-native: ${cmd} ${args.join(" ")}`);
  const r = spawnSync(cmd, args, { stdio: "inherit" });
  if (r.error) {
    console.error(`build-native: cannot run ${cmd}: ${r.error.message} (is cmake installed? apt-get install cmake g++)`);
    process.exit(1);
  }
  if (r.status !== 0) {
    console.error(`build-native: ${cmd} failed with exit code ${r.status}`);
    process.exit(r.status ?? 1);
  }
}

const cuda = process.env.LM_CUDA ?? "AUTO";
const march = process.env.LM_MARCH ?? "native";
run("cmake", ["-S", src, "-B", build, `-DNODE_API_INCLUDE=${nodeApiInclude()}`, `-DLM_CUDA=${cuda}`, `-DLM_MARCH=${march}`, "-DCMAKE_BUILD_TYPE=Release"]);
run("cmake", ["--build", build, "-j", String(Math.max(1, cpus().length))]);
const addon = join(build, "latentmesh_native.node");
if (!existsSync(addon)) {
  console.error(`build-native: ${addon} was not produced`);
  process.exit(1);
}
console.error(`build-native: built ${addon}`);
