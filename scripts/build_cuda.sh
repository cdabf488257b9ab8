#!/usr/bin/env bash
# Configure and compile the engine with its CUDA kernels (-DMEDTWIN_CUDA=ON) in build/cuda.
# Needs nvcc only (no GPU): the kernels are compiled, not run. Usage: scripts/build_cuda.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
PYBIND11_DIR="$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
cmake -S "$ROOT" -B "$ROOT/build/cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMEDTWIN_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -Dpybind11_DIR="$PYBIND11_DIR" -DPython_EXECUTABLE="$PY"
cmake --build "$ROOT/build/cuda" -j "${JOBS:-2}"
echo "CUDA build OK: $(ls "$ROOT"/build/cuda/_core*.so)"
