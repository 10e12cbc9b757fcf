"""Finding and loading the model a command or the language server should use.

Lookup order, everywhere: an explicit `--model`, then the `INFILL_MODEL` environment variable, then the
built-in default model shipped inside the package (`infill/default_model/`), if it is there.

What the name is decides the engine (`infill.engines`; `ENGINES` maps each kind to its class, and
each class loads itself with `load(name, device=, cache_mb=, template=)`, so an engine is one module
and one line there):
- `openai:URL`: an OpenAI-compatible completions server (`OpenAIEngine`), or with the `llama-infill`
  template (`openai:URL#llama-infill`) llama.cpp's native `/infill` (`LlamaInfillEngine`);
- a directory whose config.json is an infill config (or that has no config.json, which gives the
  checkpoint loader's one-line error): an infill checkpoint (`LocalEngine`);
- any other directory, or a name that is not a path: a Hugging Face model directory or a hub name in
  the local cache (`HFEngine`; nothing is downloaded).
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from infill.checkpoint import read_json

ENGINES = {
    "infill": "infill.engines.local:LocalEngine",
    "hf": "infill.engines.hf:HFEngine",
    "openai": "infill.engines.openai:OpenAIEngine",
    "openai#llama-infill": "infill.engines.llama_infill:LlamaInfillEngine",
}
"""Engine kinds (`engine_kind`) and the class that serves each, imported only when used."""
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


def engine_kind(name: str, template: str | None = None) -> str:
    """Which engine (a key of `ENGINES`) serves the model `name`: for a server URL (`openai:`),
    "openai#TEMPLATE" where an engine speaks that template's own endpoint (`llama-infill`), else
    "openai"; "infill" or "hf"."""
    if name.startswith(REMOTE_PREFIXES):
        kind = f"openai#{template or name.partition('#')[2]}"
        return kind if kind in ENGINES else "openai"
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            return "infill"
        try:
            data = read_json(config)
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
    module, _, cls = ENGINES[engine_kind(model, template)].partition(":")
    engine = getattr(importlib.import_module(module), cls)
    return engine.load(model, device=device, cache_mb=cache_mb, template=template)
