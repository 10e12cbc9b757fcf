"""Report: what every rule removed, what was kept, and from which package.

Every record is counted once, where it leaves the pipeline (a step that drops it, or the shard
writer): `record_counts` turns it into labelled counters, which datatrove steps carry as their
`stat_update` stats across tasks and machines, and `Report.merge` sums back, so the counts are
exact whatever ran the stages. `write_report` renders `report.json` (the data, also the corpus
manifest: per-package versions, licenses, file and byte counts), `report.md` (the same as tables)
and `report.png` (files and MB removed by each rule and kept; matplotlib, Agg backend).
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping

from train.data.records import Record

MAX_SOURCES_LISTED = 8


def record_counts(record: Record) -> Iterator[tuple[str, int]]:
    """What one record leaving the pipeline adds to the report, as (label, value) pairs.

    A label is a JSON list (event, ..., measure), so that a datatrove step can carry it in its
    `stat_update` counters from any task on any machine, and `Report.merge` can read it back:
        ["removed", rule, language, source, version, "files" | "bytes"]
        ["kept", split, language, source, version, license, "files" | "bytes" | "bytes_seen"]
        ["redacted", kind, language]
    Bytes of a removed file are its size as read; of a kept file, its text after redaction
    ("bytes_seen" keeps the size as read)."""
    lang, source, version = record["language"], record["source"], record.get("version", "")
    if "removed" in record:
        key = ["removed", record["removed"], lang, source, version]
        size = record.get("bytes", 0)
    else:
        key = ["kept", record["split"], lang, source, version, record["license"]]
        size = len(record["text"].encode("utf-8"))
        yield json.dumps(key + ["bytes_seen"]), record.get("bytes", 0)
    yield json.dumps(key + ["files"]), 1
    yield json.dumps(key + ["bytes"]), size
    for kind, n in record.get("redactions", {}).items():
        yield json.dumps(["redacted", kind, lang]), n


def is_count_label(label: str) -> bool:
    """True for a label written by `record_counts` (a step's other counters are not)."""
    return label.startswith('["removed"') or label.startswith('["kept"') or label.startswith('["redacted"')


def _nested():
    return defaultdict(lambda: defaultdict(int))


class Report:
    """Counters of one `infill data build` run: the sum of `record_counts` over every record."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, record: Record) -> None:
        """Count one record leaving the pipeline."""
        for label, value in record_counts(record):
            self.counts[label] += value

    def merge(self, counts: Mapping[str, int]) -> None:
        """Add counters summed elsewhere (datatrove stats: label -> total); other labels are ignored."""
        for label, value in counts.items():
            if is_count_label(label):
                self.counts[label] += value

    def to_dict(self, **extra) -> dict:
        """JSON-ready summary; `extra` (config, sources, shards, timings) is merged in first."""
        removed, removed_bytes, kept, kept_bytes = _nested(), _nested(), _nested(), _nested()
        seen, seen_bytes, redactions = defaultdict(int), defaultdict(int), _nested()
        packages: dict[str, dict] = {}
        for label, value in sorted(self.counts.items()):
            event, *fields = json.loads(label)
            if event == "redacted":
                redactions[fields[0]][fields[1]] += value
                continue
            what, lang, source, version, measure = fields[0], fields[1], fields[2], fields[3], fields[-1]
            pkg = packages.setdefault(source, {
                "version": version, "licenses": defaultdict(int), "files_seen": 0, "files_kept": 0,
                "bytes_kept": 0, "splits": defaultdict(int)})
            if event == "removed":
                (removed if measure == "files" else removed_bytes)[what][lang] += value
                if measure == "files":
                    seen[lang] += value
                    pkg["files_seen"] += value
                else:
                    seen_bytes[lang] += value
            elif measure == "bytes_seen":
                seen_bytes[lang] += value
            elif measure == "files":
                kept[what][lang] += value
                seen[lang] += value
                pkg["files_seen"] += value
                pkg["files_kept"] += value
                pkg["licenses"][fields[4]] += value
                pkg["splits"][what] += value
            else:
                kept_bytes[what][lang] += value
                pkg["bytes_kept"] += value
        plain = lambda d: {k: dict(sorted(v.items())) for k, v in sorted(d.items())}  # noqa: E731
        return {
            **extra,
            "totals": {"files_seen": sum(seen.values()), "bytes_seen": sum(seen_bytes.values()),
                       "files_kept": sum(sum(v.values()) for v in kept.values()),
                       "bytes_kept": sum(sum(v.values()) for v in kept_bytes.values())},
            "seen": {"files": dict(sorted(seen.items())), "bytes": dict(sorted(seen_bytes.items()))},
            "removed": plain(removed),
            "removed_bytes": plain(removed_bytes),
            "kept": plain(kept),
            "kept_bytes": plain(kept_bytes),
            "redactions": plain(redactions),
            "packages": {name: {**p, "licenses": dict(sorted(p["licenses"].items())),
                                "splits": dict(sorted(p["splits"].items()))}
                         for name, p in sorted(packages.items(), key=lambda kv: kv[0].lower())},
        }


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def render_markdown(data: dict) -> str:
    """report.md from the dict of `Report.to_dict`."""
    t = data["totals"]
    langs = sorted(data["seen"]["files"])
    lines = ["# Corpus report", ""]
    if "sources" in data:
        shown = ", ".join(f"`{s}`" for s in data["sources"][:MAX_SOURCES_LISTED])
        more = len(data["sources"]) - MAX_SOURCES_LISTED
        lines += [f"Sources ({len(data['sources'])}): {shown}"
                  + (f" and {more} more (see Packages)." if more > 0 else "."), ""]
    lines += [f"Files seen {t['files_seen']:,} ({_mb(t['bytes_seen'])} MB); "
              f"kept {t['files_kept']:,} ({_mb(t['bytes_kept'])} MB)"
              + (f"; {data['elapsed_s']:.0f} s with {data.get('workers', 1)} worker(s)."
                 if "elapsed_s" in data else "."), ""]
    lines += ["## Files removed by each rule", "",
              "| rule | " + " | ".join(langs) + " | total | MB |",
              "|---|" + "---:|" * (len(langs) + 2)]
    for rule, per in data["removed"].items():
        mb = sum(data["removed_bytes"][rule].values())
        lines.append(f"| {rule} | " + " | ".join(f"{per.get(lang, 0):,}" for lang in langs)
                     + f" | {sum(per.values()):,} | {_mb(mb)} |")
    lines += ["", "## Files kept", "",
              "| split | " + " | ".join(langs) + " | total | MB |",
              "|---|" + "---:|" * (len(langs) + 2)]
    for split, per in data["kept"].items():
        mb = sum(data["kept_bytes"][split].values())
        lines.append(f"| {split} | " + " | ".join(f"{per.get(lang, 0):,}" for lang in langs)
                     + f" | {sum(per.values()):,} | {_mb(mb)} |")
    if data["redactions"]:
        lines += ["", "## Redactions (replacements)", "", "| kind | " + " | ".join(langs) + " |",
                  "|---|" + "---:|" * len(langs)]
        for kind, per in data["redactions"].items():
            lines.append(f"| {kind} | " + " | ".join(f"{per.get(lang, 0):,}" for lang in langs) + " |")
    lines += ["", "## Packages", "",
              "| package | version | licenses (kept files) | files seen | files kept | MB kept | split |",
              "|---|---|---|---:|---:|---:|---|"]
    for name, p in data["packages"].items():
        lic = ", ".join(f"{k} ({v})" for k, v in p["licenses"].items()) or "-"
        split = ", ".join(f"{k} {v}" for k, v in p["splits"].items()) or "-"
        lines.append(f"| {name} | {p['version']} | {lic} | {p['files_seen']:,} | "
                     f"{p['files_kept']:,} | {_mb(p['bytes_kept'])} | {split} |")
    if data.get("shards"):
        lines += ["", f"Shards: {len(data['shards'])} "
                  f"({', '.join(s['file'] for s in data['shards'][:4])}"
                  f"{', ...' if len(data['shards']) > 4 else ''})."]
    return "\n".join(lines) + "\n"


def render_chart(data: dict, path: str) -> None:
    """Two horizontal bar charts, files and MB removed by each rule and kept, on log scales
    (counts span four orders of magnitude); the per-language split is in the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(data["removed"]) + ["kept"]
    files = [sum(per.values()) for per in data["removed"].values()]
    files.append(sum(sum(per.values()) for per in data["kept"].values()))
    mb = [sum(per.values()) / 1e6 for per in data["removed_bytes"].values()]
    mb.append(sum(sum(per.values()) for per in data["kept_bytes"].values()) / 1e6)
    colors = ["tab:red"] * (len(labels) - 1) + ["tab:green"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.4 * len(labels) + 1.6), sharey=True)
    for ax, values, unit, fmt in ((axes[0], files, "files", "{:,.0f}"), (axes[1], mb, "MB", "{:,.1f}")):
        ax.barh(labels, values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, " " + fmt.format(v), va="center", fontsize="small")
        if any(v > 0 for v in values):
            ax.set_xscale("log")
            ax.set_xlim(right=max(values) * 8)
        ax.set_xlabel(f"{unit} (log scale)")
    axes[0].invert_yaxis()
    t = data["totals"]
    fig.suptitle(f"infill data build: {t['files_kept']:,} of {t['files_seen']:,} files kept "
                 f"({t['bytes_kept'] / 1e6:,.1f} of {t['bytes_seen'] / 1e6:,.1f} MB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(data: dict, out_dir: str) -> None:
    """Write report.json, report.md and report.png into `out_dir`."""
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(data))
    render_chart(data, os.path.join(out_dir, "report.png"))
