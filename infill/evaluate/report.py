"""`infill eval report`: one Markdown table and one PNG over run directories, beside published figures.

Rules:
- A run is a directory with the `summary.json` an `infill eval` command wrote; its headline metric
  (pass@1, bits per byte, exact match) is read from there and nothing is recomputed.
- Published figures are only ever shown as published: a separate source column in the table and
  hatched, labelled bars in the plot. Each names the paper it comes from. Only figures checked
  against their paper are listed; a benchmark without one simply has none.
- A run may carry `baselines` (name -> value of its first headline metric, measured on the same items,
  as `infill eval rest-of-line`'s copy baseline); each is a row of its own, beside the model.
- A run whose `summary.json` says `"unsandboxed": true` (its programs ran on the host, with
  `--unsafe-no-sandbox`) has every figure marked UNSANDBOXED, in the table and in the plot.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

INCODER = "Fried et al. 2022, InCoder (arXiv:2204.05999)"


@dataclass(frozen=True)
class Row:
    model: str
    benchmark: str
    metric: str
    value: float
    source: str
    """"measured" or the publication of a published figure."""
    sandboxed: bool = True
    """False for a figure whose programs ran outside the sandbox."""


PUBLISHED: tuple[Row, ...] = (
    Row("InCoder-6.7B", "humaneval-infilling/single-line", "pass@1", 0.690, INCODER),
    Row("InCoder-6.7B", "humaneval-infilling/multi-line", "pass@1", 0.386, INCODER),
    Row("InCoder-6.7B", "types", "exact_return", 0.581, INCODER),
    Row("InCoder-6.7B", "names", "exact", 0.306, INCODER),
)

HEADLINES = {"humaneval-infilling": ("pass@1", "pass@10", "pass@100"), "perplexity": ("bits_per_byte",),
             "middle-bpb": ("bits_per_byte",),
             "types": ("exact_return", "exact_param", "exact"), "names": ("exact",),
             "rest-of-line": ("exact",)}


def read_runs(dirs: list[Path]) -> list[Row]:
    rows = []
    for d in dirs:
        path = d / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: missing (pass directories written by infill eval)") from None
        except json.JSONDecodeError:
            raise ValueError(f"{path}: not JSON") from None
        kind = summary.get("eval")
        if kind not in HEADLINES:
            raise ValueError(f"{path}: unknown evaluation {kind!r}")
        benchmark = f"{kind}/{summary['split']}" if summary.get("split") else kind
        if kind == "humaneval-infilling" and summary.get("limit"):
            benchmark += f" (first {summary['limit']})"
        model = str(summary.get("model", d.name))
        if summary.get("format") == "l2r":
            model += " (prefix-only prompt)"
        mode = summary.get("sandbox", {}).get("mode") if isinstance(summary.get("sandbox"), dict) else None
        sandboxed = not summary.get("unsandboxed", False) and mode != "fallback"  # "fallback": the old harness's
        rows += [Row(model, benchmark, m, float(summary[m]), "measured", sandboxed)
                 for m in HEADLINES[kind] if m in summary]
        baselines = summary.get("baselines") if isinstance(summary.get("baselines"), dict) else {}
        for name, value in sorted(baselines.items()):  # two models on the same items share one baseline row
            row = Row(str(name), benchmark, HEADLINES[kind][0], float(value), "measured", sandboxed)
            rows += [] if row in rows else [row]
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| benchmark | metric | model | value | source |", "|---|---|---|---:|---|"]
    for r in sorted(rows, key=lambda r: (r.benchmark, r.metric, r.source != "measured", r.model)):
        value = f"{r.value:.3f}" if r.metric == "bits_per_byte" else f"{100 * r.value:.1f}%"
        source = "measured here" if r.source == "measured" else f"published: {r.source}"
        if not r.sandboxed:
            value += " UNSANDBOXED"
            source += ", UNSANDBOXED (programs ran on the host)"
        lines.append(f"| {r.benchmark} | {r.metric} | {r.model} | {value} | {source} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r.benchmark, r.metric) for r in rows})
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 0.5 * len(rows) + 0.6 * len(panels)), squeeze=False)
    for ax, (bench, metric) in zip(axes[:, 0], panels):
        here = sorted((r for r in rows if (r.benchmark, r.metric) == (bench, metric)),
                      key=lambda r: (r.source != "measured", r.model))
        scale = 1 if metric == "bits_per_byte" else 100
        labels = [r.model + ("" if r.source == "measured" else " (published)")
                  + ("" if r.sandboxed else " UNSANDBOXED") for r in here]
        bars = ax.barh(range(len(here)), [r.value * scale for r in here], color=[
            "tab:blue" if r.source == "measured" else "lightgray" for r in here])
        for bar, r in zip(bars, here):
            if r.source != "measured":
                bar.set_hatch("//")
        top = max([r.value * scale for r in here] + [1e-9])
        ax.set_xlim(0, 100 if scale == 100 else top * 1.15)
        for i, r in enumerate(here):
            ax.text(r.value * scale, i, f" {r.value * scale:.1f}" if scale == 100 else f" {r.value:.3f}",
                    va="center", fontsize=8)
        ax.set_yticks(range(len(here)), labels)
        ax.invert_yaxis()
        ax.set_title(f"{bench}: {metric}" + ("" if scale == 1 else " (%)"), fontsize=9)
    fig.text(0.01, 0.005, "grey hatched: published figures, not measured here (sources in report.md)", fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(dirs: list[Path], out_dir: Path) -> dict:
    """Write `report.md` and `report.png` to `out_dir`; the summary lists what went in."""
    measured = read_runs(dirs)
    benchmarks = {r.benchmark.split(" (")[0] for r in measured}
    published = [r for r in PUBLISHED if r.benchmark in benchmarks]
    rows = measured + published
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text("# Evaluation report\n\n" + markdown(rows) + "\nPublished figures are "
                                       "quoted from their papers and were not measured here.\n")
    plot(rows, out_dir / "report.png")
    summary = {"eval": "report", "runs": len(dirs), "measured": len(measured), "published": len(published),
               "report": str(out_dir / "report.md"), "plot": str(out_dir / "report.png")}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
