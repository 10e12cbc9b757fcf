"""The IsoFLOP sweep: for each compute budget, train several model sizes on exactly that many FLOPs
and pick the size with the lowest held-out loss (Hoffmann et al. 2022, "approach 2").

    python -m train.isoflop --recipe cpu-2h --data corpus --set tokenizer=corpus/tok4096/tokenizer.json \\
        --budgets 2e13,5e13,1e14 --shapes 128x2,160x3,192x3,256x4 --out runs/isoflop

Rules:
- A shape `DIMxLAYERS` replaces the recipe's width and depth (head dim 32 where it divides, else 48 or
  64; half as many key/value heads; SwiGLU width 8/3 of the model's, a multiple of 32); vocabulary,
  context, batch, objective and learning-rate schedule stay the recipe's.
- A run of budget C trains `C / flops_per_token` tokens (`train.trainer.flops_per_token`: 6 N plus
  attention), rounded to whole steps, with a step-counted WSD schedule, and is evaluated once at the
  end: the validation loss (`val_loss`, the training objective on held-out rows) is what is compared.
- Each run lives in OUT/C-SHAPE; a finished one is not run again, so an interrupted sweep continues
  where it stopped. OUT/isoflop.json holds every run and, per budget with 3 or more sizes, the
  minimum of a parabola fitted to loss against log10(params); OUT/isoflop.png draws them.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

from train.config import TrainConfig, apply_overrides
from train.logs import read_log

USAGE_ERROR = 2


def parse_shape(text: str) -> tuple[int, int]:
    """(dim, layers) of `DIMxLAYERS`, e.g. `192x3`; ValueError for anything else."""
    dim, sep, layers = text.lower().partition("x")
    if not (sep and dim.isdigit() and layers.isdigit() and int(dim) > 0 and int(layers) > 0):
        raise ValueError(f"bad shape {text!r}: use DIMxLAYERS, e.g. 192x3")
    return int(dim), int(layers)


def shape_overrides(dim: int, layers: int) -> list[str]:
    """`--set` items that give a recipe's model this width and depth (see the module rules)."""
    head_dim = next((h for h in (32, 48, 64) if dim % h == 0), None)
    if head_dim is None:
        raise ValueError(f"width {dim} is not a multiple of 32, 48 or 64")
    heads = dim // head_dim
    kv = max(1, heads // 2) if heads % 2 == 0 else heads
    hidden = 32 * max(1, round(8 * dim / 3 / 32))
    return [f"model.dim={dim}", f"model.n_layer={layers}", f"model.n_head={heads}", f"model.n_kv_head={kv}",
            f"model.intermediate_size={hidden}"]


def run_config(base: TrainConfig, budget: float, dim: int, layers: int) -> tuple[TrainConfig, dict]:
    """The config of one sweep run and its planned figures (params, FLOPs/token, tokens, steps)."""
    from train.trainer import flops_per_token

    config = apply_overrides(base, shape_overrides(dim, layers) + ["time_budget="])
    model_config = config.model_config()
    fpt = flops_per_token(model_config, config.seq_len)
    steps = max(1, round(budget / fpt / config.batch_tokens))
    warmup = min(config.warmup_steps, max(1, steps // 10))
    config = apply_overrides(config, [f"steps={steps}", f"warmup_steps={warmup}", "schedule=wsd",
                                      f"eval_every={steps}", "ckpt_every=0", "eval_infill=0"])
    plan = {"params": model_config.num_params(), "flops_per_token": fpt, "steps": steps,
            "tokens": steps * config.batch_tokens, "flops": steps * config.batch_tokens * fpt}
    return config, plan


def fit_minimum(params: list[float], losses: list[float]) -> float | None:
    """Params at the minimum of a parabola fitted to loss against log10(params); None when the fit
    has no minimum (fewer than 3 sizes, or it opens downward) or when that minimum lies outside the
    sizes measured (an extrapolation, not a measurement: `optima[...]["edge"]` then says which side)."""
    import numpy as np

    if len(params) < 3:
        return None
    a, b, _ = np.polyfit(np.log10(params), losses, 2)
    if a <= 0:
        return None
    vertex = float(10 ** (-b / (2 * a)))
    return vertex if min(params) <= vertex <= max(params) else None


def budget_key(budget: float) -> str:
    """A budget's name in run directories and `optima`: `1e+13`, `1.5e+13` (distinct for distinct budgets
    to three significant figures; `.0e` would name 1.5e13 and 2e13 alike)."""
    return f"{budget:.3g}"


def sweep(base: TrainConfig, budgets: list[float], shapes: list[tuple[int, int]], out: Path, *,
          progress: bool = True) -> dict:
    """Run (or continue) the sweep into `out`; returns what isoflop.json holds."""
    from train.trainer import train

    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for budget in budgets:
        for dim, layers in shapes:
            config, plan = run_config(base, budget, dim, layers)
            run_dir = out / f"{budget_key(budget)}-{dim}x{layers}"
            evals = read_log(run_dir)["eval"] if (run_dir / "model").is_dir() else []
            if not evals:
                shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
                if progress:
                    print(f"isoflop: budget {budget:.1e}, {dim}x{layers}: {plan['params']:,} params, "
                          f"{plan['tokens']:,} tokens", file=sys.stderr)
                status = train(apply_overrides(config, [f"progress={str(progress).lower()}"]), run_dir,
                               resume=True)
                if status != 0:
                    raise RuntimeError(f"training {run_dir} stopped with status {status}")
                evals = read_log(run_dir)["eval"]
            last = evals[-1]
            runs.append({"budget": budget, "shape": f"{dim}x{layers}", **plan, "val_loss": last.get("val_loss"),
                         "bpb": last.get("bpb", {})})
    optima = {}
    for budget in budgets:
        done = [r for r in runs if r["budget"] == budget and r["val_loss"] is not None]
        best = min(done, key=lambda r: r["val_loss"]) if done else None
        sizes = sorted(r["params"] for r in done)
        edge = (None if not best or len(sizes) < 2 else "at or below the smallest size" if best["params"] == sizes[0]
                else "at or above the largest size" if best["params"] == sizes[-1] else None)
        optima[budget_key(budget)] = {"best_shape": best and best["shape"], "best_params": best and best["params"],
                                   "edge": edge,
                                   "fit_params": fit_minimum([r["params"] for r in done],
                                                             [r["val_loss"] for r in done])}
    result = {"recipe_seq_len": base.seq_len, "batch_tokens": base.batch_tokens, "runs": runs, "optima": optima}
    (out / "isoflop.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "isoflop.png")
    return result


def plot(result: dict, path: Path) -> Path:
    """Validation loss against parameters, one curve per budget, the fitted minima marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for budget in sorted({r["budget"] for r in result["runs"]}):
        rows = sorted((r for r in result["runs"] if r["budget"] == budget and r["val_loss"] is not None),
                      key=lambda r: r["params"])
        ax.plot([r["params"] for r in rows], [r["val_loss"] for r in rows], "o-", label=f"{budget:.1e} FLOPs")
        fit = result["optima"][budget_key(budget)]["fit_params"]
        if fit:
            ax.axvline(fit, ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("IsoFLOP sweep")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from train.recipes import RECIPES, recipe

    parser = argparse.ArgumentParser(prog="python -m train.isoflop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cpu-2h", choices=sorted(RECIPES), help="base recipe (default cpu-2h)")
    parser.add_argument("--data", metavar="DIR", help="corpus from `infill data build`")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a base config field (as `infill train --set`)")
    parser.add_argument("--budgets", required=True, help="comma-separated FLOP budgets, e.g. 2e13,5e13,1e14")
    parser.add_argument("--shapes", required=True, help="comma-separated DIMxLAYERS, e.g. 128x2,192x3,256x4")
    parser.add_argument("--out", required=True, metavar="DIR", help="sweep directory (continued if it exists)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        budgets = [float(b) for b in args.budgets.split(",")]
        if any(not b > 0 or math.isinf(b) for b in budgets):
            raise ValueError(f"budgets must be positive numbers, got {args.budgets!r}")
        shapes = [parse_shape(s) for s in args.shapes.split(",")]
        items = ([f"data={args.data}"] if args.data else []) + args.overrides
        base = apply_overrides(recipe(args.recipe), items)
        for dim, layers in shapes:  # every shape is a valid model before anything trains
            run_config(base, budgets[0], dim, layers)
        result = sweep(base, budgets, shapes, Path(args.out), progress=not args.quiet)
    except (ValueError, RuntimeError) as exc:
        print(f"train.isoflop: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return USAGE_ERROR
    for key, opt in result["optima"].items():
        fit = f"{opt['fit_params']:,.0f}" if opt["fit_params"] else "n/a"
        print(f"budget {key}: best {opt['best_shape']} ({opt['best_params']:,} params); parabola minimum {fit}")
    print(Path(args.out) / "isoflop.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
