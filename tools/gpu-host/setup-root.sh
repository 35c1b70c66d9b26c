#!/usr/bin/env bash
# For benchmarks/gpu.mjs on the GPU host: it imports ../dist/..., and dist/ imports sharp, zod and js-yaml. When no
# dist/ was carried, link dist -> .gpu/tests/lib (the same lib/ compiled by tools/gpu-host/pack.mjs; its packages
# resolve to .gpu/tests/node_modules: the sharp stub and the copied pure-JavaScript packages). When a real dist/ is
# there, put each of those packages that is not installed into node_modules at the repo root. Touches nothing that
# exists. Then:
#   G2L_ENGINE_PATH=$PWD/build-engine/Release/g2l_engine.node $NODE benchmarks/gpu.mjs
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
"$HERE/link.sh"
if [ ! -e "$REPO/dist" ] && [ ! -L "$REPO/dist" ]; then
  ln -s .gpu/tests/lib "$REPO/dist"
  echo "setup-root.sh: dist -> .gpu/tests/lib"
else
  for dir in "$HERE"/node_modules/*/; do
    name=$(basename "$dir")
    [ "$name" = tap ] || [ -e "$REPO/node_modules/$name/package.json" ] && continue
    mkdir -p "$REPO/node_modules"
    cp -r "$dir" "$REPO/node_modules/$name"
    echo "setup-root.sh: node_modules/$name from .gpu/tests$([ "$name" = sharp ] && echo ' (the stub: no image decoding on this host)')"
  done
fi
