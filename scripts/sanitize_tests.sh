#!/usr/bin/env bash
# Build medtwin._core with AddressSanitizer + UndefinedBehaviorSanitizer in a separate build dir
# and run tests/native against it (the normal editable install is left untouched: the test
# conftest loads the sanitized module when MEDTWIN_CORE_OVERRIDE names it).
# Usage: scripts/sanitize_tests.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BUILD="$ROOT/build/sanitize"
SAN="${MEDTWIN_SANITIZE:-address,undefined}"
PYBIND11_DIR="$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMEDTWIN_SANITIZE="$SAN" -Dpybind11_DIR="$PYBIND11_DIR" -DPython_EXECUTABLE="$PY" >/dev/null
cmake --build "$BUILD" -j "${JOBS:-2}"
SO="$(ls "$BUILD"/_core*.so)"
ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
export MEDTWIN_CORE_OVERRIDE="$SO"
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
# Python itself is not instrumented: no leak checking; stop at the first error of ours.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd "$ROOT"
echo "sanitized module: $SO ($SAN)"
"$PY" -m pytest tests/native -q -p no:cacheprovider "$@"
