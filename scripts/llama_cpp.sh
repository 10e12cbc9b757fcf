#!/usr/bin/env bash
# Build llama-cpp-python (llama.cpp's Python bindings and its OpenAI-compatible server) from its
# PyPI source for CPU, once, into a cache folder outside the repository, then install the wheel
# (and the pinned server extra) into the venv. A re-run with the wheel cached only installs it.
#
#   scripts/llama_cpp.sh            # build if needed, install into $VENV (default: .venv)
#   INFILL_CACHE=/path scripts/llama_cpp.sh
#
# The build compiles llama.cpp itself and takes 20-40 minutes on two cores; it runs under
# `nice -n 10` with CMAKE_BUILD_PARALLEL_LEVEL=2 so it does not starve the machine. The tests
# that need it (tests/test_llama_cpp.py) are marked slow and skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^llama_cpp_python==//p' constraints.txt)
[ -n "$VERSION" ] || { echo "llama_cpp.sh: no llama_cpp_python pin in constraints.txt" >&2; exit 2; }
CACHE=${INFILL_CACHE:-$HOME/.cache/infill}/llama-cpp
VENV=${VENV:-.venv}
PIP="$VENV/bin/python -m pip"
mkdir -p "$CACHE"
WHEEL=$(ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
    echo "llama_cpp.sh: building llama-cpp-python $VERSION for CPU into $CACHE (20-40 min)"
    # Build deps come from PyPI in an isolated env; only llama.cpp's own sources are compiled.
    # LLAVA (multimodal) is not needed; skipping it saves a third of the build.
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
        nice -n 10 $PIP wheel --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -w "$CACHE/tmp"
    mv "$CACHE"/tmp/llama_cpp_python-"$VERSION"-*.whl "$CACHE"/
    rmdir "$CACHE/tmp" 2>/dev/null || true
    WHEEL=$(ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl | head -n1)
fi
# The wheel plus its server extra (uvicorn, fastapi, sse-starlette...), every one pinned.
$PIP install --quiet -c constraints.txt "$WHEEL[server]"
echo "installed: $($VENV/bin/python -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__)')"
