"""Time-budgeted training: duration parsing, decay placement, the run ending on time and decayed."""
import time

import pytest

from train.budget import BudgetPlan, parse_duration
from train.config import apply_overrides
from train.logs import read_log
from train.recipes import recipe
from train.state import list_checkpoints
from train.trainer import get_lr, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _quick(*items):
    base = ["eval_every=0", "tensorboard=false", "progress=false", "ckpt_every=0", "batch_tokens=256",
            "micro_batch=2", "stdlib_modules=8", "model.max_seq_len=128", "seq_len=128", "warmup_steps=2",
            "schedule=wsd", "decay_fraction=0.5", "lr=1e-3", "min_lr_ratio=0.1"]
    return apply_overrides(recipe("tiny"), base + list(items))


def test_parse_duration():
    assert parse_duration("300s") == 300
    assert parse_duration("90m") == 5400
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2.5") == 2.5
    for bad in ("", "5x", "m5", "0s", "-3", "1h 30m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_bad_budget_config_is_a_value_error():
    with pytest.raises(ValueError, match="duration"):
        _quick("time_budget=soon")
    with pytest.raises(ValueError, match="wsd"):
        _quick("time_budget=10s", "schedule=cosine")


def test_decay_is_placed_from_the_measured_rate():
    plan = BudgetPlan(budget_s=100.0, decay_fraction=0.2, warmup_steps=5)
    plan.update(step=10, elapsed_s=50.0, rate=0.2)
    assert plan.decay_start is None and not plan.done(10**6)
    plan.update(step=40, elapsed_s=80.0, rate=0.5)  # 20 s left at 0.5 steps/s: 10 more steps
    assert (plan.decay_start, plan.end_step) == (40, 50)
    plan.update(step=45, elapsed_s=90.0, rate=5.0)  # placed once
    assert (plan.decay_start, plan.end_step) == (40, 50)
    config = _quick("time_budget=100s", "lr=1.0", "min_lr_ratio=0.0")
    lrs = [get_lr(s, config, plan) for s in range(40, 50)]
    assert lrs == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert get_lr(39, config, plan) == 1.0 and get_lr(0, config, plan) == 0.5  # warm-up, then flat
    assert plan.done(50) and not plan.done(49)


def _check_run(records, config, budget_s):
    lrs = [r["lr"] for r in records]
    assert lrs[-1] == pytest.approx(config.lr * config.min_lr_ratio, rel=1e-9)
    assert max(lrs) == pytest.approx(config.lr)
    peak_at = lrs.index(max(lrs))
    assert all(a >= b - 1e-15 for a, b in zip(lrs[peak_at:], lrs[peak_at + 1:]))  # flat, then decaying
    assert sum(lr < config.lr for lr in lrs[peak_at:]) >= 2  # the decay took more than one step
    # ends on time: generous slack for a loaded machine (the decay is placed from the measured rate)
    assert budget_s * 0.5 <= records[-1]["elapsed_s"] <= budget_s + 20


def test_time_budget_ends_on_time_decayed(tmp_path):
    config = _quick("time_budget=4s")
    t0 = time.monotonic()
    assert train(config, tmp_path / "run") == 0
    assert time.monotonic() - t0 <= 4 + 60  # start-up included
    records = read_log(tmp_path / "run")["train"]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    _check_run(records, config, 4.0)
    assert (tmp_path / "run/model/model.safetensors").is_file()


def test_time_budget_resumes(tmp_path):
    config = _quick("time_budget=5s")
    assert train(config, tmp_path / "run", stop_after=3) == 0
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000003"]
    assert train(config, tmp_path / "run", resume=True) == 0
    records = read_log(tmp_path / "run")["train"]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert records[3]["elapsed_s"] >= records[2]["elapsed_s"]  # time spent before the stop is counted
    _check_run(records, config, 5.0)


def test_cli_bad_time_budget_is_one_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "infill.cli", "train", "--recipe", "tiny", "--out", str(tmp_path / "r"),
                        "--time-budget", "soon"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "bad duration" in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()
