#!/usr/bin/env bash
# The test suite CI runs: everything but GPU-only and slow tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -m "not gpu and not slow" --timeout=900 -q "$@"
