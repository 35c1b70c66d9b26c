#!/usr/bin/env bash
# For benchmarks/gpu.mjs on the GPU host: it imports ../dist/..., and dist/ imports sharp. When no dist/ was carried,
# link dist -> .gpu/tests/lib (the same lib/ compiled by tools/gpu-host/pack.mjs; its `sharp` resolves to the stub in
# .gpu/tests/node_modules). When a real dist/ is there and no sharp is installed, put the sharp stub in
# node_modules/sharp at the repo root. Touches nothing that exists. Then:
#   G2L_ENGINE_PATH=$PWD/build-engine/Release/g2l_engine.node $NODE benchmarks/gpu.mjs
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
"$HERE/link.sh"
if [ ! -e "$REPO/dist" ] && [ ! -L "$REPO/dist" ]; then
  ln -s .gpu/tests/lib "$REPO/dist"
  echo "setup-root.sh: dist -> .gpu/tests/lib"
elif [ ! -e "$REPO/node_modules/sharp/package.json" ]; then
  mkdir -p "$REPO/node_modules"
  cp -r "$HERE/node_modules/sharp" "$REPO/node_modules/sharp"
  echo "setup-root.sh: node_modules/sharp is the stub (no image decoding on this host)"
fi
