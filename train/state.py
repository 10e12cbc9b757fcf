"""Training checkpoints: a loadable model directory plus the state that resumes a run exactly.

Layout of `OUT/checkpoints/step-0000100/`:

    config.json, model.safetensors, tokenizer.json   the model directory (`infill.checkpoint`)
    optimizer.safetensors                            AdamW moments and step counts, by parameter name
    rng.safetensors                                  torch RNG states
    trainer.json                                     step, tokens, loader position, param groups, config

No pickle anywhere. Rules:
- Atomic: everything is written into `.tmp-step-N-*`, flushed to disk, then the directory is renamed
  into place; `trainer.json` is written last, so a directory without it is never resumed from.
  `kill -9` at any moment leaves either the previous checkpoints or the new complete one (stale
  temporary directories are removed at the next start).
- Only the last `keep_last` checkpoints are kept; older ones are deleted after a new one is complete.
- Model and optimizer state are full (unsharded) tensors, so any world size can resume any checkpoint.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from infill.checkpoint import save_checkpoint
from infill.config import ModelConfig
from infill.model import Transformer
from infill.tokenizer import CodeTokenizer

STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINER_FILE = "trainer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
SEP = "::"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := STEP_DIR.match(p.name)) and (p / TRAINER_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_partial(run_dir: str | Path) -> None:
    """Delete temporary directories left by a checkpoint write that was killed."""
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, slots in state.get("state", {}).items():
        for slot, value in slots.items():
            tensors[f"{name}{SEP}{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in state.get("param_groups", [])]
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        name, slot = key.rsplit(SEP, 1)
        state.setdefault(name, {})[slot] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def _fsync_tree(directory: Path) -> None:
    for p in directory.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(run_dir: str | Path, step: int, *, model_config: ModelConfig, model_state: dict,
                     optim_state: dict, tokenizer: CodeTokenizer, trainer: dict, keep_last: int) -> Path:
    """Write checkpoint `step` atomically from full state dicts (call on rank 0); prune old ones."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step-{step:07d}-"))
    try:
        with torch.device("meta"):
            model = Transformer(model_config)
        model.load_state_dict(model_state, strict=True, assign=True)
        if model_config.tie_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        save_checkpoint(tmp, model, tokenizer, extra={"step": step, "tokens": trainer.get("tokens"),
                                                      "train": trainer.get("config")})
        tensors, groups = _flatten_optimizer(optim_state)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / RNG_FILE))
        (tmp / TRAINER_FILE).write_text(json.dumps({**trainer, "step": step, "param_groups": groups}, indent=2))
        _fsync_tree(tmp)
        if final.exists():  # the same step written again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """(model state, optimizer state, trainer.json) of a checkpoint directory; restores the RNG."""
    path = Path(path)
    trainer = json.loads((path / TRAINER_FILE).read_text())
    model_state = load_file(str(path / "model.safetensors"))
    config = ModelConfig.from_dict(json.loads((path / "config.json").read_text())["model"])
    if config.tie_embeddings:
        model_state["lm_head.weight"] = model_state["model.embed_tokens.weight"]
    optim_state = _unflatten_optimizer(load_file(str(path / OPTIMIZER_FILE)), trainer.pop("param_groups"))
    rng = load_file(str(path / RNG_FILE))
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])
    return model_state, optim_state, trainer
