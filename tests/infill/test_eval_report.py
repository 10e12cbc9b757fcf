"""The report: measured runs beside published figures, labelled as published."""
import json

import pytest

from infill import cli
from infill.evaluate import report


def run_dir(tmp_path, name, summary):
    d = tmp_path / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_report_table_and_plot(tmp_path, capsys):
    sl = run_dir(tmp_path, "sl", {"eval": "humaneval-infilling", "split": "single-line", "model": "tiny",
                                  "pass@1": 0.026137})
    ppl = run_dir(tmp_path, "ppl", {"eval": "perplexity", "model": "tiny", "bits_per_byte": 4.5857})
    code = cli.main(["eval", "report", str(sl), str(ppl), "--out", str(tmp_path / "r")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["measured"] == 2 and summary["published"] == 1
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| humaneval-infilling/single-line | pass@1 | tiny | 2.6% | measured here |" in md
    assert "| humaneval-infilling/single-line | pass@1 | InCoder-6.7B | 69.0% | published: Fried et al. 2022" in md
    assert "| perplexity | bits_per_byte | tiny | 4.586 | measured here |" in md
    assert "multi-line" not in md  # anchors only for benchmarks that were run
    png = (tmp_path / "r" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_rejects_a_directory_without_a_summary(tmp_path):
    with pytest.raises(ValueError, match="summary.json: missing"):
        report.write_report([tmp_path], tmp_path / "out")


def test_prefix_only_runs_are_labelled(tmp_path, capsys):
    a = run_dir(tmp_path, "a", {"eval": "humaneval-infilling", "split": "single-line", "model": "m", "format": "l2r",
                                "pass@1": 0.1})
    b = run_dir(tmp_path, "b", {"eval": "humaneval-infilling", "split": "single-line", "model": "m", "format": "spm",
                                "pass@1": 0.2})
    assert cli.main(["eval", "report", str(a), str(b), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| m (prefix-only prompt) | 10.0% | measured here |" in md and "| m | 20.0% | measured here |" in md


def test_a_baseline_is_a_row_beside_the_model_once(tmp_path):
    base = {"eval": "rest-of-line", "items": 80, "baselines": {"copy baseline": 0.025}}
    a = run_dir(tmp_path, "a", {**base, "model": "old", "exact": 0.0})
    b = run_dir(tmp_path, "b", {**base, "model": "new", "exact": 0.0625})
    rows = report.read_runs([a, b])
    assert [(r.model, r.value) for r in rows] == [("old", 0.0), ("copy baseline", 0.025), ("new", 0.0625)]
    md = report.markdown(rows)
    assert "| rest-of-line | exact | new | 6.2% | measured here |" in md
    assert md.count("| rest-of-line | exact | copy baseline | 2.5% | measured here |") == 1
