"""Run logs: `OUT/log.jsonl` (one JSON object a line), TensorBoard event files, and the loss plot.

Records have `kind` "train" (step, loss, lr, grad_norm, tokens, tokens_per_s, loader_tokens_per_s,
mfu on GPU) or "eval" (step, val_loss, bpb per language, infill_em). A resumed run appends; when a
step appears twice (steps redone after a kill), the last record wins.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

LOG_FILE = "log.jsonl"


class RunLog:
    """Appends records to log.jsonl and, when enabled and installed, to TensorBoard (`OUT/tb`)."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True):
        self.path = Path(run_dir) / LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:  # tensorboard is an optional extra
                self._tb = None

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step, kind = record["step"], record["kind"]
            for key, value in record.items():
                if isinstance(value, dict):
                    for sub, v in value.items():
                        if isinstance(v, (int, float)) and math.isfinite(v):
                            self._tb.add_scalar(f"{kind}/{key}/{sub}", v, step)
                elif isinstance(value, (int, float)) and key not in ("step", "kind"):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_log(run_dir: str | Path) -> dict[str, list[dict]]:
    """{"train": [...], "eval": [...]} sorted by step, one record per step (the last written)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no training log (is {run_dir} the --out of `infill train`?)")
    by_kind: dict[str, dict[int, dict]] = {"train": {}, "eval": {}}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by kill -9
            by_kind.setdefault(record.get("kind", "train"), {})[record["step"]] = record
    return {kind: [records[s] for s in sorted(records)] for kind, records in by_kind.items()}


def plot(run_dir: str | Path, out: str | Path) -> Path:
    """Draw training loss, validation loss and bits per byte against tokens into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_log(run_dir)
    if not log["train"]:
        raise ValueError(f"{run_dir}: the log has no training steps yet")
    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in log["train"]]
    ax_loss.plot(steps, [r["loss"] for r in log["train"]], label="train loss", lw=1)
    if log["eval"]:
        ax_loss.plot([r["step"] for r in log["eval"]], [r["val_loss"] for r in log["eval"]], "o-",
                     label="validation loss")
        languages = sorted({lang for r in log["eval"] for lang in r.get("bpb", {})})
        for lang in languages:
            points = [(r["step"], r["bpb"][lang]) for r in log["eval"] if lang in r.get("bpb", {})]
            ax_bpb.plot(*zip(*points), "o-", label=f"bits/byte ({lang})")
        em = [(r["step"], r["infill_em"]) for r in log["eval"] if r.get("infill_em") is not None]
        if em:
            ax_em = ax_bpb.twinx()
            ax_em.plot(*zip(*em), "s--", color="tab:red", label="infill exact match")
            ax_em.set_ylabel("infill exact match")
            ax_em.set_ylim(0, 1)
            ax_em.legend(loc="upper center")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.set_title(f"{Path(run_dir).resolve().name}: loss")
    ax_loss.legend()
    ax_bpb.set_xlabel("step")
    ax_bpb.set_ylabel("bits per byte")
    ax_bpb.set_title("validation")
    if ax_bpb.lines:
        ax_bpb.legend(loc="lower left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
