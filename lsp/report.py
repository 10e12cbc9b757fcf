"""`infill report`: what the acceptance records (lsp.records) say about the suggestions you got.

    infill report [--since 7d] [--dir DIR] [--out DIR]

Reads the JSONL files only (the server's `telemetry: "local"` writes them; docs/lsp.md). Prints, for
all suggestions, then by language and by model:
  shown        suggestions shown (a suggestion continued by a later one counts once, as the later one;
               an accepted suggestion counts as shown even when the client never said didShow)
  full, part.  the share accepted whole, and accepted only in part (word or line)
  chars/shown  accepted characters per suggestion shown
  kept 30s/2m/5m  mean similarity of the accepted text to what is at its place then (1 = untouched)
  p50, p90     latency (request to suggestion) of the suggestions shown that ran the model (typed-through
               ones and continued ones included), milliseconds
  cache hit    the share served from a cache: typed through, or prompt tokens from the session KV cache
  cache model  the share where the cache model (n-gram mixture) was used, of those the engine says
With --out DIR: DIR/index.html with the same tables and three plots (matplotlib): acceptance by day,
the latency histogram, acceptance by suggestion length.
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lsp.records import RETENTION_AFTER_S, default_dir, read_records

_SPAN = re.compile(r"(\d+)([mhdw])")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
LENGTH_BINS = (1, 11, 21, 41, 81)
"""Suggestion lengths (characters) where the bins of the acceptance-by-length plot start."""


def register(sub) -> None:
    p = sub.add_parser("report", help="summarise the acceptance records kept by the language server",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--since", default="7d", metavar="SPAN",
                   help="how far back: 30m, 12h, 7d, 2w, a date YYYY-MM-DD (UTC) or all (default 7d)")
    p.add_argument("--dir", type=Path, default=None,
                   help=f"the records directory (the server's telemetryDir; default {default_dir()})")
    p.add_argument("--out", type=Path, metavar="DIR", help="also write DIR/index.html with plots")
    p.set_defaults(func=run)


def since_of(spec: str, now: datetime) -> datetime | None:
    """The start of `--since SPAN` (None for all); ValueError with a one-line reason."""
    if spec == "all":
        return None
    if m := _SPAN.fullmatch(spec):
        return now - timedelta(**{_UNIT[m.group(2)]: int(m.group(1))})
    try:
        return datetime.strptime(spec, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"--since wants 30m, 12h, 7d, 2w, YYYY-MM-DD or all, got {spec!r}") from None


@dataclass
class Outcome:
    """One suggestion, from its records."""

    meta: dict
    day: str
    continued: bool = False
    """A later suggestion continued it: not counted, except in the model's latency."""
    shown: bool = False
    full: bool = False
    accepted: int = 0
    kept: dict[int, float] = field(default_factory=dict)


def outcomes(records) -> list[Outcome]:
    """The suggestions of `records` (see the module docstring for what counts as shown)."""
    by_id: dict[str, Outcome] = {}
    continued = set()
    for r in records:
        o = by_id.setdefault(r["id"], Outcome(r, r["time"][:10]))
        if r["event"] == "show":
            o.shown = True
            if r.get("extends"):
                continued.add(r["extends"])
        elif r["event"] == "accept":
            o.shown = True
            o.full = o.full or r.get("kind") == "full"
            o.accepted = max(o.accepted, int(r.get("acceptedLength") or 0))
        elif r["event"] == "retention" and isinstance(r.get("similarity"), (int, float)):
            o.kept[int(r.get("after", 0))] = float(r["similarity"])
    for i in continued & by_id.keys():
        by_id[i].continued = True
    return [o for o in by_id.values() if o.shown]


def model_latencies(group: list[Outcome]) -> list[float]:
    """The latencies of the suggestions of `group` that ran the model."""
    return [o.meta["latencyMs"] for o in group
            if isinstance(o.meta.get("latencyMs"), (int, float)) and not o.meta.get("typedThrough")]


def summary(group: list[Outcome]) -> dict:
    """The report's figures for a group of suggestions (None where there is nothing to measure)."""
    import numpy as np

    latency = model_latencies(group)
    group = [o for o in group if not o.continued]
    n = len(group)
    said = [o.meta["cacheModel"] for o in group if isinstance(o.meta.get("cacheModel"), bool)]
    out = {
        "shown": n,
        "full": sum(o.full for o in group) / n if n else None,
        "partial": sum(o.accepted > 0 and not o.full for o in group) / n if n else None,
        "chars": sum(o.accepted for o in group) / n if n else None,
        "p50": float(np.percentile(latency, 50)) if latency else None,
        "p90": float(np.percentile(latency, 90)) if latency else None,
        "cacheHit": sum(bool(o.meta.get("typedThrough")) or (o.meta.get("cachedTokens") or 0) > 0
                        for o in group) / n if n else None,
        "cacheModel": sum(said) / len(said) if said else None,
    }
    for after in RETENTION_AFTER_S:
        kept = [o.kept[after] for o in group if after in o.kept]
        out[f"kept{after}"] = sum(kept) / len(kept) if kept else None
    return out


COLUMNS = [("shown", "shown", "{:d}"), ("full", "full", "{:.1%}"), ("partial", "part.", "{:.1%}"),
           ("chars", "chars/shown", "{:.1f}"), ("kept30", "kept 30s", "{:.2f}"), ("kept120", "kept 2m", "{:.2f}"),
           ("kept300", "kept 5m", "{:.2f}"), ("p50", "p50 ms", "{:.0f}"), ("p90", "p90 ms", "{:.0f}"),
           ("cacheHit", "cache hit", "{:.1%}"), ("cacheModel", "cache model", "{:.1%}")]


def tables(found: list[Outcome]) -> list[tuple[str, list[tuple[str, dict]]]]:
    """(title, [(row label, summary)]): all, then by language, then by model."""
    out = [("all suggestions", [("all", summary(found))])]
    for key, title in (("language", "by language"), ("model", "by model")):
        groups = defaultdict(list)
        for o in found:
            groups[str(o.meta.get(key) or "?")].append(o)
        out.append((title, [(name, summary(groups[name])) for name in sorted(groups)]))
    return out


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def text_table(title: str, rows: list[tuple[str, dict]]) -> str:
    width = max([len(title)] + [len(label) for label, _ in rows])
    head = title.ljust(width) + "".join(f"  {name:>{max(len(name), 6)}}" for _, name, _ in COLUMNS)
    lines = [head]
    for label, s in rows:
        lines.append(label.ljust(width) + "".join(f"  {_cell(s[k], fmt):>{max(len(name), 6)}}"
                                                 for k, name, fmt in COLUMNS))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    since = since_of(args.since, now)
    directory = args.dir or default_dir()
    warnings = []

    def warn(message: str) -> None:
        warnings.append(message)
        print(f"infill report: warning: {message}", file=sys.stderr)

    records = list(read_records(directory, since, warn))
    found = outcomes(records)
    span = "all records" if since is None else f"since {since:%Y-%m-%d %H:%M} UTC"
    shown = sum(not o.continued for o in found)
    print(f"{len(records)} records, {shown} suggestions shown, {span}, from {directory}")
    if not records:
        print("nothing recorded yet: set the server option telemetry to \"local\" (docs/lsp.md)")
    for title, rows in tables(found):
        print()
        print(text_table(title, rows))
    if args.out is not None:
        page = write_html(found, args.out, span)
        print(f"\nwrote {page}")
    return 0


def write_html(found: list[Outcome], out: Path, span: str) -> Path:
    """DIR/index.html with the tables and the three plots (PNG files next to it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    plots = []

    days = sorted({o.day for o in found if not o.continued})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    by_day = [summary([o for o in found if o.day == d]) for d in days]
    ax.bar(days, [s["full"] or 0 for s in by_day], label="full")
    ax.bar(days, [s["partial"] or 0 for s in by_day], bottom=[s["full"] or 0 for s in by_day], label="partial")
    ax.set_ylabel("accepted / shown")
    ax.set_title("Acceptance by day (UTC)")
    ax.legend()
    fig.autofmt_xdate()
    plots.append(_save(fig, out / "acceptance_by_day.png"))

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(model_latencies(found), bins=30)
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("suggestions")
    ax.set_title("Latency of the suggestions that ran the model")
    plots.append(_save(fig, out / "latency.png"))

    fig, ax = plt.subplots(figsize=(7, 3.2))
    edges = list(LENGTH_BINS) + [None]
    labels, rates = [], []
    for lo, hi in zip(edges, edges[1:]):
        group = [o for o in found if (o.meta.get("length") or 0) >= lo and (hi is None or o.meta["length"] < hi)]
        labels.append(f"{lo}+" if hi is None else f"{lo}-{hi - 1}")
        s = summary(group)
        rates.append((s["full"] or 0) + (s["partial"] or 0))
    ax.bar(labels, rates)
    ax.set_xlabel("suggestion length, characters")
    ax.set_ylabel("accepted / shown")
    ax.set_title("Acceptance by suggestion length")
    plots.append(_save(fig, out / "acceptance_by_length.png"))

    parts = [f"<!doctype html><meta charset=utf-8><title>infill report</title>",
             "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}</style>",
             f"<h1>infill report</h1><p>{sum(not o.continued for o in found)} suggestions shown, "
             f"{html.escape(span)}</p>"]
    for title, rows in tables(found):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr><th></th>"
                     + "".join(f"<th>{html.escape(name)}</th>" for _, name, _ in COLUMNS) + "</tr>")
        for label, s in rows:
            parts.append(f"<tr><td>{html.escape(label)}</td>"
                         + "".join(f"<td>{_cell(s[k], fmt)}</td>" for k, _, fmt in COLUMNS) + "</tr>")
        parts.append("</table>")
    parts += [f'<p><img src="{p.name}" alt="{p.stem}"></p>' for p in plots]
    page = out / "index.html"
    page.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return page


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
