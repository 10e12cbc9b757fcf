#!/usr/bin/env bash
# One command for a first GPU (docs/train.md): GPU tests and the attention benchmark, a corpus from this
# machine's installed packages, the tokenizer, ~6 minutes of bf16 compiled training with the Triton
# attention, a sharded export, and one JSON of every figure, all in OUT (at most 8 files).
#
#   scripts/gpu_oneshot.sh OUT              # on the GPU machine, ~9 minutes
#   scripts/gpu_oneshot.sh OUT --rehearse   # the same code path on a CPU, in seconds (CI runs it)
#
# PYTHON picks the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m train.oneshot "$@"
