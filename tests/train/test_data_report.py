"""Report: counts per rule and language, per-package manifest, markdown and PNG render."""
import json

from train.data.report import Report, render_markdown, write_report


def _records():
    yield {"text": "x = 1\n", "path": "a.py", "language": "python", "source": "pkg", "version": "1.0",
           "license": "MIT", "split": "train", "bytes": 6, "redactions": {"email": 2}}
    yield {"text": "int y;\n", "path": "b.c", "language": "c", "source": "pkg", "version": "1.0",
           "license": "MIT", "split": "validation", "bytes": 7}
    yield {"text": "", "path": "c.py", "language": "python", "source": "gpl", "version": "2",
           "license": "GPL-3.0", "bytes": 100, "removed": "license.not_allowed"}
    yield {"text": "", "path": "d.py", "language": "python", "source": "pkg", "version": "1.0",
           "license": "MIT", "bytes": 50, "removed": "dedup.exact"}


def test_counts():
    report = Report()
    for r in _records():
        report.add(r)
    data = report.to_dict(sources=["pkg 1.0", "gpl 2"])
    assert data["totals"] == {"files_seen": 4, "bytes_seen": 163, "files_kept": 2, "bytes_kept": 13}
    assert data["removed"] == {"dedup.exact": {"python": 1}, "license.not_allowed": {"python": 1}}
    assert data["removed_bytes"]["license.not_allowed"] == {"python": 100}
    assert data["kept"] == {"train": {"python": 1}, "validation": {"c": 1}}
    assert data["redactions"] == {"email": {"python": 2}}
    assert data["packages"]["pkg"] == {"version": "1.0", "licenses": {"MIT": 2}, "files_seen": 3,
                                       "files_kept": 2, "bytes_kept": 13,
                                       "splits": {"train": 1, "validation": 1}}
    assert data["packages"]["gpl"]["files_kept"] == 0


def test_render(tmp_path):
    report = Report()
    for r in _records():
        report.add(r)
    data = report.to_dict(sources=["pkg 1.0"], elapsed_s=1.5, workers=2, shards=[])
    md = render_markdown(data)
    assert "| license.not_allowed | 0 | 1 | 1 | 0.0 |" in md
    assert "| train | 0 | 1 | 1 | 0.0 |" in md
    assert "| pkg | 1.0 | MIT (2) | 3 | 2 | 0.0 | train 1, validation 1 |" in md
    write_report(data, str(tmp_path))
    assert json.loads((tmp_path / "report.json").read_text())["totals"]["files_kept"] == 2
    assert (tmp_path / "report.md").read_text() == md
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_render_empty_corpus(tmp_path):
    write_report(Report().to_dict(), str(tmp_path))
    assert (tmp_path / "report.png").exists()
