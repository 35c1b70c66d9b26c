#!/usr/bin/env bash
# Lets the compiled tests in .gpu/tests see the repository as the .ts tests do (run.sh calls this; idempotent):
#   .gpu/tests/test/fixtures -> ../../../test/fixtures   (test/models/helpers: HERE/../fixtures; cli.ts: ROOT/test/fixtures)
#   .gpu/tests/build-engine  -> ../../build-engine       (PACKAGE_ROOT/build-engine: the engine when G2L_ENGINE_PATH is unset)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
link() {
  local at="$HERE/$1" to="$2"
  if [ -L "$at" ]; then
    [ "$(readlink "$at")" = "$to" ] && return 0
    rm "$at"
  elif [ -e "$at" ]; then
    echo "link.sh: $at exists and is not a link; leaving it" >&2
    return 0
  fi
  mkdir -p "$(dirname "$at")"
  ln -s "$to" "$at"
}
if [ ! -d "$REPO/test/fixtures" ]; then
  echo "link.sh: $REPO/test/fixtures is missing (is .gpu/tests inside the repository root?)" >&2
  exit 1
fi
link test/fixtures ../../../test/fixtures
link build-engine ../../build-engine
