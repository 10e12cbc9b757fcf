"""`infill report` on a fixture log (tests/lsp/data/records) whose figures were worked out by hand:

  a  python/tiny   shown, accepted whole (20 chars), kept 1.0 / 0.8 / 0.6, 100 ms
  b  python/tiny   shown, rejected (timeout), 200 ms, 50 tokens from the KV cache, cache model used
  c  python/tiny   shown, 350 ms, then continued by d: counts as d (but its model latency counts)
  d  python/tiny   typed through (a cache hit, no model: not in the latency), accepted a word (4 of 9 chars), cache model unknown
  e  ts/other      shown, a line (10) then the whole (30 chars) accepted, kept 1 record 0.9, 300 ms
  f  ts/other      accepted whole (5 chars) by a client that never said didShow, 400 ms
  g  ts/other      shown, rejected by the client, 500 ms
  plus a line cut mid-write and one with an unknown field: skipped, with a warning each."""
from pathlib import Path

import pytest

from infill.cli import main
from lsp.records import read_records
from lsp.report import outcomes, since_of, summary, tables

FIXTURE = Path(__file__).parent / "data" / "records"


def test_the_figures_of_the_fixture_log():
    warnings = []
    found = outcomes(read_records(FIXTURE, None, warnings.append))
    assert len(warnings) == 2 and ":3: not JSON" in warnings[0] and "unknown fields ['colour']" in warnings[1]
    s = summary(found)
    assert s["shown"] == 6  # a b d e f g
    assert s["full"] == pytest.approx(3 / 6) and s["partial"] == pytest.approx(1 / 6)
    assert s["chars"] == pytest.approx((20 + 4 + 30 + 5) / 6)
    assert (s["kept30"], s["kept120"], s["kept300"]) == (pytest.approx(0.95), 0.8, 0.6)
    assert (s["p50"], s["p90"]) == (325, 450)  # of 100 200 300 350 400 500, linear interpolation
    assert s["cacheHit"] == pytest.approx(2 / 6) and s["cacheModel"] == pytest.approx(1 / 5)
    by = dict(tables(found)[1][1])
    assert by["python"]["shown"] == by["typescript"]["shown"] == 3
    assert by["python"]["full"] == pytest.approx(1 / 3) and by["typescript"]["full"] == pytest.approx(2 / 3)
    assert [name for name, _ in tables(found)[2][1]] == ["other", "tiny"]


def test_since_keeps_the_later_records():
    found = outcomes(read_records(FIXTURE, since_of("2026-12-02", None), lambda m: None))
    assert sorted(o.meta["id"] for o in found) == ["e", "f", "g"]


def test_the_command_prints_the_tables_and_writes_the_page(tmp_path, capsys):
    assert main(["report", "--dir", str(FIXTURE), "--since", "all", "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "17 records, 6 suggestions shown" in out
    row = next(line for line in out.splitlines() if line.startswith("all  "))
    assert row.split() == ["all", "6", "50.0%", "16.7%", "9.8", "0.95", "0.80", "0.60", "325", "450", "33.3%", "20.0%"]
    assert err.count("warning") == 2
    page = (tmp_path / "out" / "index.html").read_text()
    for png in ("acceptance_by_day.png", "latency.png", "acceptance_by_length.png"):
        assert png in page and (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["report", "--since", "last tuesday", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "infill: error: --since wants 30m, 12h, 7d, 2w, YYYY-MM-DD or all, got 'last tuesday'"
    assert main(["report", "--dir", str(tmp_path / "none")]) == 0
    assert "nothing recorded yet" in capsys.readouterr().out
