"""`infill eval rest-of-line`: its items, its copy baseline, and the model's figure as the server computes it."""
import json
from collections import Counter
from dataclasses import replace

import pytest

from infill import cli
from infill.engines.local import LocalEngine
from lsp import rest_of_line
from lsp.completion import complete
from lsp.options import ServerOptions
from lsp.rest_of_line import Item, copy_baseline, document_of, items_of

MODULE = '''"""A module docstring
that runs on."""
import os  # a comment


# a comment line
def load(path, mode="r"):
    """Read a file."""
    with open(path, mode) as f:
        data = f.read()
    return data.strip()


class Store:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.items = {}

    def put(self, key, value):
        self.items[key] = value
        return len(self.items)
'''
# Lines (1-based) that are blank, a docstring running over lines, or comments only: never an item.
NOT_CODE = {1, 2, 4, 5, 6, 12, 13, 18}


def _files(k: int = 6):
    return [(f"pkg/m{i}.py", MODULE.replace("Store", f"Store{i}").replace("load", f"load{i}")) for i in range(k)]


def test_items_are_deterministic_half_whole_half_mid_and_at_token_boundaries():
    files = _files()
    items = items_of(files, n=20, seed=3)
    assert items == items_of(files, n=20, seed=3)
    assert items != items_of(files, n=20, seed=4)
    assert Counter(it.kind for it in items) == {"whole-line": 10, "mid-line": 10}
    assert len({(it.path, it.line) for it in items}) == 20  # distinct lines
    texts = dict(files)
    for it in items:
        line = texts[it.path].split("\n")[it.line - 1]
        indent = len(line) - len(line.lstrip())
        assert it.line not in NOT_CODE and line[:it.col] + it.expected == line.rstrip()
        if it.kind == "whole-line":
            assert it.col == indent
        else:  # a token starts here: the boundary of a word, a bracket, an operator or a string
            assert it.col > indent and it.expected
            before, after = line[it.col - 1], line[it.col]
            assert before == " " or not (before.isalnum() or before == "_") or not (after.isalnum() or after == "_")
    # the module's line 16 by hand: whole-line at column 8, mid-line boundaries at the token starts
    assert rest_of_line.token_starts(MODULE)[15] == [8, 12, 13, 18, 20, 22, 23, 27, 28, 35, 36, 40]


def test_too_few_lines_or_a_bad_n_is_a_value_error():
    with pytest.raises(ValueError, match="too few for 80 items"):
        items_of(_files(1), n=80)
    with pytest.raises(ValueError, match="at least 2"):
        items_of(_files(), n=1)


def test_the_copy_baseline_by_hand():
    text = ("def f(a):\n"
            "    x = load(a)\n"
            "    x = load(a)   \n"
            "        y = load(b)\n"
            "    x = 2\n"
            "    return x\n")
    # "    x = " on line 5: lines 2 and 3 (trailing blanks dropped) are the most common match
    assert copy_baseline(text, Item("f.py", 5, 8, "mid-line", "2")) == "load(a)"
    # a whole line at indentation 4: lines of exactly that indentation (not line 4's 8), line 2/3 twice
    assert copy_baseline(text, Item("f.py", 6, 4, "whole-line", "return x")) == "x = load(a)"
    # line 2 itself is excluded: line 3 and line 5 once each, the tie goes to the first, line 3
    assert copy_baseline(text, Item("f.py", 2, 8, "mid-line", "load(a)")) == "load(a)"
    assert copy_baseline(text, Item("f.py", 5, 6, "mid-line", "= 2")) == "= load(a)"
    # no other line at indentation 0, and none starting with "    return": nothing to copy
    assert copy_baseline(text, Item("f.py", 1, 0, "whole-line", "def f(a):")) == ""
    assert copy_baseline(text, Item("f.py", 6, 11, "mid-line", "x")) == ""
    # file, else package: the file has no line for "    return", the other files do (most common wins)
    others = ["def g():\n    return y\n", "def h():\n    return z\n    return y\n"]
    assert copy_baseline(text, Item("f.py", 6, 11, "mid-line", "x"), others) == "y"
    assert copy_baseline(text, Item("f.py", 5, 8, "mid-line", "2"), others) == "load(a)"  # the file first


def test_the_document_ends_the_cursor_line_at_the_cursor():
    text = "a = 1\r\nbb = f(x)\r\nc = 3\r\n"
    doc, offset = document_of(text, Item("t.py", 2, 5, "mid-line", "f(x)"))
    assert doc == "a = 1\r\nbb = \r\nc = 3\r\n" and offset == len("a = 1\r\nbb = ")


def test_the_model_figure_is_what_the_language_server_completes(tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "src"
    for path, text in _files(3):
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        (data / path).write_text(text)
    out = tmp_path / "run"
    code = cli.main(["eval", "rest-of-line", "--model", str(tiny_checkpoint), "--data", str(data), "-n", "6",
                     "--seed", "1", "--max-tokens", "6", "--out", str(out), "--quiet", "--workspace", "none",
                     "--variants", "mix,model"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["items"] == len(rows) == 6 and summary["items_whole-line"] == summary["items_mid-line"] == 3
    engine = LocalEngine.from_dir(tiny_checkpoint)
    options = ServerOptions(max_tokens=6, time_budget_ms=60_000)
    for row in rows:
        text = (data / row["path"]).read_text()
        lines = text.split("\n")
        # the document by hand: the cursor line cut at the cursor, the rest of the file as it is
        cut = "\n".join(lines[:row["line"] - 1] + [lines[row["line"] - 1][:row["col"]]] + lines[row["line"]:])
        offset = len("\n".join(lines[:row["line"] - 1])) + 1 + row["col"]
        edit, result = complete(cut, offset, engine, options, language="python", ext=".py")
        assert result.extra["cache"]  # the server's default: the model and the cache model mixed
        assert row["model"] == row["pred_mix"] == ("" if edit is None else edit.text.split("\n")[0].rstrip())
        edit, result = complete(cut, offset, engine, replace(options, cache=False), language="python", ext=".py")
        assert not result.extra["cache"]
        assert row["pred_model"] == ("" if edit is None else edit.text.split("\n")[0].rstrip())
        assert row["model_exact"] == (row["model"] == row["expected"] == lines[row["line"] - 1][row["col"]:].rstrip())
        item = Item(row["path"], row["line"], row["col"], row["kind"], row["expected"])
        assert row["copy"] == copy_baseline(text, item)
    assert summary["exact_count"] == sum(r["model_exact"] for r in rows) == summary["variants"]["mix"]["total"]
    assert summary["variants"]["model"]["total"] == sum(r["pred_model"] == r["expected"] for r in rows)
    assert summary["workspace"] == "none" and set(summary["variants"]) == {"mix", "model"}
    assert summary["copy_exact_count"] == sum(r["copy_exact"] for r in rows)
    assert summary["copy_exact"] == pytest.approx(summary["copy_exact_count"] / 6)

    # the report puts the copy baseline beside the model
    assert cli.main(["eval", "report", str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"| rest-of-line | exact | {summary['model']} | {100 * summary['exact']:.1f}% | measured here |" in md
    assert (f"| rest-of-line | exact | copy baseline (most common matching line of the file) | "
            f"{100 * summary['copy_exact']:.1f}% | measured here |") in md


def test_bad_input_is_one_line(tiny_checkpoint, tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.py").write_text("x = 1\n")
    for args, why in ((["--data", str(tmp_path / "none")], "not a directory"),
                      (["--data", str(small)], "too few for 400 items"),
                      (["--data", str(small), "-n", "2", "--variants", "mix,both"], "--variants must be"),
                      (["--data", str(small), "-n", "2", "--cache-config", "weight=x"], "weight must be a number"),
                      (["--data", str(small), "-n", "2", "--cache-config", "nope=1"], "--cache-config takes"),
                      (["--data", str(small), "-n", "1"], "at least 2"),
                      (["--max-tokens", "0"], "--max-tokens must be"),
                      (["--time-budget-ms", "1"], "--time-budget-ms must be")):
        code = cli.main(["eval", "rest-of-line", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                         *args])
        err = capsys.readouterr().err
        assert code == 2 and why in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "o").exists()


def test_the_default_data_is_the_installed_held_out_package(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    root, label = rest_of_line.held_out_package_dir()
    assert root.name == "detect_secrets" and label.startswith("detect-secrets ") and (root / "__init__.py").is_file()
    monkeypatch.setattr("infill.corpus.HELD_OUT_PACKAGES", ("no-such-distribution-here",))
    code = cli.main(["eval", "rest-of-line", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-distribution-here is not installed" in err and err.count("\n") == 1
