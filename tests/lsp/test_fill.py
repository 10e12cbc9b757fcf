"""The "Fill N holes" code action in process (`InfillServer.fill_holes`), and `infill fill` on the command line."""
import ast
import asyncio
import threading
import time

import pytest
from lsprotocol import types
from pygls.workspace import Workspace
from doubles import Scripted, SlowEngine

from infill import formats
from infill.engines.local import LocalEngine
from lsp.options import ServerOptions
from lsp.server import build_server

URI = "file:///mean.py"
TEXT = "def mean(xs):\n    ...\n    for x in xs:\n        pass  # TODO\n    return total / len(xs)\n"
PIECES = ["def mean(xs):\n", "    for x in xs:\n", "    return total / len(xs)\n"]
FILLS = ["    total = 0\n", "        total += x\n"]
INVOKED = types.CodeActionContext(diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Invoked)
AUTOMATIC = types.CodeActionContext(diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Automatic)


def params(context=INVOKED, line=2):
    here = types.Position(line, 4)
    return types.CodeActionParams(types.TextDocumentIdentifier(URI), types.Range(here, here), context)


def make_server(engine, capabilities=None):
    server = build_server(ServerOptions())
    server.engine, server.state = engine, "ready"
    server.protocol._workspace = Workspace(None)
    server.protocol.client_capabilities = capabilities or types.ClientCapabilities()
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, TEXT))
    return server


@pytest.fixture
def scripted(tiny_model, tiny_tokenizer):
    script = formats.encode_incoder(tiny_tokenizer, PIECES, FILLS, ext=".py").ids
    return LocalEngine(Scripted(tiny_model.config, script, tiny_tokenizer.eos_id), tiny_tokenizer)


def apply(text, edits):
    lines = text.splitlines(keepends=True)
    offset = lambda p: sum(len(x) for x in lines[:p.line]) + p.character  # noqa: E731 (ASCII text)
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


@pytest.mark.asyncio
async def test_the_action_is_one_edit_that_parses_and_touches_only_the_holes(scripted):
    server = make_server(scripted)
    [action] = await server.fill_holes(URI, params())
    assert action.title == "Fill 2 holes in `mean`" and action.kind == types.CodeActionKind.RefactorRewrite
    assert action.data["kind"] == "infill.fillHoles"
    [uri] = action.edit.changes
    edits = action.edit.changes[uri]
    assert uri == URI and len(edits) == 2
    new = apply(TEXT, edits)
    ast.parse(new)
    assert new == "".join([PIECES[0], FILLS[0], PIECES[1], FILLS[1], PIECES[2]])
    assert {(e.range.start.line, e.range.end.line) for e in edits} == {(1, 2), (3, 4)}  # the holes' lines only
    status = server.status()["holes"]
    assert (status["holes"], status["filled"], status["mode"]) == (2, 2, "joint") and status["ms"] > 0
    # the same version again: from the cache, also for an automatic request
    assert (await server.fill_holes(URI, params(AUTOMATIC)))[0].edit == action.edit


@pytest.mark.asyncio
async def test_automatic_requests_never_run_the_model_and_clients_with_annotations_get_a_preview(scripted):
    server = make_server(scripted, types.ClientCapabilities(workspace=types.WorkspaceClientCapabilities(
        workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True, change_annotation_support=(
            types.ChangeAnnotationsSupportOptions(groups_on_label=True))))))
    assert await server.fill_holes(URI, params(AUTOMATIC)) == []
    assert scripted.model.seen == []
    [action] = await server.fill_holes(URI, params())
    [doc_edit] = action.edit.document_changes
    assert doc_edit.text_document.version == 1 and len(doc_edit.edits) == 2
    assert all(e.annotation_id == "infill.fill" for e in doc_edit.edits)
    assert action.edit.change_annotations["infill.fill"].needs_confirmation is True  # VS Code: refactor preview


@pytest.mark.asyncio
async def test_no_action_outside_a_function_with_holes(scripted):
    server = make_server(scripted)
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 2, "def f():\n    return 1\n"))
    assert await server.fill_holes(URI, params(line=1)) == []
    server.options = ServerOptions(fill_holes=False)
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 3, TEXT))
    assert await server.fill_holes(URI, params()) == []


@pytest.mark.asyncio
async def test_a_document_change_cancels_the_fill():
    server = make_server(SlowEngine())
    task = asyncio.ensure_future(server.fill_holes(URI, params()))
    deadline = time.monotonic() + 30
    while server.engine.steps == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 2, TEXT + "\n"))
    assert await asyncio.wait_for(task, 10) == []
    assert server.engine.closed.wait(10)
    assert server.status()["holes"] is None


def test_infill_fill_prints_the_function_or_a_diff(tmp_path, capsys):
    from infill.cli import main
    from infill.engines.load import DEFAULT_MODEL_DIR

    # the default model (1.3M parameters, shipped): a random model with mask tokens leaves every hole blank
    model = ["--model", str(DEFAULT_MODEL_DIR), "--device", "cpu", "--max-tokens", "4"]
    path = tmp_path / "mean.py"
    path.write_text(TEXT + "\n\ndef other():\n    return 1\n")
    assert main(["fill", f"{path}:2", *model]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("def mean(xs):\n") and "def other" not in out and "for x in xs:\n" in out
    assert "filled 2 of 2 holes in `mean`" in err and "(joint)" in err
    assert main(["fill", str(path), "--diff", *model]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"--- {path}\n+++ {path}\n") and "-    ...\n" in out and "-        pass  # TODO\n" in out
    assert main(["fill", f"{path}:8", *model]) == 2  # `other` has no holes
    assert "no holes in the function or class around line 8" in capsys.readouterr().err
    assert main(["fill", f"{tmp_path / 'nope.py'}:1"]) == 2
    assert "no such file" in capsys.readouterr().err
