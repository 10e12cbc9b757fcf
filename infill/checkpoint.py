"""Checkpoint directories: `config.json`, `model.safetensors`, `tokenizer.json`. Never pickle.

A checkpoint is the one thing that travels from the trainer to the language server. Loading checks
every file and reports a problem as one `CheckpointError` line that names the file; the config's sizes
are checked against `infill.config.LIMITS` and the memory they will take against the machine's
(`check_memory`, also for Hugging Face directories) before any tensor is read or allocated. `export_hf`
writes the same weights as a Hugging Face Llama directory (names already match, see `infill.model`).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from infill.config import ModelConfig, available_bytes, check_fits, hf_load_bytes
from infill.model import Transformer, tied_state
from infill.tokenizer import CodeTokenizer, TokenizerError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message is one line naming the file."""


def read_json(path: Path) -> object:
    """The JSON value in `path`, strictly: a number that overflows a float (`1e999999`), `NaN` and
    `Infinity` are refused, and so is nesting deeper than the parser's recursion limit; each problem
    is one `CheckpointError` line naming the file (`OSError` when it cannot be read)."""
    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"the number {text[:40]} is out of range")
        return value

    def constant(name: str):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(path.read_bytes(), parse_float=finite, parse_constant=constant)
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deep to be a model config") from None
    except ValueError as exc:  # JSONDecodeError, a refused number, an integer of over 4300 digits
        raise CheckpointError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _state_for_saving(model: Transformer) -> dict[str, torch.Tensor]:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return tied_state(state, model.config, saving=True)


def save_checkpoint(directory: str | Path, model: Transformer, tokenizer: CodeTokenizer,
                    extra: dict | None = None) -> Path:
    """Write a loadable model directory; `extra` goes into config.json under "infill" (run metadata)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if len(tokenizer) > model.config.vocab_size:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}")
    state = {k: v.cpu() for k, v in _state_for_saving(model).items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    _write_text(directory / TOKENIZER_FILE, tokenizer.to_json())
    config = {"model": model.config.to_dict(), "infill": extra or {}}
    _write_text(directory / CONFIG_FILE, json.dumps(config, indent=2))
    return directory


def load_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint directory holds {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE})")
    data = read_json(path)
    try:
        return ModelConfig.from_dict(data["model"])
    except (KeyError, TypeError, ValueError) as exc:
        kind = type(exc).__name__
        raise CheckpointError(f"{path}: not an infill model config ({kind}: {str(exc).splitlines()[0]})") from None


def check_memory(directory: str | Path, needed: int, device: str | torch.device = "cpu") -> None:
    """`CheckpointError` when the model in `directory` needs more than `device` has available."""
    try:
        check_fits(needed, available_bytes(str(device)), f"{Path(directory) / CONFIG_FILE}: the model")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def check_hf_dir(directory: str | Path, device: str = "cpu", dtype_bytes: int = 4) -> None:
    """The same checks for a Hugging Face model directory, before transformers reads it (a directory
    without config.json is left to transformers, which names the problem; a malformed one is
    refused here, see `read_json`)."""
    path = Path(directory) / CONFIG_FILE
    try:
        data = read_json(path)
    except OSError:
        return
    if not isinstance(data, dict):
        return
    try:
        needed = hf_load_bytes(data, dtype_bytes)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    check_memory(directory, needed, device)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HF_CODE_FILES = ("config.json", "tokenizer_config.json")
"""Files of a Hugging Face directory whose `auto_map` names code for transformers to import."""


def check_hf_files(directory: Path) -> None:
    """`CheckpointError` (one line) for a Hugging Face directory that would run its own code (an
    `auto_map` in config.json or tokenizer_config.json: transformers imports the named module, and
    asks "[y/N]" first only when it can) or whose weights are pickle only (unpickling runs code):
    infill runs no model's code and reads weights from safetensors alone."""
    for name in HF_CODE_FILES:
        try:
            data = read_json(directory / name)
        except OSError:
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            names = ", ".join(sorted(data["auto_map"]))[:120] if isinstance(data["auto_map"], dict) else "?"
            raise CheckpointError(f"{directory / name}: asks transformers to run custom code (auto_map: {names}); "
                                  "infill never runs a model directory's code")
    files = [p.name for p in directory.iterdir() if p.is_file()]
    if not any(f.endswith(".safetensors") for f in files):
        pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(f"{directory / pickles[0]}: pickle weights and no .safetensors file; infill loads "
                                  "safetensors only (unpickling can run code): convert them with the safetensors "
                                  "library first")


def load_checkpoint(directory: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[Transformer, CodeTokenizer]:
    """(model in eval mode, tokenizer) from a checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory")
    config = load_config(directory)
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    check_memory(directory, config.load_bytes(dtype_bytes), device)
    try:
        tokenizer = CodeTokenizer.load(directory / TOKENIZER_FILE)
    except TokenizerError as exc:
        raise CheckpointError(str(exc)) from None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({str(exc).splitlines()[0]})") from None
    with torch.device("meta"):
        model = Transformer(config)
    expected = _state_for_saving(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not match {CONFIG_FILE} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{weights}: {name} has shape {tuple(tensor.shape)}, "
                                  f"config wants {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(f"{directory / TOKENIZER_FILE}: {len(tokenizer)} tokens exceed the model's "
                              f"vocab_size {config.vocab_size}")
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def copy_checkpoint(directory: str | Path, out: str | Path, *, dtype: str = "float32") -> Path:
    """Write the checkpoint in `directory` to `out` with its weights stored as `dtype` (a torch dtype
    name), keeping the tokenizer and the run metadata; loading converts back (see `load_checkpoint`)."""
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype) or not target.is_floating_point:
        raise CheckpointError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    src, out = Path(directory), Path(out)
    if out.resolve() == src.resolve():
        raise CheckpointError(f"{out}: is the source checkpoint; write to another directory")
    model, tokenizer = load_checkpoint(src, dtype=target)
    extra = json.loads((src / CONFIG_FILE).read_text()).get("infill") or {}
    return save_checkpoint(out, model, tokenizer, extra={**extra, "weights_dtype": dtype})


def export_hf(directory: str | Path, out: str | Path) -> Path:
    """Write checkpoint `directory` as a Hugging Face Llama model directory at `out`."""
    model, tokenizer = load_checkpoint(directory)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hf_config = model.config.to_hf_config(bos_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id,
                                          pad_token_id=tokenizer.pad_id)
    _write_text(out / "config.json", json.dumps(hf_config, indent=2))
    generation = {"bos_token_id": tokenizer.eos_id, "eos_token_id": [tokenizer.eos_id, tokenizer.eom_id],
                  "pad_token_id": tokenizer.pad_id}
    _write_text(out / "generation_config.json", json.dumps(generation, indent=2))
    state = _state_for_saving(model)
    _atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    _write_text(out / TOKENIZER_FILE, tokenizer.to_json())
    for name, text in tokenizer.hf_files().items():
        _write_text(out / name, text)
    return out
