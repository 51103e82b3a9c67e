#!/usr/bin/env bash
# Makes sure the system tools LatentMesh needs exist: nats-server, cmake, a C++ compiler, make.
# Installs missing ones with apt-get when it can (root, or password-less sudo); otherwise stops
# with one line saying what to install.
set -euo pipefail
need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
[[ ${#need[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "latentmesh: missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 2
fi
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "latentmesh: missing system packages: run 'sudo apt-get install -y ${need[*]}' and try again" >&2
  exit 2
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "latentmesh: apt-get installed $tool but it is not on PATH" >&2; exit 2; }
done
