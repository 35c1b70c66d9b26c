#!/bin/bash
# One call on a GPU host without npm (tools/gpu-host/README.md): build the CUDA engine with plain CMake, run the CUDA tests,
# then `benchmarks/gpu.mjs`. Everything it prints is also kept under $OUT (build.log, checks.log, bench.log,
# gpu-latest.json, gpu-profile-eager.txt, gpu-profile-native.txt); a step that fails is reported and the later steps
# still run where they can.
#
# Prepared here first (the host has no npm and no network):
#   bash tools/gpu-host/prepare.sh [--prebuilt]   # .gpu/ (node, headers, the CUDA tests compiled) and dist/
# then run this from the repository root there, carrying .gpu and dist:  bash tools/gpu-host/host.sh [SECONDS]
# SECONDS (default 540) is the whole script's budget; the benchmark gets what the build and checks leave of it.
set -u -o pipefail
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

# -- engine -----------------------------------------------------------------------------------------------------------
# A prebuilt CUDA engine may travel in .gpu/prebuilt/ (built elsewhere with plain CMake against the same torch, 2.11.0+cu130,
# for sm_90): used when it loads here and sees the GPU; otherwise the engine is built here.
TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
CU13_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "lib"))')
probe() {  # prints the engine's info and succeeds when it sees a CUDA device
  G2L_ENGINE_PATH="$1" node -e "import('./dist/backends/index.js').then(async (m) => { const { backend, fallbackReason } = m.chooseBackend({ backend: 'native' }); if (fallbackReason) { console.log(fallbackReason); process.exit(1); } const i = await backend.info(); console.log(JSON.stringify(i)); process.exit(i.cudaAvailable ? 0 : 1); })"
}
ENGINE=""
if [ -f .gpu/prebuilt/g2l_engine.node ]; then
  if LD_LIBRARY_PATH="$TORCH_LIB:$CU13_LIB:${LD_LIBRARY_PATH:-}" probe "$ROOT/.gpu/prebuilt/g2l_engine.node" 2>&1 | tee -a "$OUT/host.log"; then
    export LD_LIBRARY_PATH="$TORCH_LIB:$CU13_LIB:${LD_LIBRARY_PATH:-}"
    ENGINE="$ROOT/.gpu/prebuilt/g2l_engine.node"
    log "using the prebuilt engine"
  else
    log "the prebuilt engine does not run here: building"
  fi
fi
if [ -z "$ENGINE" ]; then
  PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  log "build: cmake + ninja, sm_90"
  if ! { timeout 300 cmake -S . -B build-engine -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
          -DNODE_API_INCLUDE_DIR="$ROOT/.gpu/node-api-headers" -DNODE_ADDON_API_DIR="$ROOT/.gpu/node-addon-api" \
          -DG2L_CUDA=ON -DG2L_CUDA_ARCHITECTURES=90 > "$OUT/build.log" 2>&1 &&
        timeout 300 cmake --build build-engine -j "$(nproc)" >> "$OUT/build.log" 2>&1; }; then
    log "build FAILED"; grep -B2 -A12 -m5 'error' "$OUT/build.log" | head -80; tail -20 "$OUT/build.log"; exit 1
  fi
  ENGINE="$ROOT/$(find build-engine -name g2l_engine.node | head -1)"
  probe "$ENGINE" 2>&1 | tee -a "$OUT/host.log"
  log "built $ENGINE"
fi
export G2L_ENGINE_PATH="$ENGINE"

# -- checks (G2L_HOST_CHECKS=0 skips them, e.g. in a second call for torch.compile alone) ---------------------------
CHECKS_RC=0
[ -x .gpu/tests/setup-root.sh ] && bash .gpu/tests/setup-root.sh >> "$OUT/host.log" 2>&1
if [ "${G2L_HOST_CHECKS:-1}" = 0 ]; then
  log "checks skipped (G2L_HOST_CHECKS=0)"
else
  log "checks: the CUDA tests (fp32/fp16/bf16 models, augmentation kernel, fused loss, Distiller, NCCL world of one, FP8 teacher, each fused kernel against the path it replaces)"
  if [ -x .gpu/tests/run.sh ]; then
    G2L_REQUIRE_CUDA=1 G2L_TEST_TIMEOUT=150 timeout 390 bash .gpu/tests/run.sh > "$OUT/checks.log" 2>&1 || CHECKS_RC=$?
    grep -E '^# |^not ok' "$OUT/checks.log" | tee -a "$OUT/host.log"
    log "checks exit $CHECKS_RC"
  else
    log "no .gpu/tests/run.sh: run bash tools/gpu-host/prepare.sh before the call"
    CHECKS_RC=1
  fi
fi

# -- benchmark ------------------------------------------------------------------------------------------------------
B=$(( $(left) - 15 ))
log "bench: ${B}s left for benchmarks/gpu.mjs"
mkdir -p /tmp/g2l-models
timeout "$B" node benchmarks/gpu.mjs --models /tmp/g2l-models --out "$OUT/gpu-latest.json" \
  --deadline $(( START + BUDGET - 10 )) ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | grep -v '^\s*$' | tail -40
cp benchmarks/results/gpu-profile-eager.txt "$OUT/" 2>/dev/null
cp "$OUT/gpu-profile-native.txt" benchmarks/results/ 2>/dev/null
cp "$OUT/gpu-latest.json" benchmarks/results/ 2>/dev/null
log "done (checks exit $CHECKS_RC)"
exit $CHECKS_RC
