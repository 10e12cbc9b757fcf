"""scripts/gpu_oneshot.sh: the rehearsal runs every stage on the CPU; the export fits its limits."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infill.checkpoint import load_checkpoint
from train.oneshot import EXPORT_FILES, OUT_FILES, SHARD_BYTES, OneshotError, export, join_export, main

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["gpu_tests", "corpus", "tokenizer", "train", "export"]


def _run(*args, timeout=900):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(ROOT / "scripts/gpu_oneshot.sh"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_rehearsal_runs_every_stage(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    p = _run(out, "--rehearse", "--work", work)
    assert p.returncode == 0, p.stderr[-2000:]
    files = sorted(f.name for f in out.iterdir())
    assert len(files) <= OUT_FILES and {"oneshot.json", "oneshot.log", "config.json", "tokenizer.json"} <= set(files)
    result = json.loads((out / "oneshot.json").read_text())
    assert result["ok"] and result["rehearse"]
    assert list(result["stages"]) == STAGES and all(v >= 0 for v in result["stages"].values())
    assert result["total_s"] >= sum(result["stages"].values()) - 1
    assert result["gpu"]["tests"]["exit"] == 0 and "attention_bench" in result["gpu"]
    assert result["corpus"]["files_kept"] > 0 and result["tokenizer"]["vocab_size"] == 1024
    train = result["train"]
    assert train["attention"] == {"backend": "sdpa", "fallback": None}  # no CUDA: SDPA by design
    assert train["steps"] == len(train["loss_curve"]) >= 2 and train["tokens_per_s"] > 0
    assert train["config"]["time_budget"] == "4s" and train["config"]["params"] > 0
    assert train["loss_curve"][-1][1] < train["loss_curve"][0][1]
    exported = result["export"]["files"]
    assert len(exported) <= EXPORT_FILES and max(exported.values()) <= SHARD_BYTES
    assert sum((out / name).stat().st_size for name in exported) == result["export"]["bytes"]
    # back here: the shards as one model, equal to the trained model in bf16
    joined = join_export(out, tmp_path / "model")
    model, tok = load_checkpoint(joined)
    ref, _ = load_checkpoint(work / "run" / "model", dtype=torch.bfloat16)
    ids = torch.tensor([tok.encode("def add(a, b):\n    return a + b\n")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref.float()(ids), rtol=0, atol=0)

def test_used_out_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_text("x")
    assert main([str(tmp_path), "--rehearse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert (tmp_path / "model.safetensors").read_text() == "x"  # nothing touched


def test_export_shards_and_limits(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    info = export(Path(tiny_checkpoint), out)
    assert set(info["files"]) == {"config.json", "tokenizer.json", "model-00001-of-00001.safetensors"}
    # a tensor over 15 MiB in bf16 cannot be exported
    big = tmp_path / "big"
    big.mkdir()
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4096, 2048)}, str(big / "model.safetensors"))
    with pytest.raises(OneshotError, match="15 MiB"):
        export(big, tmp_path)
    with pytest.raises(OneshotError, match="no oneshot export"):
        join_export(big, tmp_path / "joined")
