#!/usr/bin/env bash
# Create .venv and install infill with every extra, pinned by constraints.txt (CPU torch on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and alone: with it in place, nothing else can pull a CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt torch
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
echo "installed into .venv: $(.venv/bin/python -c 'import torch, infill; print("torch", torch.__version__)')"
