"""Repository context (lsp/context.py): each source, the ranking, the budget, and what may be read."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from lsp import context as ctx
from lsp import workspace

UTIL = '''"""Helpers."""


def frobnicate(widget, scale):
    """Scale a widget."""
    return widget * scale


class Gadget:
    def spin(self):
        return 1


LIMIT = 3
'''
MAIN = "from .util import frobnicate, Gadget\nimport pkg.other\n\n\ndef run(widget):\n    return frobnicate(\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def ws(tmp_path):
    root = write(tmp_path / "ws", {"pkg/__init__.py": "", "pkg/util.py": UTIL, "pkg/main.py": MAIN,
                                   "pkg/other.py": "def elsewhere():\n    pass\n"})
    w = ctx.Workspace([root])
    w.scan()
    return w


def test_identifiers_and_jaccard():
    a, b = ctx.identifiers("x = foo(bar) + 1"), ctx.identifiers("foo(baz)")
    assert a == {"x", "foo", "bar"} and b == {"foo", "baz"}
    assert ctx.jaccard(a, b) == pytest.approx(1 / 4)
    assert ctx.jaccard(frozenset(), frozenset()) == 0.0


def test_imports_of_every_form():
    text = "import a.b as c, d\nfrom .x.y import (p, q as r)\nfrom .. import z\nfrom m import *\nx = 1\n"
    assert ctx.imports_of(text) == [ctx.Import("a.b"), ctx.Import("d"), ctx.Import("x.y", 1, ("p", "q")),
                                    ctx.Import("", 2, ("z",)), ctx.Import("m", 0, ())]


def test_imports_are_found_in_a_long_module_without_parsing_all_of_it():
    body = "".join(f"def f{i}(x):\n    return x\n" for i in range(3000))
    text = "import os\n" + body + "from a import (\n    b,\n    c as d,\n)\nx = 1 \\\n + 2\nimport g, \\\n    h\n"
    assert ctx.imports_of(text) == [ctx.Import("os"), ctx.Import("a", 0, ("b", "c")), ctx.Import("g"), ctx.Import("h")]
    assert workspace._import_lines(text).count("\n") == 7


def test_definitions_of_top_level_names():
    defs = ctx.definitions_of(UTIL)
    assert sorted(defs) == ["Gadget", "LIMIT", "frobnicate"]
    line, body = defs["frobnicate"]
    assert line == 3 and body.startswith("def frobnicate(widget, scale):") and "return widget * scale" in body
    long = "def f():\n" + "    x = 1\n" * 100
    assert ctx.definitions_of(long)["f"][1].count("\n") == ctx.DEFINITION_LINES


def test_workspace_resolves_absolute_and_relative_imports(ws):
    root = ws.folders[0]
    main = root / "pkg/main.py"
    imports = ctx.imports_of(MAIN)
    assert ws.resolve(imports[0], main) == [root / "pkg/util.py"]
    assert ws.resolve(imports[1], main) == [root / "pkg/other.py"]
    assert ws.resolve(ctx.Import("nowhere"), main) == []


def test_gitignore_symlinks_and_size_cap(tmp_path):
    outside = write(tmp_path / "outside", {"secret.py": "TOKEN = 'hunter2'\n"})
    root = write(tmp_path / "ws", {".gitignore": "build/\n*.gen.py\n", "a.py": "import secret\nimport b\n",
                                   "build/b.py": "X = 1\n", "c.gen.py": "Y = 1\n", "sub/.gitignore": "d.py\n",
                                   "sub/d.py": "Z = 1\n", "sub/e.py": "W = 1\n", "big.py": "#" * 5000 + "\n"})
    os.symlink(outside / "secret.py", root / "secret.py")
    os.symlink(outside, root / "linked")
    w = ctx.Workspace([root], max_file_bytes=1000)
    w.scan()
    names = sorted(p.relative_to(root).as_posix() for p in w.files)
    assert names == ["a.py", "big.py", "sub/e.py"]
    assert "secret" not in w.modules
    # even a path named directly is never read when its real location is outside the folders
    assert w.parsed(root / "secret.py") is None and w.parsed(root / "linked" / "secret.py") is None
    assert w.parsed(root / "big.py") is None  # over the size cap
    assert w.parsed(root / "sub/e.py").text == "W = 1\n"
    text = (root / "a.py").read_text()
    chunks = ctx.gather(text, 0, root / "a.py", workspace=w, recent=None, open_docs={})
    assert all("hunter2" not in c.text for c in chunks)


def test_symlinked_import_out_of_the_workspace_is_not_read(tmp_path, monkeypatch):
    outside = write(tmp_path / "outside", {"lib.py": "def leaked():\n    pass\n"})
    root = write(tmp_path / "ws", {"a.py": "from .lib import leaked\nleaked(\n"})
    os.symlink(outside / "lib.py", root / "lib.py")
    w = ctx.Workspace([root])
    w.scan()
    opened = []
    real_read = Path.read_text

    def spy(self, *a, **k):
        opened.append(Path(self).resolve())
        return real_read(self, *a, **k)
    monkeypatch.setattr(Path, "read_text", spy)
    chunks = ctx.gather("from .lib import leaked\nleaked(\n", 1, root / "a.py", workspace=w, recent=None,
                        open_docs={})
    assert chunks == [] and (outside / "lib.py").resolve() not in opened


def test_gather_definitions_and_imports(ws):
    root = ws.folders[0]
    chunks = ctx.gather(MAIN, 5, root / "pkg/main.py", workspace=ws, recent=None, open_docs={},
                        sources=("imports", "definitions"))
    assert chunks[0].source == "definitions" and chunks[0].path == "pkg/util.py"
    assert chunks[0].text.startswith("def frobnicate(widget, scale):")
    # names near the cursor only: LIMIT is defined there but not named near the cursor
    assert [c.text.split("\n")[0] for c in chunks if c.source == "definitions"] == \
        ["def frobnicate(widget, scale):", "class Gadget:"]
    assert {c.path for c in chunks} == {"pkg/util.py", "pkg/other.py"}
    # the imports chunk of util.py holds the definition already taken: left out
    assert not any(c.source == "imports" and c.path == "pkg/util.py" for c in chunks)
    only_defs = ctx.gather(MAIN, 5, root / "pkg/main.py", workspace=ws, recent=None, open_docs={},
                           sources=("definitions",))
    assert [c.source for c in only_defs] == ["definitions", "definitions"]
    assert ctx.gather(MAIN, 5, root / "pkg/main.py", workspace=ws, recent=None, open_docs={}, sources=()) == []


def test_gather_ranks_by_similarity_and_drops_copies(ws):
    cursor = "total = price * quantity\nprint(total)\n"
    docs = {"far.py": "import os\nos.getcwd()\n", "near.py": "price = 3\nquantity = price * 2\n",
            "same.py": cursor}
    chunks = ctx.gather(cursor, 1, None, workspace=ws, recent=None, open_docs=docs, sources=("open",))
    assert [c.path for c in chunks] == ["near.py", "far.py"]  # same.py is the text at the cursor again


def test_gather_budget_is_never_exceeded_and_is_deterministic(ws):
    rng = random.Random(0)
    words = [f"name{i}" for i in range(50)]
    docs = {f"f{i}.py": "\n".join(" ".join(rng.choices(words, k=6)) for _ in range(rng.randrange(1, 150)))
            for i in range(30)}
    for max_chars in (0, 100, 1000, 5000):
        a = ctx.gather("name1 name2\n", 0, None, workspace=ws, recent=None, open_docs=docs, max_chars=max_chars)
        assert sum(len(c.text) for c in a) <= max_chars
        b = ctx.gather("name1 name2\n", 0, None, workspace=ws, recent=None,
                       open_docs=dict(reversed(list(docs.items()))), max_chars=max_chars)
        assert a == b


def test_recent_ring_evicts_similar_and_old_chunks():
    ring = ctx.RecentChunks(size=3)
    text = "\n".join(f"alpha_{i} = beta_{i}" for i in range(200))
    assert ring.pick("a.py", text, 10)
    assert not ring.pick("a.py", text, 10)  # the same chunk again
    assert ring.pick("b.py", text, 10) and [c.path for c in ring.chunks] == ["b.py"]  # a.py's: too similar
    assert not ring.pick("b.py", text, 20, edit=True)  # an edit within half a chunk of the last pick
    for line in (100, 150, 199):
        ring.pick("c.py", text, line)
    assert len(ring.chunks) == 3 and all(c.path == "c.py" for c in ring.chunks)
    assert ring.chunks[-1].text.endswith("alpha_199 = beta_199")


def test_recent_chunk_around_the_cursor_is_left_out(ws):
    ring = ctx.RecentChunks()
    text = "\n".join(f"v{i} = {i}" for i in range(300))
    ring.pick("pkg/main.py", text, 10)
    ring.pick("pkg/main.py", text, 250)
    root = ws.folders[0]
    chunks = ctx.gather(text, 12, root / "pkg/main.py", workspace=ws, recent=ring, open_docs={}, sources=("recent",))
    assert [c.line for c in chunks] == [250 - ctx.CHUNK_LINES // 2]


def test_repository_context_is_stable_while_typing(ws):
    root = ws.folders[0]
    rc = ctx.RepositoryContext()
    rc.start([root]).join()
    main_uri, util_uri = (root / "pkg/main.py").as_uri(), (root / "pkg/util.py").as_uri()
    rc.opened(util_uri, UTIL)
    rc.opened(main_uri, MAIN)
    first = rc.for_completion(main_uri, MAIN, 5)
    assert first and first[0].path == "pkg/util.py"
    typed = MAIN + "        widget, 2"
    rc.changed(main_uri, typed, 5)
    assert rc.for_completion(main_uri, typed, 5) is first  # typing at the cursor: the same context
    rc.changed(util_uri, UTIL + "\n\ndef frobnicate_more():\n    pass\n", 16)
    assert rc.for_completion(main_uri, typed, 5) is not first  # another document changed: recomputed
    rc.closed(util_uri)
    assert "pkg/util.py" not in {c.path for c in rc.for_completion(main_uri, typed, 5) if c.source == "open"}


def test_watched_files_update_the_index(ws):
    root = ws.folders[0]
    rc = ctx.RepositoryContext()
    rc.start([root]).join()
    (root / "pkg/fresh.py").write_text("def fresh_helper():\n    pass\n")
    rc.watched((root / "pkg/fresh.py").as_uri(), deleted=False)
    assert rc.workspace.modules["pkg.fresh"] == root / "pkg/fresh.py"
    for rel in ("pkg/.hidden/x.py", "pkg/ignored.py"):  # what the scan would skip, an update skips too
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_text("Q = 1\n")
    (root / "pkg/.gitignore").write_text("ignored.py\n")
    for rel in ("pkg/.hidden/x.py", "pkg/ignored.py"):
        rc.watched((root / rel).as_uri(), deleted=False)
    assert root / "pkg/ignored.py" not in rc.workspace.files and "pkg.ignored" not in rc.workspace.modules
    assert not any(".hidden" in str(p) for p in rc.workspace.files)
    (root / "pkg/fresh.py").unlink()
    rc.watched((root / "pkg/fresh.py").as_uri(), deleted=True)
    assert "pkg.fresh" not in rc.workspace.modules


def test_gathering_is_cheap_in_a_thousand_file_workspace(tmp_path):
    """The p95 of gathering, generously bounded (a loaded CI machine): the bench measures it for real."""
    import time

    files = {f"pkg{i // 50}/mod{i}.py": "".join(f"def f{i}_{k}(x):\n    return x + {k}\n\n" for k in range(30))
             for i in range(1000)}
    files.update({f"pkg{i // 50}/__init__.py": "" for i in range(1000)})
    root = write(tmp_path / "big", files)
    w = ctx.Workspace([root])
    w.scan()
    assert len(w.files) == 1020
    text = "".join(f"from pkg{i // 50}.mod{i} import f{i}_1\n" for i in range(0, 1000, 100)) + "\nf0_1(" + "\n" * 3
    ctx.gather(text, 11, root / "main.py", workspace=w, recent=None, open_docs={})  # parses the imports once
    times = []
    for _ in range(40):
        t = time.perf_counter()
        chunks = ctx.gather(text, 11, root / "main.py", workspace=w, recent=None, open_docs={})
        times.append(time.perf_counter() - t)
    assert chunks[0].source == "definitions" and chunks[0].text.startswith("def f0_1(x):")
    assert sorted(times)[int(0.95 * len(times))] < 0.25


def test_a_saved_file_is_read_again(ws):
    root = ws.folders[0]
    rc = ctx.RepositoryContext()
    rc.start([root]).join()
    main_uri = (root / "pkg/main.py").as_uri()
    rc.opened(main_uri, MAIN)
    before = rc.for_completion(main_uri, MAIN, 5, sources=("definitions",))
    assert "widget * scale" in before[0].text
    (root / "pkg/util.py").write_text(UTIL.replace("widget * scale", "widget ** scale  # squared"))
    rc.saved((root / "pkg/util.py").as_uri(), None)
    after = rc.for_completion(main_uri, MAIN, 5, sources=("definitions",))
    assert "widget ** scale" in after[0].text and len(rc.workspace.files) == 4
