"""The cache model end to end: a two-file workspace where the cache, not the model, supplies a name
defined in the other file; and `return t` at the end of `mean()` through a real infill-lsp with the
built-in model."""
from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from lsp.options import ServerOptions
from lsp.server import InfillServer

UTIL = ("def frobnicate_widgets(widget, scale):\n    return widget * scale\n\n\n"
        "def twice(widget):\n    return frobnicate_widgets(widget, 2)\n\n\n"
        "def thrice(widget):\n    return frobnicate_widgets(widget, 3)\n")
MAIN = "from . import util\n\n\ndef run(widget):\n    return util.frob"
CURSOR = types.Position(4, len("    return util.frob"))
MEAN = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return t"


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg/__init__.py").write_text("")
    (root / "pkg/util.py").write_text(UTIL)
    (root / "pkg/main.py").write_text(MAIN)
    return root


def serve(root, engine, **options) -> InfillServer:
    server = InfillServer(ServerOptions(max_tokens=12, time_budget_ms=60_000, **options))
    server.protocol._workspace = Workspace(root.as_uri(), workspace_folders=[
        types.WorkspaceFolder(root.as_uri(), root.name)])
    server.engine, server.state = engine, "ready"
    server.start_context()
    if options.get("context", True):
        assert server.repo_context.ready.wait(60)
    uri = (root / "pkg/main.py").as_uri()
    server.workspace.put_text_document(types.TextDocumentItem(uri, "python", 1, MAIN))
    server.repo_context.opened(uri, MAIN)
    return server


def test_the_cache_supplies_a_name_from_the_other_file(project, tiny_engine):
    """The tiny model is random: alone it cannot spell `frobnicate_widgets`; the cache, reading the
    imported file through the server's sources, can. Without a workspace it cannot either."""
    uri = (project / "pkg/main.py").as_uri()
    completions = {}
    for name, options in (("cache", {}), ("model", {"cache": False}), ("no sources", {"context": False})):
        server = serve(project, tiny_engine, **options)
        edit = asyncio.run(server.complete(uri, CURSOR))
        completions[name] = edit.text if edit is not None else ""
        assert server.status()["cache"] == (name != "model")
    assert completions["cache"].startswith("nicate_widgets("), completions
    assert not completions["model"].startswith("nicate"), completions
    assert not completions["no sources"].startswith("nicate"), completions


@pytest.mark.asyncio(loop_scope="function")
async def test_return_t_completes_total_with_the_built_in_model(lsp):
    """The issue's `mean()`: typing `return t` three lines below `total` offers `otal`, through a real
    server with its defaults and the built-in model (no --model)."""
    client = await lsp.start_client("--device", "cpu", init_options={"timeBudgetMs": 60000})
    try:
        assert client.statuses[-1].state == "ready" and client.statuses[-1].cache is True
        uri = "file:///tmp/infill-cache-e2e/mean.py"
        lsp.open_doc(client, uri, MEAN)
        answer = await lsp.inline(client, uri, 4, len("    return t"))
        assert answer.items and answer.items[0].insert_text.startswith("otal"), answer
    finally:
        await lsp.stop_client(client)
