#!/bin/bash
# One call on the GPU host (../shared/gpu/README.md): build the CUDA engine with plain CMake, run the CUDA checks,
# then `benchmarks/gpu.mjs`. Everything it prints is also kept under $OUT (build.log, checks.log, bench.log,
# gpu-latest.json, gpu-profile-eager.txt); a step that fails is reported and the later steps still run where they can.
#
# Prepared here first (the host has no npm and no network):
#   bash ../shared/gpu/pack-node.sh                          # .gpu/node.xz + .gpu/node-api-headers/
#   cp -r node_modules/node-addon-api .gpu/                  # the C++ wrapper headers the addon glue uses
#   node tools/gpu-pack.mjs                                  # .gpu/tests/: the CUDA tests compiled, runnable without tap
#   npx tsc -p .                                             # dist/
# then run this from the repository root there, carrying .gpu and dist:  bash benchmarks/gpu-host.sh [SECONDS]
# SECONDS (default 540) is the whole script's budget; the benchmark gets what the build and checks leave of it.
set -u
BUDGET=${1:-540}
START=$(date +%s)
OUT=${OUT:-/tmp/g2l-gpu-out}
mkdir -p "$OUT"
ROOT=$(pwd)
log() { echo "[gpu-host $(date +%T) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/host.log"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

log "host: $(nproc) cores; $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1)"
mkdir -p /tmp/g2l-node && xz -dc .gpu/node.xz > /tmp/g2l-node/node && chmod +x /tmp/g2l-node/node || { log "cannot unpack .gpu/node.xz"; exit 1; }
export PATH=/tmp/g2l-node:$PATH NODE=/tmp/g2l-node/node
log "node $(node --version); python3 $(python3 -c 'import torch, timm, transformers; print(torch.__version__, torch.version.cuda, timm.__version__, transformers.__version__)' 2>&1)"

# -- build ----------------------------------------------------------------------------------------------------------
PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
log "build: cmake + ninja, sm_90"
if ! { timeout 300 cmake -S . -B build-engine -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
        -DNODE_API_INCLUDE_DIR="$ROOT/.gpu/node-api-headers" -DNODE_ADDON_API_DIR="$ROOT/.gpu/node-addon-api" \
        -DG2L_CUDA=ON -DG2L_CUDA_ARCHITECTURES=90 > "$OUT/build.log" 2>&1 &&
      timeout 300 cmake --build build-engine -j "$(nproc)" >> "$OUT/build.log" 2>&1; }; then
  log "build FAILED"; grep -B2 -A12 -m5 'error' "$OUT/build.log" | head -80; tail -20 "$OUT/build.log"; exit 1
fi
ENGINE=$(find build-engine -name g2l_engine.node | head -1)
export G2L_ENGINE_PATH="$ROOT/$ENGINE"
log "built $ENGINE"
node bin/g2l-native info 2>&1 | tee -a "$OUT/host.log"

# -- checks ---------------------------------------------------------------------------------------------------------
log "checks: the CUDA tests (fp32/fp16/bf16 models, augmentation kernel, fused loss, Distiller, NCCL world of one)"
CHECKS_RC=0
if [ -x .gpu/tests/run.sh ]; then
  G2L_REQUIRE_CUDA=1 G2L_TEST_TIMEOUT=150 timeout 200 bash .gpu/tests/run.sh > "$OUT/checks.log" 2>&1 || CHECKS_RC=$?
  grep -E '^# |^not ok' "$OUT/checks.log" | tee -a "$OUT/host.log"
  log "checks exit $CHECKS_RC"
else
  log "no .gpu/tests/run.sh: run node tools/gpu-pack.mjs before the call"
fi

log "checks: fused kernels against the paths they replace (benchmarks/gpu-check.mjs)"
[ -x .gpu/tests/setup-root.sh ] && bash .gpu/tests/setup-root.sh >> "$OUT/host.log" 2>&1
timeout 120 node benchmarks/gpu-check.mjs > "$OUT/fused-check.log" 2>&1 || CHECKS_RC=$?
grep -E '^(ok|not ok|# )' "$OUT/fused-check.log" | tee -a "$OUT/host.log"

# -- benchmark ------------------------------------------------------------------------------------------------------
B=$(( $(left) - 15 ))
log "bench: ${B}s left for benchmarks/gpu.mjs"
mkdir -p /tmp/g2l-models
timeout "$B" node benchmarks/gpu.mjs --models /tmp/g2l-models --out "$OUT/gpu-latest.json" \
  --compile-timeout "${COMPILE_TIMEOUT:-150}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | grep -v '^\s*$' | tail -40
cp benchmarks/results/gpu-profile-eager.txt "$OUT/" 2>/dev/null
cp "$OUT/gpu-latest.json" benchmarks/results/ 2>/dev/null
log "done (checks exit $CHECKS_RC)"
exit $CHECKS_RC
