"""torchrun with 2 processes (gloo, CPU) computes the same steps as one process for the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infill.checkpoint import load_checkpoint
from train.logs import read_log
from train.state import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["steps=4", "eval_every=2", "eval_infill=1", "eval_rows=2", "eval_max_tokens=8", "eval_bpb_docs=2", "stdlib_modules=8",
            "batch_tokens=1024", "micro_batch=2", "seq_len=128", "model.max_seq_len=128", "tensorboard=false",
            "ckpt_every=0"]


def _run(out, nproc, *extra):
    args = ["-m", "infill.cli", "train", "--recipe", "tiny", "--out", str(out), "--quiet"]
    for item in SETTINGS + list(extra):
        args += ["--set", item]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] + args
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_log(out)


@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one(tmp_path, mode):
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2, f"parallel={mode}")
    assert [r["step"] for r in two["train"]] == [1, 2, 3, 4]
    for a, b in zip(one["train"], two["train"]):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    for a, b in zip(one["eval"], two["eval"]):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5
    # the checkpoint written by rank 0 holds the full (unsharded) model
    model, _ = load_checkpoint(list_checkpoints(tmp_path / "two")[-1])
    assert json.loads((tmp_path / "two/checkpoints/step-0000004/trainer.json").read_text())["step"] == 4
    assert model.config.n_layer == 2
