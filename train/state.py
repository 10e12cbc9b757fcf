"""Training checkpoints: a loadable model directory plus the state that resumes a run exactly.

Layout of `OUT/checkpoints/step-0000100/`:

    config.json, model.safetensors, tokenizer.json   the model directory (`infill.checkpoint`)
    optimizer.safetensors                            AdamW moments and step counts, by parameter name
    rng.safetensors                                  torch RNG states
    trainer.json                                     step, tokens, loader position, param groups, config

No pickle anywhere. Rules:
- A manifest in `trainer.json` lists every other file with its SHA-256 and size. A checkpoint is
  complete only when `trainer.json` reads and every listed file is present and matches
  (`verify_checkpoint`); nothing else is listed, resumed from or published.
- Atomic: everything is written into `.tmp-step-N-*`, flushed to disk, then the directory is renamed
  into place; `trainer.json` is written last. `kill -9` at any moment leaves either the previous
  checkpoints or the new complete one.
- Pruning keeps the newest `keep_last` intact checkpoints and removes the older ones, each renamed
  to `.del-step-N-*` first and then deleted, so a kill in the middle of a deletion leaves no
  half-deleted `step-N`. An intact checkpoint is never removed while only damaged ones are newer.
  Stale `.tmp-*` and `.del-*` directories are removed at the next start.
- Model and optimizer state are full (unsharded) tensors, so any world size can resume any checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from infill.checkpoint import CheckpointError, save_checkpoint
from infill.config import ModelConfig
from infill.model import Transformer, tied_state
from infill.tokenizer import CodeTokenizer

STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINER_FILE = "trainer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
SEP = "::"
MANIFEST = "manifest"
_CHUNK = 1 << 20
# Checkpoints verified by this process: path -> the (name, size, mtime, inode) of each file then.
# A file rewritten since (even in place, with the same size) has another mtime and is hashed again.
_verified: dict[str, tuple] = {}


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Every `step-N` directory of a run, intact or not, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def file_digest(path: str | Path) -> dict:
    """{"sha256": hex digest, "bytes": size} of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


def _signature(path: Path, names) -> tuple:
    out = []
    for name in sorted(names):
        st = os.stat(path / name)
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def verify_checkpoint(path: str | Path, *, cached: bool = True) -> str | None:
    """None when the checkpoint is complete, else the reason in a few words (naming the file).

    Complete: `trainer.json` reads, has a manifest, and every file it lists is present with the
    listed size and SHA-256. With `cached`, a checkpoint this process wrote or verified, whose files
    have not changed since (size, mtime, inode), is not hashed again; resuming never uses the cache.
    """
    path = Path(path)
    try:
        trainer = json.loads((path / TRAINER_FILE).read_text())
    except FileNotFoundError:
        return f"{TRAINER_FILE} missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{TRAINER_FILE} unreadable ({type(exc).__name__})"
    manifest = trainer.get(MANIFEST) if isinstance(trainer, dict) else None
    if not isinstance(manifest, dict) or not manifest:
        return f"{TRAINER_FILE} has no manifest (written by an older version)"
    try:
        signature = _signature(path, manifest)
    except OSError:
        missing = sorted(n for n in manifest if not (path / n).is_file())
        return f"{missing[0] if missing else 'a file'} missing"
    if cached and _verified.get(str(path)) == signature:
        return None
    for name, want in sorted(manifest.items()):
        size = (path / name).stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes, the manifest says {want.get('bytes')}"
        try:
            got = file_digest(path / name)
        except OSError as exc:
            return f"{name} unreadable ({exc.strerror or exc})"
        if got["sha256"] != want.get("sha256"):
            return f"{name} does not match its SHA-256 in the manifest"
    _verified[str(path)] = signature
    return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete (verified) checkpoints of a run, oldest first."""
    return [p for p in checkpoint_dirs(run_dir) if verify_checkpoint(p) is None]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resume_point(run_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(newest complete checkpoint or None, [(newer damaged checkpoint, reason)], newest first)."""
    damaged = []
    for p in reversed(checkpoint_dirs(run_dir)):
        reason = verify_checkpoint(p, cached=False)
        if reason is None:
            return p, damaged
        damaged.append((p, reason))
    return None, damaged


def _discard(path: Path) -> None:
    """Rename `path` out of the `step-N` namespace, then delete it: a kill between the two, or
    during the deletion, leaves a `.del-*` directory that nothing lists and the next start removes."""
    trash = path.parent / f".del-{path.name}-{os.urandom(4).hex()}"
    os.rename(path, trash)
    _verified.pop(str(path), None)
    shutil.rmtree(trash, ignore_errors=True)


def prune(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Remove every checkpoint older than the `keep_last`-th newest complete one; returns them.

    Damaged checkpoints newer than that are left alone (and never counted), so an intact
    checkpoint is never removed while only damaged ones are newer.
    """
    intact, doomed = 0, []
    for p in reversed(checkpoint_dirs(run_dir)):
        if intact >= keep_last:
            doomed.append(p)
        elif verify_checkpoint(p) is None:
            intact += 1
    for p in doomed:
        _discard(p)
    return doomed


def remove_partial(run_dir: str | Path) -> None:
    """Delete directories left by a checkpoint write (`.tmp-*`) or deletion (`.del-*`) that was killed."""
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".del-")):
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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for p in directory.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(directory)


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
        model.tie_weights()
        save_checkpoint(tmp, model, tokenizer, extra={"step": step, "tokens": trainer.get("tokens"),
                                                      "train": trainer.get("config")})
        tensors, groups = _flatten_optimizer(optim_state)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / RNG_FILE))
        manifest = {p.name: file_digest(p) for p in sorted(tmp.iterdir())}
        (tmp / TRAINER_FILE).write_text(json.dumps({**trainer, "step": step, "param_groups": groups,
                                                    MANIFEST: manifest}, indent=2))
        _fsync_tree(tmp)
        if final.exists():  # the same step written again (e.g. after a resume): replace it
            _discard(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _verified[str(final)] = _signature(final, manifest)
    prune(run_dir, keep_last)
    return final


def read_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """(model state, optimizer state, trainer.json) of a checkpoint directory; restores the RNG.

    A file that is missing or does not parse raises `CheckpointError` (one line naming it).
    """
    path = Path(path)
    try:
        return _read_checkpoint(path)
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        if isinstance(exc, OSError):
            where, detail = f"{exc.filename or path}: ", exc.strerror or str(exc)
        else:
            where, detail = f"{path}: ", (str(exc).splitlines() or [""])[0]
        raise CheckpointError(f"{where}cannot resume ({type(exc).__name__}: {detail})") from None


def _read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    trainer = json.loads((path / TRAINER_FILE).read_text())
    trainer.pop(MANIFEST, None)
    model_state = load_file(str(path / "model.safetensors"))
    config = ModelConfig.from_dict(json.loads((path / "config.json").read_text())["model"])
    model_state = tied_state(model_state, config, saving=False)
    optim_state = _unflatten_optimizer(load_file(str(path / OPTIMIZER_FILE)), trainer.pop("param_groups"))
    rng = load_file(str(path / RNG_FILE))
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])
    return model_state, optim_state, trainer
