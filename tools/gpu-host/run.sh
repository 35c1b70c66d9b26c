#!/usr/bin/env bash
# Runs the CUDA-path tests that tools/gpu-host/pack.mjs compiled into this folder (.gpu/tests), without tap: the GPU host
# has no npm. Each file runs in its own node under the tap shim (run-one.mjs), its output goes to the terminal and to
# a log; then every file's summary line is printed again. Exit status 1 if any file failed, timed out or is missing.
#
#   .gpu/tests/run.sh                                        # every file of tests.txt
#   .gpu/tests/run.sh test/models/cuda.test.ts test/distill/loss.test.js    # some of them (.ts or .js names)
#
# Environment:
#   NODE              the node to run (default: node on the PATH, else .gpu/node.xz unpacked into $TMPDIR)
#   G2L_ENGINE_PATH   the engine addon (default: <repo>/build-engine/Release/g2l_engine.node, the plain-cmake build)
#   G2L_TEST_TIMEOUT  seconds per file (default 900)
#   G2L_TEST_LOGS     folder for one log per file (default .gpu/tests/logs)
#   G2L_REQUIRE_CUDA  1: stop (exit 2) unless the engine sees a CUDA device; without it a CPU engine "passes" the
#                     CUDA cases by skipping them (the skips show in the summaries)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
"$HERE/link.sh" || exit 2

if [ -z "${NODE:-}" ]; then
  if command -v node >/dev/null 2>&1; then
    NODE=node
  elif [ -s "$REPO/.gpu/node.xz" ]; then
    NODE="${TMPDIR:-/tmp}/g2l-node-$(id -u)/node"
    if [ ! -x "$NODE" ]; then
      mkdir -p "$(dirname "$NODE")" && xz -dc "$REPO/.gpu/node.xz" > "$NODE.tmp" && chmod +x "$NODE.tmp" && mv "$NODE.tmp" "$NODE" || exit 2
    fi
  else
    echo "run.sh: no node on the PATH and no .gpu/node.xz: set NODE" >&2
    exit 2
  fi
fi
export G2L_ENGINE_PATH=${G2L_ENGINE_PATH:-$REPO/build-engine/Release/g2l_engine.node}
if [ ! -f "$G2L_ENGINE_PATH" ]; then
  echo "run.sh: no engine at $G2L_ENGINE_PATH (build it with cmake into build-engine/, or set G2L_ENGINE_PATH)" >&2
  exit 2
fi
echo "# node $("$NODE" --version) ($NODE), engine $G2L_ENGINE_PATH"
# What the engine sees, before any test: a CPU engine skips every CUDA case.
cuda=$("$NODE" --input-type=module -e "
  const m = await import('$HERE/lib/backends/index.js');
  const i = await new m.NativeBackend(m.loadEngineAddon()).info();
  console.error('# engine: libtorch ' + i.libtorchVersion + ', CUDA built ' + i.cudaBuilt + ' [' + i.cudaArchitectures.join(',') + '], CUDA available ' + i.cudaAvailable + (i.cudaRuntimeVersion ? ' (runtime ' + i.cudaRuntimeVersion + ')' : '') + ', devices ' + JSON.stringify(i.devices));
  console.log(i.cudaAvailable ? 'yes' : 'no');
") || true
if [ "$cuda" != yes ] && [ "${G2L_REQUIRE_CUDA:-0}" = 1 ]; then
  echo "run.sh: G2L_REQUIRE_CUDA=1 but the engine sees no CUDA device (or could not be loaded)" >&2
  exit 2
fi

if [ $# -eq 0 ]; then
  mapfile -t files < <(grep -v '^\s*$' "$HERE/tests.txt")
else
  files=("$@")
fi
logs=${G2L_TEST_LOGS:-$HERE/logs}
mkdir -p "$logs"
summaries=()
failed=0
for f in "${files[@]}"; do
  rel=$f
  case "$rel" in /*) rel=${rel#"$HERE"/}; rel=${rel#"$REPO"/} ;; esac
  rel=${rel#./}
  rel=${rel#.gpu/tests/}
  rel=${rel%.ts}
  rel=${rel%.js}.js
  if [ ! -f "$HERE/$rel" ]; then
    echo "not ok - $f: not compiled into .gpu/tests (node tools/gpu-host/pack.mjs ${rel%.js}.ts)"
    summaries+=("# $rel: MISSING")
    failed=1
    continue
  fi
  log="$logs/$(echo "${rel%.js}" | tr / _).log"
  echo "# ==== $rel"
  start=$(date +%s)
  (cd "$REPO" && exec timeout "${G2L_TEST_TIMEOUT:-900}" "$NODE" "$HERE/run-one.mjs" "$HERE/$rel") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  s=$(grep -E "^# $rel: " "$log" | tail -n 1)
  [ -n "$s" ] || s="# $rel: no summary line"
  s="$s [$(( $(date +%s) - start )) s]"
  if [ "$rc" -ne 0 ]; then
    failed=1
    s="$s (exit $rc$([ "$rc" -eq 124 ] && echo ', TIMED OUT'))"
  fi
  summaries+=("$s")
done
echo "# ==== summary (logs in $logs)"
printf '%s\n' "${summaries[@]}"
if [ "$failed" -eq 0 ]; then echo "# all ${#files[@]} files passed"; else echo "# FAILED"; fi
exit "$failed"
