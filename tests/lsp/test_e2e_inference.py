"""End to end, over stdio: inlay hints, hover, code actions, prepareRename and rename. The tiny random
model's answers are compared with the feature functions run in process on the same checkpoint, so these
tests are about plumbing and where edits land, not about what the model says."""
import ast
import asyncio

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig
from support import SCALE_DOC

from infill.engines import run_to_end
from lsp import names, scopes
from lsp.types import infer, type_slots

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = SCALE_DOC
URI = "file:///e2e/infer.py"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tclient(tiny_checkpoint, lsp):
    c = await lsp.start_client("--model", str(tiny_checkpoint), "--device", "cpu",
                               init_options={"typeConfidence": 0.0, "timeBudgetMs": 60000, "nameSuggestions": 2})
    lsp.open_doc(c, URI, DOC)
    yield c
    await lsp.stop_client(c)


def doc_id():
    return types.TextDocumentIdentifier(URI)


def apply(text, edits):
    lines = text.splitlines(keepends=True)

    def off(p):
        return sum(len(x) for x in lines[:p.line]) + p.character
    for e in sorted(edits, key=lambda e: off(e.range.start), reverse=True):
        text = text[:off(e.range.start)] + e.new_text + text[off(e.range.end):]
    return text


async def test_capabilities(lsp, tmp_path):
    c = await ClientServerConfig(server_command=lsp.SERVER + ["--model", str(tmp_path / "none")]).start()
    try:
        client_caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
            rename=types.RenameClientCapabilities(prepare_support=True)))
        caps = (await c.initialize_session(types.InitializeParams(capabilities=client_caps))).capabilities
        assert caps.inlay_hint_provider and caps.hover_provider and caps.code_action_provider
        assert caps.rename_provider.prepare_provider is True
    finally:
        await lsp.stop_client(c)


async def test_inlay_hints_are_the_inferred_types(tclient, tiny_engine):
    hints = await tclient.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=doc_id(), range=types.Range(types.Position(0, 0), types.Position(5, 0))))
    slots = [s for s in type_slots(DOC) if s.at < DOC.index("def other")]
    want = []
    for s in slots:
        t = infer(DOC, s, tiny_engine)
        if t is not None:
            want.append(((": " if s.kind == "param" else " -> ") + t.annotation, s.at))
    got = [(h.label, sum(len(x) for x in DOC.splitlines(keepends=True)[:h.position.line]) + h.position.character)
           for h in hints or []]
    assert got == want
    again = await tclient.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=doc_id(), range=types.Range(types.Position(0, 0), types.Position(5, 0))))
    assert [h.label for h in again or []] == [g for g, _ in got]  # from the cache, the same answer


async def test_hover_shows_the_type_and_its_probability(tclient, tiny_engine):
    slot = next(s for s in type_slots(DOC) if s.name == "values")
    t = infer(DOC, slot, tiny_engine)
    result = await tclient.text_document_hover_async(types.HoverParams(doc_id(), types.Position(0, 11)))
    if t is None:
        assert result is None
        return
    assert f"values: {t.annotation}" in result.contents.value and f"p = {t.probability:.2f}" in result.contents.value
    assert (result.range.start.character, result.range.end.character) == (10, 16)
    assert await tclient.text_document_hover_async(types.HoverParams(doc_id(), types.Position(1, 14))) is None


async def test_code_actions_annotate_and_rename(tclient, tiny_engine):
    actions = await tclient.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(), range=types.Range(types.Position(1, 5), types.Position(1, 5)),
        context=types.CodeActionContext(diagnostics=[])))
    titles = [a.title for a in actions]
    annotate = [a for a in actions if a.title == "Add inferred type annotations"]
    for a in annotate:
        out = apply(DOC, a.edit.changes[URI])
        ast.parse(out)
    symbol = scopes.symbol_at(DOC, DOC.index("result"))
    want = run_to_end(names.suggest_steps(DOC, symbol, tiny_engine, 2))
    assert titles[len(annotate):] == [f"Rename 'result' to '{s.name}'" for s in want]
    for a in actions[len(annotate):]:
        out = apply(DOC, a.edit.changes[URI])
        ast.parse(out)
        assert out.count("result") == 2  # other()'s `result` untouched
        assert out.split("def other")[1] == DOC.split("def other")[1]


async def test_prepare_rename_and_rename(tclient, tiny_engine):
    prepared = await tclient.text_document_prepare_rename_async(types.PrepareRenameParams(
        doc_id(), types.Position(4, 13)))
    assert (prepared.range.start.line, prepared.range.start.character, prepared.range.end.character) == (4, 11, 17)
    assert names.is_valid_name(prepared.placeholder)
    edit = await tclient.text_document_rename_async(types.RenameParams(doc_id(), types.Position(4, 13), "acc"))
    out = apply(DOC, edit.changes[URI])
    ast.parse(out)
    assert out.count("acc") == 3 and out.split("def other")[1] == DOC.split("def other")[1]
    assert "result.append" not in out and "acc.append" in out
    bad = await tclient.text_document_rename_async(types.RenameParams(doc_id(), types.Position(4, 13), "class"))
    assert bad is None
    off = await tclient.text_document_prepare_rename_async(types.PrepareRenameParams(
        doc_id(), types.Position(3, 16)))  # `.append`: an attribute
    assert off is None


async def test_switched_off(tclient):
    tclient.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"typeHints": False, "variableNames": False}))
    hints = await tclient.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=doc_id(), range=types.Range(types.Position(0, 0), types.Position(9, 0))))
    assert not hints
    actions = await tclient.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(), range=types.Range(types.Position(1, 5), types.Position(1, 5)),
        context=types.CodeActionContext(diagnostics=[])))
    assert not actions
    tclient.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"typeHints": True, "variableNames": True}))


async def test_a_cancelled_inlay_hint_request_is_answered_and_the_server_goes_on(tclient, lsp):
    uri = "file:///e2e/infer-cancel.py"
    lsp.open_doc(tclient, uri, DOC)
    future = tclient.protocol.send_request(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri),
        range=types.Range(types.Position(0, 0), types.Position(9, 0))), msg_id="cancel-hints")
    tclient.cancel_request(types.CancelParams(id="cancel-hints"))
    try:
        await asyncio.wait_for(asyncio.wrap_future(future), 10)
    except Exception as exc:  # cancelled: an error response is the answer
        assert "cancel" in str(exc).lower()
    hints = await tclient.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri), range=types.Range(types.Position(0, 0), types.Position(9, 0))))
    assert hints is not None


async def test_an_edit_makes_new_hints(tclient, lsp, tiny_engine):
    uri = "file:///e2e/infer-edit.py"
    lsp.open_doc(tclient, uri, DOC)
    whole = types.Range(types.Position(0, 0), types.Position(20, 0))
    before = await tclient.text_document_inlay_hint_async(types.InlayHintParams(types.TextDocumentIdentifier(uri), whole))
    tclient.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="def one(x):\n    return x\n")]))
    after = await tclient.text_document_inlay_hint_async(types.InlayHintParams(types.TextDocumentIdentifier(uri), whole))
    assert len(before) == len([s for s in type_slots(DOC) if infer(DOC, s, tiny_engine)])  # confidence 0
    want = [s for s in type_slots("def one(x):\n    return x\n") if infer("def one(x):\n    return x\n", s, tiny_engine)]
    assert len(after) == len(want)


async def test_automatic_code_actions_sample_no_names(tclient, lsp):
    uri = "file:///e2e/infer-auto.py"
    lsp.open_doc(tclient, uri, DOC)

    async def renames(kind):
        actions = await tclient.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri), range=types.Range(types.Position(1, 5), types.Position(1, 5)),
            context=types.CodeActionContext(diagnostics=[], trigger_kind=kind)))
        return [a.title for a in actions if a.title.startswith("Rename")]
    assert await renames(types.CodeActionTriggerKind.Automatic) == []  # a cursor move: nothing sampled
    invoked = await renames(types.CodeActionTriggerKind.Invoked)
    assert invoked and all(t.startswith("Rename 'result' to") for t in invoked)
    assert await renames(types.CodeActionTriggerKind.Automatic) == invoked  # now from the cache
