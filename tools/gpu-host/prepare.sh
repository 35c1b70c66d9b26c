#!/bin/bash
# Prepares, on a machine with npm, what a GPU host without npm needs (everything under .gpu/, which git ignores):
#   .gpu/node.xz               this machine's Node binary, compressed
#   .gpu/node-api-headers/     the Node-API C headers the engine's addon is compiled against
#   .gpu/node-addon-api/       the C++ wrapper headers of the addon glue
#   .gpu/tests/                the CUDA-path tests compiled to JavaScript, runnable without tap (pack.mjs)
#   dist/                      the compiled library
#   .gpu/prebuilt/g2l_engine.node   with --prebuilt: the CUDA engine built here from the .venv's pip CUDA packages
# Then carry .gpu and dist to the host and run `bash tools/gpu-host/host.sh [SECONDS]` from the repository root there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
mkdir -p .gpu
if [ -d .git ] || [ -f .git ]; then
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$EXCLUDE")"
  grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >> "$EXCLUDE"
fi
NODE_BIN=$(command -v node)
[ -s .gpu/node.xz ] || xz -T2 -6 -c "$NODE_BIN" > .gpu/node.xz
INC=$(dirname "$(dirname "$NODE_BIN")")/include/node
[ -f "$INC/node_api.h" ] || INC=node_modules/node-api-headers/include
mkdir -p .gpu/node-api-headers
cp "$INC"/node_api.h "$INC"/node_api_types.h "$INC"/js_native_api.h "$INC"/js_native_api_types.h .gpu/node-api-headers/
rm -rf .gpu/node-addon-api && cp -r node_modules/node-addon-api .gpu/
node tools/setup.mjs --only ts
node tools/gpu-host/pack.mjs
if [ "${1:-}" = --prebuilt ]; then bash tools/gpu-host/build-cuda-engine.sh; fi
du -sh .gpu
