"""Type and name prediction: item extraction, normalisation, and an engine that knows the answers."""
import json

from infill import cli
from infill.engines import Completion, CompletionResult
from infill.evaluate import identifiers
from infill.evaluate.documents import Document

SOURCE = '''import typing


class Box:
    def put(self, item: "typing.Dict[str,int]", count: int = 1) -> typing.Optional[str]:
        total_count = count + 1
        return str(total_count)


def plain(x):
    return x
'''


def doc():
    return Document("m.py", "python", SOURCE)


def test_type_items_hold_out_one_annotation_each():
    items = list(identifiers.type_items(doc()))
    assert [(i.kind, i.target) for i in items] == [("return", "typing.Optional[str]"),
                                                   ("param", "'typing.Dict[str,int]'"), ("param", "int")]
    for item in items:  # the hole is exactly the annotation, in the method's dedented source
        assert item.prefix.startswith("def put(self") and item.prefix.endswith(("-> ", ": "))
    assert items[0].suffix.startswith(":\n    total_count")


def test_name_items_mask_every_occurrence():
    items = list(identifiers.name_items(doc()))
    assert [i.target for i in items] == ["item"]  # plain(x): no name of 4+ characters
    item = items[0]
    assert "item" not in item.suffix and item.prefix.endswith("def put(self, ")


def test_prediction_normalisation():
    ret = identifiers.Item("w", "return", "", "", "int")
    assert identifiers.predicted(ret, " Optional[ Dict[str,int] ]:\n    pass") == "Optional[Dict[str, int]]"
    assert identifiers.predicted(ret, "int\n") == "int"
    assert identifiers.predicted(ret, "(((") is None
    par = identifiers.Item("w", "param", "", "", "int")
    assert identifiers.predicted(par, "Tuple[int, str] = (1, 'a'))") == "Tuple[int, str]"
    name = identifiers.Item("w", "name", "", "", "item")
    assert identifiers.predicted(name, "  items, x") == "items"


class Oracle:
    """Answers every hole with the right text when it knows it, else a wrong one."""

    name, device = "oracle", "cpu"

    def __init__(self, answers):
        self.answers = answers

    def infill(self, req):
        text = self.answers.get(req.prefix, "wrong_answer")
        return CompletionResult([Completion(text, 1, 0.0, "stop")], 0.0, 0)


def test_exact_match_against_an_oracle(tmp_path):
    items = list(identifiers.type_items(doc()))
    answers = {items[0].prefix: "typing.Optional[str]", items[1].prefix: "'typing.Dict[str,int]'"}
    summary = identifiers.evaluate_types(Oracle(answers), [doc()], tmp_path / "t", progress=False)
    assert summary["items"] == 3 and summary["exact_return"] == 1.0 and summary["exact_param"] == 0.5
    name = next(identifiers.name_items(doc()))
    summary = identifiers.evaluate_names(Oracle({name.prefix: "item"}), [doc()], tmp_path / "n", progress=False)
    assert summary["exact"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "n" / "items.jsonl").read_text().splitlines()]
    assert rows[0]["prediction"] == "item" and rows[0]["exact"]


def test_cli_types_and_names_on_a_model(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.py").write_text(SOURCE)
    for name in ("types", "names"):
        code = cli.main(["eval", name, "--model", str(tiny_checkpoint), "--data", str(tmp_path / "d"),
                         "--out", str(tmp_path / name), "--quiet"])
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0 and summary["eval"] == name and summary["items"] == (3 if name == "types" else 1)
        assert 0.0 <= summary["exact"] <= 1.0


def test_default_data_is_the_standard_library_without_installed_packages(tmp_path, monkeypatch):
    """Packages pip installs into a pyenv Python's stdlib directory are not the standard library, and
    differ per machine: they made the default 500 type items (and their figure) machine-dependent."""
    for rel in ("json/__init__.py", "site-packages/attr/_make.py", "dist-packages/six.py", "zipapp.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("def f(x: int) -> str:\n    return str(x)\n")
    monkeypatch.setattr(identifiers.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    assert [d.path for d in identifiers.held_out_files(None)] == ["json/__init__.py", "zipapp.py"]
    assert [d.path for d in identifiers.held_out_files(tmp_path)] == [  # --data DIR is read whole
        "dist-packages/six.py", "json/__init__.py", "site-packages/attr/_make.py", "zipapp.py"]
