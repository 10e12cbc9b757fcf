"""`infill train` and `infill train plot`.

Registered on the `infill` console script through the `infill.commands` entry point (`register`):

    infill train --recipe NAME [--data DIR] [--set key=value ...] --out DIR [--resume] [--stop-after N]
                 [--time-budget DURATION]
    infill train plot RUN_DIR [--out PNG]

`plot` is a sub-command of `train`; without it, `train` trains. User errors (an unknown recipe or
field, a missing corpus, an occupied --out) print one line on stderr and return exit status 2; the
progress bar goes to stderr. Under `torchrun --nproc_per_node N` the same command trains on N
processes.
"""
from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2


def _error(message: str) -> int:
    print(f"infill train: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def register(subparsers) -> None:
    """Add the `train` command and its `plot` sub-command."""
    from train.recipes import RECIPES

    t = subparsers.add_parser(
        "train", help="train a model with the causal-masking objective (or plot a run's losses)",
        description="Train an infill model (docs/train.md). A checkpoint every --set ckpt_every steps "
                    "under OUT/checkpoints/step-N is a loadable model directory plus the training state; "
                    "OUT/model is the latest one's model; OUT/log.jsonl and OUT/tb hold the logs.",
        epilog="examples:\n"
               "  infill train --recipe tiny --out runs/tiny\n"
               "  infill train --recipe cpu-small --data corpus/ --out runs/small --set steps=800\n"
               "  infill train --recipe tiny --out runs/tiny --resume        # continue after a stop\n"
               "  infill train --recipe cpu-2h --data corpus/ --out runs/cpu  # ends after 2 h, decayed\n"
               "  torchrun --nproc_per_node 2 -m infill.cli train --recipe tiny --out runs/ddp\n"
               "  infill train plot runs/tiny                              # runs/tiny/loss.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--recipe", choices=sorted(RECIPES), metavar="NAME",
                   help=f"one of {', '.join(RECIPES)} (not needed with --resume)")
    t.add_argument("--data", metavar="DIR", help="corpus from `infill data build` (tiny: none needed)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a config field: steps=200, lr=1e-3, objective.l2r_rate=1, model.n_layer=4")
    t.add_argument("--out", metavar="DIR", help="run directory (checkpoints, logs, model)")
    t.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out (its config, plus --set); "
                        "starts fresh when there is none")
    t.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="stop with a checkpoint after step N of this invocation (the schedule is unchanged)")
    t.add_argument("--time-budget", metavar="DURATION",
                   help="train for this wall time (300s, 90m, 2h, 1h30m) instead of a step count; the "
                        "learning rate ends decayed (WSD, decay placed from the measured throughput)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=train_command)
    sub = t.add_subparsers(dest="train_command", metavar="{plot}")
    p = sub.add_parser("plot", help="draw a run's loss curves to PNG",
                       description="Draw training/validation loss and bits per byte of a run to PNG.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a run")
    p.add_argument("--out", dest="png", metavar="PNG", help="output file (default RUN_DIR/loss.png)")
    p.set_defaults(func=plot_command)


def train_command(args: argparse.Namespace) -> int:
    """`infill train`: 0 when done (or stopped by SIGTERM), 130 on SIGINT, 1 when the loss or the
    weights became NaN or infinite (no checkpoint written), 2 on a user error or a damaged run."""
    from infill.checkpoint import CheckpointError
    from infill.tokenizer import TokenizerError
    from train.config import apply_overrides
    from train.recipes import recipe
    from train.trainer import TrainingDiverged, train

    if not args.out:
        return _error("--out DIR is required")
    if not args.recipe and not args.resume:
        return _error("--recipe NAME is required (or --resume an existing run)")
    if args.stop_after < 0:
        return _error(f"--stop-after must be >= 0, got {args.stop_after}")
    try:
        config = recipe(args.recipe or "tiny")
        items = list(args.overrides)
        if args.data:
            items.insert(0, f"data={args.data}")
        if args.quiet:
            items.append("progress=false")
        if args.time_budget:
            items.append(f"time_budget={args.time_budget}")
        config = apply_overrides(config, items)
        return train(config, args.out, resume=args.resume, stop_after=args.stop_after, overrides=items)
    except TrainingDiverged as exc:  # not a usage error: the run itself failed
        print(f"infill train: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, CheckpointError, TokenizerError) as exc:
        return _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")


def plot_command(args: argparse.Namespace) -> int:
    """`infill train plot`: writes the PNG and prints its path."""
    from pathlib import Path

    from train.logs import plot

    try:
        out = plot(args.run_dir, args.png or Path(args.run_dir) / "loss.png")
    except ValueError as exc:
        return _error(str(exc))
    print(out)
    return 0
