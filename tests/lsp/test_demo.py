"""`infill demo`: the completion, one inferred type and suggested names, as the server computes them."""
from pathlib import Path

from infill import cli
from infill.text import split_at
from infill.engines.local import LocalEngine
from lsp import demo, names, types
from lsp.completion import complete
from lsp.options import ServerOptions

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def test_demo_prints_the_hole_the_infill_a_type_and_names(tiny_checkpoint, capsys):
    code = cli.main(["demo", f"{EXAMPLE}:7:16", "--model", str(tiny_checkpoint), "--max-tokens", "12"])
    out, err = capsys.readouterr()
    assert code == 0, err
    text = EXAMPLE.read_text()
    prefix, suffix = split_at(text, 7, 16)
    engine = LocalEngine.from_dir(tiny_checkpoint)
    edit, _ = complete(text, len(prefix), engine, ServerOptions(max_tokens=12), language="python", ext=".py")
    middle = edit.text if edit is not None else ""  # what the server would show
    assert f"    7 |         return {demo.HOLE}\n" in out
    assert f": {middle!r}\n" in out
    assert "inferred type" in out
    # the variable picked is `f` (the first one- or two-letter name), its suggestions those of lsp.names
    offset = text.index(" f:") + 1
    expected = names.suggest(text, offset, engine, k=3)
    assert "suggested names for 'f' (line 6:" in out
    for s in expected:
        assert f"{s.name} ({s.logprob:.2f})" in out
    slots = types.type_slots(text)
    assert f"of {len(slots)} slots" in out or f"none of the {len(slots)}" in out


def test_demo_name_at_and_bad_input(tiny_checkpoint, tmp_path, capsys):
    code = cli.main(["demo", f"{EXAMPLE}:7:16", "--model", str(tiny_checkpoint), "--max-tokens", "2",
                     "--name-at", "10:17"])
    out, _ = capsys.readouterr()
    assert code == 0 and "suggested names for 'text' (line 10:" in out
    for args, why in (([f"{EXAMPLE}:99:1"], "past the end"), ([str(tmp_path / "none.py") + ":1:1"], "no such file"),
                      ([f"{EXAMPLE}:7:16", "--name-at", "x"], "--name-at wants LINE:COL")):
        code = cli.main(["demo", *args, "--model", str(tiny_checkpoint)])
        err = capsys.readouterr().err
        assert code == 2 and why in err and err.count("\n") == 1


def test_pick_variable_prefers_short_names():
    assert demo.pick_variable("def f(path):\n    with open(path) as fh:\n        return fh\n").name == "fh"
    assert demo.pick_variable("import os\ndef g(path):\n    return path\n").name == "path"
    assert demo.pick_variable("total = 1\nprint(total)\n").name == "total"
    assert demo.pick_variable("print(1)\n") is None
