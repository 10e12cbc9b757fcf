"""Finding and loading the model a command or the language server should use.

Lookup order, everywhere: an explicit `--model`, then the `INFILL_MODEL` environment variable, then the
built-in default model shipped inside the package (`infill/default_model/`), if it is there.

What the name is decides the engine (`infill.engines`):
- `openai:URL`: an OpenAI-compatible completions server (`OpenAIEngine`);
- a directory whose config.json is an infill config (or that has no config.json, which gives the
  checkpoint loader's one-line error): an infill checkpoint (`LocalEngine`);
- any other directory, or a name that is not a path: a Hugging Face model directory or a hub name in
  the local cache (`HFEngine`; nothing is downloaded).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from infill.engines.local import LocalEngine

DEFAULT_MODEL_DIR = Path(__file__).parent.parent / "default_model"
ENV_VAR = "INFILL_MODEL"
REMOTE_PREFIXES: tuple[str, ...] = tuple(json.loads((Path(__file__).parent / "remote.json").read_text())["prefixes"])
"""Model names served by another program (`remote.json`, the list the VS Code extension reads too)."""


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


def engine_kind(name: str) -> str:
    """"openai", "infill" or "hf": which engine serves the model `name`."""
    if name.startswith(REMOTE_PREFIXES):
        return "openai"
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            return "infill"
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            return "infill"  # the checkpoint loader names the broken file
        return "infill" if isinstance(data, dict) and isinstance(data.get("model"), dict) else "hf"
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        return "infill"  # a path that is not a directory: the checkpoint loader says so
    return "hf"


def load_engine(name: str | None = None, *, device: str = "auto", cache_mb: float = 256.0,
                template: str | None = None):
    """An engine (`infill.engines.Engine`) for the model `name` resolves to. `template` sets the FIM
    template of a Hugging Face model or a server (default: detected, or `infill` for a server)."""
    model = resolve_model(name)
    kind = engine_kind(model)
    if kind == "openai":
        from infill.engines.openai import OpenAIEngine

        return OpenAIEngine(model.partition(":")[2], template=template)
    if kind == "hf":
        from infill.checkpoint import check_hf_dir
        from infill.engines.local import resolve_device
        from infill.engines.hf import HFEngine

        if Path(model).expanduser().is_dir():  # sizes and memory checked before transformers allocates
            device = resolve_device(device)
            check_hf_dir(Path(model).expanduser(), device, 2 if device.startswith("cuda") else 4)

        return HFEngine.from_pretrained(model, device=device, template=template, cache_mb=cache_mb)
    return LocalEngine.from_dir(model, device=device, cache_mb=cache_mb)
