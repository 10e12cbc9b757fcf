"""The IsoFLOP sweep at toy scale: equal-FLOP runs, the fitted optimum, a continued sweep."""
import json

import pytest

from train.config import apply_overrides
from train.isoflop import budget_key, fit_minimum, main, parse_shape, run_config, shape_overrides
from train.recipes import recipe
from train.trainer import flops_per_token

pytestmark = pytest.mark.usefixtures("one_thread")


def _base():
    return apply_overrides(recipe("tiny"), ["tensorboard=false", "progress=false", "stdlib_modules=8",
                                            "model.max_seq_len=128", "seq_len=128", "batch_tokens=512",
                                            "micro_batch=4", "eval_rows=4", "eval_bpb_docs=2"])


def test_shapes_and_equal_flops():
    assert parse_shape("192x3") == (192, 3)
    for bad in ("192", "x3", "0x2", "ax2"):
        with pytest.raises(ValueError):
            parse_shape(bad)
    with pytest.raises(ValueError):
        shape_overrides(100, 2)
    budget = 5e11
    for dim, layers in ((64, 1), (96, 2), (128, 2)):
        config, plan = run_config(_base(), budget, dim, layers)
        m = config.model_config()
        assert (m.dim, m.n_layer, m.head_dim) == (dim, layers, 32)
        assert plan["flops_per_token"] == flops_per_token(m, 128)
        assert abs(plan["flops"] - budget) <= plan["flops_per_token"] * config.batch_tokens / 2 + 1
        assert config.steps == plan["steps"] and config.eval_every == config.steps


def test_distinct_budgets_get_distinct_run_names():
    budgets = [1e13, 1.5e13, 2e13, 2.5e13, 5e12]
    assert len({budget_key(b) for b in budgets}) == len(budgets)
    assert budget_key(1e13) == "1e+13"  # the name sweeps made before this rule used


def test_fit_minimum_finds_a_parabolas_vertex():
    params = [1e5, 3e5, 1e6, 3e6]
    losses = [(__import__("math").log10(p) - 6.0) ** 2 + 2 for p in params]
    assert fit_minimum(params, losses) == pytest.approx(1e6, rel=1e-6)
    assert fit_minimum(params[:2], losses[:2]) is None
    assert fit_minimum(params, [-x for x in losses]) is None
    # a vertex outside the measured sizes is an extrapolation: none
    falling = [(__import__("math").log10(p) - 4.0) ** 2 for p in params]
    assert fit_minimum(params, falling) is None


def test_toy_sweep_runs_and_continues(tmp_path, capsys, tiny_tokenizer):
    tiny_tokenizer.save(tmp_path / "tok")
    sets = ["stdlib_modules=4", "model.max_seq_len=64", "seq_len=64", "batch_tokens=256", "micro_batch=4",
            "eval_rows=2", "eval_bpb_docs=1", "tensorboard=false", f"tokenizer={tmp_path / 'tok'}"]

    def args(shapes, out=tmp_path / "sweep"):
        return (["--recipe", "tiny"] + [a for s in sets for a in ("--set", s)]
                + ["--budgets", "5e9", "--shapes", shapes, "--out", str(out), "--quiet"])

    assert main(args("32x1,64x1,96x1")) == 0
    out = tmp_path / "sweep"
    result = json.loads((out / "isoflop.json").read_text())
    assert [r["shape"] for r in result["runs"]] == ["32x1", "64x1", "96x1"]
    assert all(r["val_loss"] > 0 and r["steps"] >= 1 for r in result["runs"])
    assert result["runs"][0]["steps"] > result["runs"][2]["steps"]  # a smaller model sees more tokens
    optimum = result["optima"]["5e+09"]
    assert optimum["best_shape"] in ("32x1", "64x1", "96x1")
    assert optimum["edge"] == {"32x1": "at or below the smallest size", "64x1": None,
                               "96x1": "at or above the largest size"}[optimum["best_shape"]]
    assert (out / "isoflop.png").stat().st_size > 1000
    mtime = (out / "5e+09-64x1" / "log.jsonl").stat().st_mtime
    assert main(args("32x1,64x1,96x1")) == 0  # finished runs are reused, not retrained
    assert (out / "5e+09-64x1" / "log.jsonl").stat().st_mtime == mtime
    assert json.loads((out / "isoflop.json").read_text())["runs"] == result["runs"]
    assert main(args("100x2")) == 2
    assert "not a multiple" in capsys.readouterr().err
