"""Checkpoints you can trust: a manifest, verification on resume with a fallback, pruning that never
leaves a half-deleted checkpoint or removes the last intact one, a stop on NaN, a full disk, kill -9."""
import errno
import json
import os
import random
import select
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infill.checkpoint import load_checkpoint
from infill.cli import main
from infill.config import ModelConfig
from infill.model import Transformer
from train import state
from train import trainer as trainer_mod
from train.config import apply_overrides
from train.recipes import recipe
from train.state import (checkpoint_dirs, file_digest, list_checkpoints, prune, read_checkpoint,
                         remove_partial, resume_point, verify_checkpoint, write_checkpoint)
from train.trainer import TrainingDiverged, train


# direct checkpoints of a tiny model (no training): fast -------------------------------------------

@pytest.fixture(scope="module")
def tiny_state(tiny_tokenizer):
    torch.manual_seed(0)
    config = ModelConfig.from_preset("test-tiny", vocab_size=len(tiny_tokenizer))
    model = Transformer(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    names = {id(p): n for n, p in model.named_parameters()}
    full = opt.state_dict()
    params = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    optim_state = {"state": {params[i]: v for i, v in full["state"].items()},
                   "param_groups": [{**g, "params": [params[i] for i in g["params"]]} for g in full["param_groups"]]}
    model_state = dict(model.state_dict())
    return {"model_config": config, "model_state": model_state, "optim_state": optim_state,
            "tokenizer": tiny_tokenizer}


def _write(run, step, tiny_state, keep_last=10):
    return write_checkpoint(run, step, trainer={"tokens": step, "loader": {}, "config": {}},
                            keep_last=keep_last, **tiny_state)


def _corrupt(path: Path, offset_from_end=300, n=256):
    """Overwrite `n` bytes of tensor data (not the safetensors header) with 0xFF: NaN in fp32."""
    data = bytearray(path.read_bytes())
    start = len(data) - offset_from_end
    data[start:start + n] = b"\xff" * n
    path.write_bytes(bytes(data))


def test_manifest_lists_every_file_with_its_digest(tmp_path, tiny_state):
    ckpt = _write(tmp_path, 1, tiny_state)
    manifest = json.loads((ckpt / "trainer.json").read_text())["manifest"]
    assert set(manifest) == {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors",
                             "rng.safetensors"}
    import hashlib
    for name, entry in manifest.items():
        data = (ckpt / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert verify_checkpoint(ckpt, cached=False) is None


@pytest.mark.parametrize("damage, reason", [
    (lambda c: _corrupt(c / "model.safetensors"), "model.safetensors does not match its SHA-256"),
    (lambda c: (c / "optimizer.safetensors").write_bytes((c / "optimizer.safetensors").read_bytes()[:500]),
     "optimizer.safetensors has 500 bytes"),
    (lambda c: (c / "rng.safetensors").unlink(), "rng.safetensors missing"),
    (lambda c: (c / "tokenizer.json").unlink(), "tokenizer.json missing"),
    (lambda c: (c / "trainer.json").write_text('{"step": 1, "manifest": {'), "trainer.json unreadable"),
])
def test_a_damaged_checkpoint_is_not_complete(tmp_path, tiny_state, damage, reason):
    first = _write(tmp_path, 1, tiny_state)
    second = _write(tmp_path, 2, tiny_state)
    damage(second)
    assert reason in verify_checkpoint(second, cached=False)
    assert list_checkpoints(tmp_path) == [first]
    assert resume_point(tmp_path) == (first, [(second, verify_checkpoint(second, cached=False))])


def test_pruning_never_removes_an_intact_checkpoint_for_damaged_newer_ones(tmp_path, tiny_state):
    # resumed from step 3 because step 6 is damaged; the new step-4 checkpoint is the newest intact
    _write(tmp_path, 3, tiny_state)
    _corrupt(_write(tmp_path, 6, tiny_state) / "model.safetensors")
    _write(tmp_path, 4, tiny_state, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000004"]
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000004", "step-0000006"]
    # with only damaged checkpoints newer, nothing intact goes
    assert prune(tmp_path, keep_last=1) == []
    _corrupt(tmp_path / "checkpoints" / "step-0000004" / "model.safetensors")
    _write(tmp_path, 2, tiny_state, keep_last=1)  # intact, older than both damaged ones
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002"]


def test_pruning_renames_before_deleting(tmp_path, tiny_state, monkeypatch):
    """A deletion that dies half-way leaves a `.del-*` directory, never a half-deleted `step-N`."""
    _write(tmp_path, 1, tiny_state)

    def dies_half_way(path, ignore_errors=False):
        first = sorted(Path(path).iterdir())[0]
        first.unlink()
        raise KeyboardInterrupt  # stands for the kill

    monkeypatch.setattr(state.shutil, "rmtree", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, 2, tiny_state, keep_last=1)
    monkeypatch.undo()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000002"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002"]
    assert any(p.name.startswith(".del-step-0000001") for p in (tmp_path / "checkpoints").iterdir())
    remove_partial(tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000002"]


def test_read_checkpoint_errors_are_one_line(tmp_path, tiny_state):
    ckpt = _write(tmp_path, 1, tiny_state)
    (ckpt / "optimizer.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(state.CheckpointError, match="optimizer.safetensors|cannot resume") as exc:
        read_checkpoint(ckpt)
    assert "\n" not in str(exc.value)
    (ckpt / "rng.safetensors").unlink()
    _write(tmp_path, 2, tiny_state)
    (tmp_path / "checkpoints" / "step-0000002" / "rng.safetensors").unlink()
    with pytest.raises(state.CheckpointError, match="rng.safetensors") as exc:
        read_checkpoint(tmp_path / "checkpoints" / "step-0000002")
    assert "\n" not in str(exc.value)


# kill -9 at random moments, 20 times --------------------------------------------------------------

def _child(run, start, tiny_state, to_parent, from_parent):
    """Write checkpoints forever (keep_last=2: every write prunes one). Each file a deletion removes
    is announced to the parent, which answers before the next one: the parent picks the moment."""
    def rmtree_announced(path, ignore_errors=False):
        files = sorted(Path(path).iterdir(), key=lambda p: (p.name == "trainer.json", p.name))
        for f in files:  # trainer.json last: the order that left "tokenizer.json missing" before
            f.unlink()
            os.write(to_parent, b".")
            os.read(from_parent, 1)
        os.rmdir(path)

    state.shutil.rmtree = rmtree_announced
    remove_partial(run)  # what the trainer does at start
    step = start
    while True:
        _write(run, step, tiny_state, keep_last=2)
        step += 1


def test_kill_9_during_pruning_or_at_random_moments_never_corrupts(tmp_path, tiny_state):
    """20 kills: 10 in the middle of a deletion (after a random number of its files), 10 after a random
    delay. Each is chosen by the parent from the child's own announcements, so a loaded machine
    changes when things happen, not what is checked."""
    rng = random.Random(15)
    newest = mid_deletion = 0
    kinds = ["prune", "random"] * 10
    for kind in kinds:
        to_parent, child_w = os.pipe()
        child_r, from_parent = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                os.close(to_parent)
                os.close(from_parent)
                _child(tmp_path, newest + 1, tiny_state, child_w, child_r)
            finally:
                os._exit(0)
        os.close(child_w)
        os.close(child_r)
        announced, target = 0, rng.randint(1, 12)
        deadline_polls = rng.randint(0, 40)  # "random": polls of 10 ms each before the kill
        polls, last_news = 0, time.monotonic()
        while True:
            ready, _, _ = select.select([to_parent], [], [], 0.01)
            if not ready and time.monotonic() - last_news > 300:  # a stuck child, not a slow one
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the checkpoint-writing child announced nothing for 300 s")
            if ready:
                last_news = time.monotonic()
                if not os.read(to_parent, 1):
                    break
                announced += 1
                if kind == "prune" and announced >= target:
                    mid_deletion += 1
                    break  # the child is blocked half-way through deleting a checkpoint
                os.write(from_parent, b"k")
            else:
                polls += 1
                if kind == "random" and polls >= deadline_polls:
                    break
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(to_parent)
        os.close(from_parent)
        dirs, intact = checkpoint_dirs(tmp_path), list_checkpoints(tmp_path)
        assert dirs == intact, (kind, [(p.name, verify_checkpoint(p, cached=False)) for p in dirs])
        for ckpt in intact:
            assert verify_checkpoint(ckpt, cached=False) is None
            load_checkpoint(ckpt)
            load_file(str(ckpt / "optimizer.safetensors"))
        if intact:
            step = int(intact[-1].name.split("-")[1])
            assert step >= newest
            newest = step
    assert newest > 0 and mid_deletion == 10
    remove_partial(tmp_path)
    assert all(p.name.startswith("step-") for p in (tmp_path / "checkpoints").iterdir())


# through the trainer -------------------------------------------------------------------------------

def _quick(**changes):
    base = ["eval_every=0", "tensorboard=false", "progress=false", "ckpt_every=3", "steps=8", "keep_last=2",
            "batch_tokens=256", "micro_batch=2", "stdlib_modules=4", "model.max_seq_len=128", "seq_len=128"]
    return apply_overrides(recipe("tiny"), base + [f"{k}={v}" for k, v in changes.items()])


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped after step 6 of 8: checkpoints step-3 and step-6 (read-only: copy it)."""
    run = tmp_path_factory.mktemp("run") / "run"
    assert train(_quick(), run, stop_after=6) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-0000003", "step-0000006"]
    return run


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _finite(model_dir):
    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    return all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_resume_falls_back_from_corrupted_weights_and_publishes_a_finite_model(stopped_run, tmp_path, capsys):
    run = _copy(stopped_run, tmp_path)
    _corrupt(run / "checkpoints" / "step-0000006" / "model.safetensors")
    capsys.readouterr()
    assert train(_quick(), run, resume=True) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["infill train: step-0000006 failed verification (model.safetensors does not match its "
                   "SHA-256 in the manifest); resuming from step-0000003"]
    assert [p.name for p in list_checkpoints(run)] == ["step-0000006", "step-0000008"]
    assert _finite(run / "model") and _finite(run / "checkpoints" / "step-0000008")


@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "optimizer.safetensors").write_bytes((c / "optimizer.safetensors").read_bytes()[:1000]),
     "optimizer.safetensors has 1000 bytes"),
    (lambda c: (c / "rng.safetensors").unlink(missing_ok=True), "rng.safetensors missing"),
])
def test_truncated_optimizer_or_missing_rng_fall_back_or_fail_in_one_line(stopped_run, tmp_path, capsys,
                                                                          damage, reason):
    run = _copy(stopped_run, tmp_path)
    damage(run / "checkpoints" / "step-0000006")
    capsys.readouterr()
    argv = ["train", "--out", str(run), "--resume", "--quiet", "--stop-after", "4"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"infill train: step-0000006 failed verification ({reason}")
    assert err[0].endswith("; resuming from step-0000003")
    # with every checkpoint damaged: one line, exit 2, nothing removed
    for ckpt in checkpoint_dirs(run):
        damage(ckpt)
    before = sorted(p.name for p in checkpoint_dirs(run))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no intact checkpoint to resume from" in err[0] and reason in err[0]
    assert "Traceback" not in err[0] and sorted(p.name for p in checkpoint_dirs(run)) == before


def _nan_at(step_wanted, where):
    real = trainer_mod.train_step
    calls = {"n": 0}

    def train_step(module, *args, **kwargs):
        calls["n"] += 1
        loss, gnorm = real(module, *args, **kwargs)
        if calls["n"] == step_wanted:
            if where == "loss":
                return float("nan"), gnorm
            if where == "grad_norm":
                return loss, float("inf")
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))
        return loss, gnorm
    return train_step


@pytest.mark.parametrize("where", ["loss", "grad_norm", "weights"])
def test_non_finite_values_stop_without_a_checkpoint_or_a_model(tmp_path, monkeypatch, where):
    monkeypatch.setattr(trainer_mod, "train_step", _nan_at(6, where))
    with pytest.raises(TrainingDiverged) as exc:
        train(_quick(ckpt_every=2, keep_last=5), tmp_path)
    message = str(exc.value)
    assert "\n" not in message and "at step 6" in message and "step-0000004" in message
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000002", "step-0000004"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002", "step-0000004"]
    assert not (tmp_path / "model").exists()


def test_non_finite_loss_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer_mod, "train_step", _nan_at(2, "loss"))
    argv = ["train", "--recipe", "tiny", "--out", str(tmp_path / "r"), "--quiet", "--set", "steps=4",
            "--set", "ckpt_every=1", "--set", "eval_every=0", "--set", "stdlib_modules=4",
            "--set", "batch_tokens=512", "--set", "micro_batch=2", "--set", "tensorboard=false"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss nan at step 2" in err[0] and "Traceback" not in err[0]
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000001"]
    assert not (tmp_path / "r" / "model").exists()


def test_a_full_disk_is_one_line_and_earlier_checkpoints_survive(tmp_path, monkeypatch, capsys):
    real = state.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint's optimizer and rng files are written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(state, "save_file", save_file)
    argv = ["train", "--recipe", "tiny", "--out", str(tmp_path / "r"), "--quiet", "--set", "steps=4",
            "--set", "ckpt_every=1", "--set", "eval_every=0", "--set", "stdlib_modules=4",
            "--set", "batch_tokens=512", "--set", "micro_batch=2", "--set", "tensorboard=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "Traceback" not in err[0]
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000001"]
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-0000001"]
    assert not (tmp_path / "r" / "model").exists()
    assert file_digest(tmp_path / "r" / "checkpoints" / "step-0000001" / "model.safetensors")["bytes"] > 0
