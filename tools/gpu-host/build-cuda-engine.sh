#!/usr/bin/env bash
# Builds the CUDA engine on a machine without a GPU or a CUDA toolkit, from the .venv's pip packages, for the GPU
# host's prebuilt slot (tools/gpu-host/host.sh uses .gpu/prebuilt/g2l_engine.node when it loads there):
#
#   bash tools/gpu-host/build-cuda-engine.sh [ARCH]     (default 90: the H200)  ->  build-cuda/Release/g2l_engine.node
#                                                        and g2l_engine_testing.node, copied to .gpu/prebuilt/
#
# It assembles a toolkit folder, build-cuda/toolkit: links into the .venv's nvidia/cu13 (nvcc, headers, the CUDA
# libraries torch 2.11.0+cu130 ships) and a libcuda.so stub that only satisfies CMake's FindCUDAToolkit (the real
# driver is the GPU host's). nvcc 13 also needs the CCCL headers, which pip installs into build-cuda/cccl
# (nvidia-cuda-cccl, the toolkit's 13.0 release). Then a plain CMake build with G2L_CUDA=ON.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ARCH=${1:-90}
PY=$ROOT/.venv/bin/python
OUT=$ROOT/build-cuda
TK=$OUT/toolkit
CCCL=$OUT/cccl
[ -x "$PY" ] || { echo "build-cuda-engine: no $PY: run npm run setup first" >&2; exit 2; }
CU=$("$PY" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$CU/bin/nvcc" ] || { echo "build-cuda-engine: no nvcc in $CU/bin: pip install -r tools/requirements.txt" >&2; exit 2; }

mkdir -p "$TK/lib64/stubs"
# bin is a folder of links, not a link: nvcc finds the toolkit as bin/.. (lib64, the stub), which through a linked
# bin would lead back into the pip package.
[ -L "$TK/bin" ] && rm "$TK/bin"
mkdir -p "$TK/bin"
for f in "$CU"/bin/*; do ln -sfn "$f" "$TK/bin/$(basename "$f")"; done
for d in include nvvm; do ln -sfn "$CU/$d" "$TK/$d"; done
for f in "$CU"/lib/*.so* "$CU"/lib/*.a; do
  [ -e "$f" ] || continue
  base=$(basename "$f")
  ln -sfn "$f" "$TK/lib64/$base"
  case "$base" in *.so.*) ln -sfn "$f" "$TK/lib64/${base%%.so.*}.so" ;; esac
done
if [ ! -f "$TK/lib64/stubs/libcuda.so" ]; then
  printf 'int cuInit(unsigned int flags) { (void)flags; return 100; /* CUDA_ERROR_NO_DEVICE */ }\n' > "$TK/stub.c"
  cc -shared -fPIC -o "$TK/lib64/stubs/libcuda.so" "$TK/stub.c"
fi
ln -sfn stubs/libcuda.so "$TK/lib64/libcuda.so"
if [ ! -d "$CCCL/nvidia/cu13/include/cccl" ]; then
  "$PY" -m pip install --quiet --target "$CCCL" 'nvidia-cuda-cccl==13.0.85'
fi

# PATH: libtorch's Caffe2 config finds the toolkit through the nvcc on PATH (FindCUDA), CMake through CUDAToolkit_ROOT.
export PATH="$TK/bin:$PATH"
cmake -S "$ROOT" -B "$OUT" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
  -DNODE_API_INCLUDE_DIR="$ROOT/node_modules/node-api-headers/include" \
  -DNODE_ADDON_API_DIR="$ROOT/node_modules/node-addon-api" \
  -DG2L_CUDA=ON -DG2L_CUDA_ARCHITECTURES="$ARCH" -DCUDAToolkit_ROOT="$TK" -DCUDA_TOOLKIT_ROOT_DIR="$TK" \
  -DCMAKE_CUDA_COMPILER="$TK/bin/nvcc" \
  -DCMAKE_CXX_FLAGS="-isystem $CCCL/nvidia/cu13/include/cccl" > "$OUT/configure.log"
cmake --build "$OUT" --parallel "$(nproc)"
mkdir -p "$ROOT/.gpu/prebuilt"
# The production addon and, beside it where the tests look, the test module (g2l/testing.h entries).
cp "$OUT/Release/g2l_engine.node" "$OUT/Release/g2l_engine_testing.node" "$ROOT/.gpu/prebuilt/"
echo "build-cuda-engine: .gpu/prebuilt/g2l_engine.node and g2l_engine_testing.node (sm_$ARCH)"
