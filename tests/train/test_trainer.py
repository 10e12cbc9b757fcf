"""The training loop: schedule, optimizer groups, exact resume, checkpoints, signals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infill.checkpoint import load_checkpoint
from infill.config import ModelConfig
from infill.model import Transformer
from train.config import TrainConfig, apply_overrides
from train.logs import read_log
from train.recipes import RECIPES, recipe
from train.state import list_checkpoints
from train.trainer import configure_optimizer, get_lr, train

ROOT = Path(__file__).resolve().parents[2]


def _quick(**changes) -> TrainConfig:
    base = ["eval_every=0", "tensorboard=false", "progress=false", "ckpt_every=0", "steps=20",
            "batch_tokens=512", "micro_batch=2", "stdlib_modules=8", "model.max_seq_len=128", "seq_len=128"]
    return apply_overrides(recipe("tiny"), base + [f"{k}={v}" for k, v in changes.items()])


def test_lr_schedules():
    c = _quick(warmup_steps=4, steps=20, lr=1.0, min_lr_ratio=0.1)
    assert [get_lr(s, c) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert get_lr(19, c) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(15 / 16 * 3.141592653589793)).item()))
    lrs = [get_lr(s, c) for s in range(4, 20)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    w = _quick(warmup_steps=2, steps=20, lr=1.0, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.25)
    assert [get_lr(s, w) for s in range(2, 15)] == [1.0] * 13
    assert [get_lr(s, w) for s in range(15, 20)] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])


def test_weight_decay_skips_norms_biases_and_embeddings():
    model = Transformer(ModelConfig.from_preset("test-tiny", tie_embeddings=False))
    opt = configure_optimizer(model, _quick(), torch.device("cpu"))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert "lm_head.weight" in names and "model.layers.0.mlp.up_proj.weight" in names
    assert not any("norm" in n or "embed" in n for n in names)
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_bad_config_values_are_value_errors():
    for item in ("steps=0", "seq_len=100", "objective.l2r_rate=0.9", "schedule=linear", "nope=1", "model.dimm=3"):
        with pytest.raises(ValueError):
            apply_overrides(_quick(), [item])
    for name in RECIPES:
        assert isinstance(recipe(name), TrainConfig)


def test_resume_is_exact(tmp_path):
    """20 steps == 10 steps + --resume + 10 steps (fp32, CPU)."""
    config = _quick()
    assert train(config, tmp_path / "full") == 0
    assert train(config, tmp_path / "split", stop_after=10) == 0
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["step-0000010"]
    assert train(config, tmp_path / "split", resume=True) == 0
    full, split = read_log(tmp_path / "full")["train"], read_log(tmp_path / "split")["train"]
    assert [r["step"] for r in split] == list(range(1, 21))
    for a, b in zip(full, split):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])
    wa = load_file(str(tmp_path / "full/model/model.safetensors"))
    wb = load_file(str(tmp_path / "split/model/model.safetensors"))
    for name in wa:
        assert (wa[name] - wb[name]).abs().max() <= 1e-6, name
    # resuming loaded the exact optimizer moments too: the step-20 states match
    oa = load_file(str(list_checkpoints(tmp_path / "full")[-1] / "optimizer.safetensors"))
    ob = load_file(str(list_checkpoints(tmp_path / "split")[-1] / "optimizer.safetensors"))
    assert oa.keys() == ob.keys() and all(torch.allclose(oa[k], ob[k], atol=1e-7) for k in oa)
    # a fresh run into a used directory is refused
    with pytest.raises(ValueError, match="--resume"):
        train(config, tmp_path / "full")


def test_checkpoints_are_model_dirs_keep_last_and_hold_state(tmp_path):
    config = _quick(steps=8, ckpt_every=3, keep_last=2, eval_every=4, eval_infill=2, eval_bpb_docs=2,
                    eval_rows=2, eval_max_tokens=8, tensorboard="true")
    assert train(config, tmp_path) == 0
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["step-0000006", "step-0000008"]
    model, tok = load_checkpoint(ckpts[-1])
    assert model.config.max_seq_len == 128 and len(tok) <= model.config.vocab_size
    state = json.loads((ckpts[-1] / "trainer.json").read_text())
    assert state["step"] == 8 and state["tokens"] == 8 * 512
    assert set(state["loader"]) == {"epoch", "shard", "record", "chunk", "offset"}
    assert TrainConfig.from_dict(state["config"]) == config
    load_checkpoint(tmp_path / "model")
    evals = read_log(tmp_path)["eval"]
    assert [e["step"] for e in evals] == [4, 8]
    assert set(evals[0]) >= {"val_loss", "bpb", "infill_em"} and evals[0]["bpb"]["python"] > 0
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
    assert list((tmp_path / "tb").iterdir())


def _cli(out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "infill.cli", "train", "--recipe", "tiny", "--out", str(out), "--quiet",
           "--set", "steps=100000", "--set", "eval_every=0", "--set", "stdlib_modules=8", "--set", "ckpt_every=3",
           "--set", "batch_tokens=1024", "--set", "micro_batch=4",
           *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for_steps(out, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = Path(out) / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        time.sleep(0.2)
    raise AssertionError("training did not start")


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = _cli(tmp_path)
    _wait_for_steps(tmp_path, 4, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by signal" in err and "Traceback" not in err
    last = list_checkpoints(tmp_path)[-1]
    step = json.loads((last / "trainer.json").read_text())["step"]
    logged = read_log(tmp_path)["train"][-1]["step"]
    assert step == logged >= 4  # the checkpoint is of the last finished step, not an older one
    load_checkpoint(last)


def test_kill_9_never_leaves_a_corrupt_checkpoint(tmp_path):
    proc = _cli(tmp_path, "--set", "ckpt_every=1")
    _wait_for_steps(tmp_path, 6, proc)
    proc.kill()
    proc.communicate()
    for ckpt in list_checkpoints(tmp_path):
        load_checkpoint(ckpt)
        load_file(str(ckpt / "optimizer.safetensors"))
        json.loads((ckpt / "trainer.json").read_text())
    assert list_checkpoints(tmp_path)
    # a resumed run cleans any half-written temporary directory and continues from the last checkpoint
    (tmp_path / "checkpoints" / ".tmp-step-0000099-x").mkdir()
    step = json.loads((list_checkpoints(tmp_path)[-1] / "trainer.json").read_text())["step"]
    assert train(apply_overrides(_quick(), []), tmp_path, resume=True, stop_after=step + 1,
                 overrides=["progress=false"]) == 0
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
    assert json.loads((list_checkpoints(tmp_path)[-1] / "trainer.json").read_text())["step"] == step + 1


def test_in_training_exact_match_asks_the_served_engine(tiny_model, tiny_tokenizer):
    """The trainer's infill exact match is the server's answer: prompt fitting, token healing (here
    prefixes that end inside a word, which the old id-level decode never healed), stop rule and loop."""
    from infill.engines import GenerationConfig, InfillRequest
    from infill.engines.local import LocalEngine
    from train.trainer import EvalSet, evaluate

    config = TrainConfig(eval_max_tokens=12)
    served = LocalEngine(tiny_model, tiny_tokenizer)
    spans = []
    for prefix in ("def add(a, b):\n    return a", "import os\n\npath = os.pa", "for i in ran"):
        answer = served.infill(InfillRequest(prefix, "\n", GenerationConfig(max_tokens=12), stop=("\n",), ext=".py"))
        spans += [(prefix, "\n", ".py", answer.text + "\n"), (prefix, "\n", ".py", answer.text + "x\n")]
    evalset = EvalSet(spans=spans, fmt=tiny_model.config.prompt_format)
    result = evaluate(tiny_model, tiny_model, evalset, tiny_tokenizer, config, torch.device("cpu"), None, False)
    assert result["infill_em"] == 0.5
