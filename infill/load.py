"""Finding and loading the model a command or the language server should use.

Lookup order, everywhere: an explicit `--model`, then the `INFILL_MODEL` environment variable, then the
built-in default model shipped inside the package (`infill/default_model/`), if it is there.
"""
from __future__ import annotations

import os
from pathlib import Path

from infill.engine import LocalEngine

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
ENV_VAR = "INFILL_MODEL"


class ModelNotFound(ValueError):
    """No model was named and no default is installed."""


def resolve_model(name: str | None = None) -> str:
    """The model to use: `name`, else $INFILL_MODEL, else the built-in default."""
    if name:
        return name
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return str(DEFAULT_MODEL_DIR)
    raise ModelNotFound(f"no model given: pass --model DIR (an infill checkpoint directory) or set {ENV_VAR}; "
                        "this install has no built-in default model")


def load_engine(name: str | None = None, *, device: str = "auto", cache_mb: float = 256.0) -> LocalEngine:
    """An engine for the model `name` resolves to."""
    return LocalEngine.from_dir(resolve_model(name), device=device, cache_mb=cache_mb)
