"""Every LSP feature end to end, over stdio, on every engine: a tiny infill checkpoint, a tiny random
transformers model of each FIM template family, and the OpenAI engine against a loopback stub that
returns logprobs (backed by a tiny transformers model).

Each answer is compared with the feature functions run in process on an engine of the same model, so
these tests are about every engine reaching every feature (and the plumbing), not about what random
models say. A server that returns no logprobs turns type hints and names off, and says why."""
import ast
import types as pytypes

import pytest
import pytest_asyncio
from hf_models import FAMILIES, build
from lsprotocol import types
from openai_stub import HFModel, Stub
from pytest_lsp import ClientServerConfig
from support import SCALE_DOC

from infill.engines import load_engine, run_to_end
from infill.engines.openai import OpenAIEngine
from lsp import answers, names, scopes
from lsp.completion import as_completion_item, complete
from lsp.options import ServerOptions, update_options
from lsp.types import annotation_edits, infer, type_slots

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = SCALE_DOC
URI = "file:///e2e/engines.py"
INIT = {"typeConfidence": 0.0, "timeBudgetMs": 60000, "nameSuggestions": 2, "maxTokens": 12}
ENGINES = ["local", *(f"hf-{f}" for f in sorted(FAMILIES)), "openai"]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def served(request, tiny_checkpoint, tmp_path_factory, lsp):
    """(client, in-process engine of the same model) for one engine kind."""
    kind, stub = request.param, None
    if kind == "local":
        model = str(tiny_checkpoint)
        engine = load_engine(model, device="cpu")
    elif kind.startswith("hf-"):
        model = str(build(tmp_path_factory.mktemp(kind), kind[3:]))
        engine = load_engine(model, device="cpu")
    else:
        directory = build(tmp_path_factory.mktemp("served"), "qwen")
        stub = Stub(model=HFModel(directory)).__enter__()
        model = f"openai:{stub.url}#qwen"
        engine = OpenAIEngine(stub.url, template="qwen")
    client = await lsp.start_client("--model", model, "--device", "cpu", init_options=INIT)
    lsp.open_doc(client, URI, DOC)
    yield pytypes.SimpleNamespace(client=client, engine=engine, kind=kind)
    await lsp.stop_client(client)
    if stub is not None:
        stub.__exit__(None, None, None)


def doc_id():
    return types.TextDocumentIdentifier(URI)


def offset(p: types.Position) -> int:
    return sum(len(x) for x in DOC.splitlines(keepends=True)[:p.line]) + p.character


def apply(text, edits):
    for e in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


def run_names(engine, symbol, k):
    return run_to_end(names.suggest_steps(DOC, symbol, engine, k))


async def test_status_names_the_engine(served):
    status = served.client.statuses[-1]
    off = status.off._asdict()
    if "cache" in served.engine.capabilities:  # engines with logits mix in the cache model
        assert status.state == "ready" and off == {} and status.cache is True
    else:  # a completions server returns no distribution to mix into
        assert status.state == "ready" and set(off) == {"cache"} and status.cache is False
    assert {"infill", "score"} <= served.engine.capabilities


async def test_inline_completion_and_completion_item(served, lsp):
    options, _ = update_options(ServerOptions(), INIT)
    at = types.Position(1, 13)  # `result = []`, mid-line after "result = "
    want, _ = complete(DOC, offset(at), served.engine, options, language="python", ext=".py")
    got = await lsp.inline(served.client, URI, at.line, at.character)
    if want is None:
        assert got.items == []
    else:
        [item] = got.items
        assert item.insert_text == want.text and offset(item.range.start) == want.start
    listed = await lsp.completion(served.client, URI, at.line, at.character)
    if want is None:
        assert listed.items == []
    else:
        label, whole = as_completion_item(DOC, want)
        [item] = listed.items
        assert item.label == label and item.text_edit.new_text == whole.text


async def test_inlay_hints_hover_and_the_annotation_action(served):
    c, engine = served.client, served.engine
    slots = [s for s in type_slots(DOC) if s.at < DOC.index("def other")]
    want = {s: infer(DOC, s, engine) for s in slots}
    hints = await c.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=doc_id(), range=types.Range(types.Position(0, 0), types.Position(5, 0))))
    got = [(h.label, offset(h.position)) for h in hints or []]
    assert got == [(answers.inference.hint_label(s, t), s.at) for s, t in want.items() if t is not None]
    assert all(0 < t.probability <= 1 for t in want.values() if t is not None)
    values = next(s for s in slots if s.name == "values")
    hover = await c.text_document_hover_async(types.HoverParams(doc_id(), types.Position(0, 11)))
    if want[values] is None:
        assert hover is None
    else:
        assert f"values: {want[values].annotation}" in hover.contents.value
        assert f"p = {want[values].probability:.2f}" in hover.contents.value
    actions = await c.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(), range=types.Range(types.Position(0, 5), types.Position(0, 5)),
        context=types.CodeActionContext(diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Invoked)))
    annotate = [a for a in actions if (a.data or {}).get("kind") == answers.ANNOTATE_KIND]
    if any(t is not None for t in want.values()):
        [action] = annotate
        out = apply(DOC, action.edit.changes[URI])
        ast.parse(out)
        expected = DOC
        for at, new in sorted(annotation_edits(list(want), list(want.values()), 0.0), reverse=True):
            expected = expected[:at] + new + expected[at:]
        assert out == expected != DOC
    else:
        assert annotate == []


async def test_name_actions_prepare_rename_and_rename(served):
    c, engine = served.client, served.engine
    symbol = scopes.symbol_at(DOC, DOC.index("result"))
    want = run_names(engine, symbol, INIT["nameSuggestions"])
    actions = await c.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(), range=types.Range(types.Position(1, 5), types.Position(1, 5)),
        context=types.CodeActionContext(diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Invoked)))
    renames = [a for a in actions if (a.data or {}).get("kind") == answers.RENAME_KIND]
    assert [(a.data["from"], a.data["to"]) for a in renames] == [("result", s.name) for s in want]
    for a in renames:
        out = apply(DOC, a.edit.changes[URI])
        assert out.count(a.data["to"]) >= 3 and out.split("def other")[1] == DOC.split("def other")[1]
    prepared = await c.text_document_prepare_rename_async(types.PrepareRenameParams(doc_id(), types.Position(4, 13)))
    assert prepared.placeholder == (want[0].name if want else "result")
    assert (offset(prepared.range.start), offset(prepared.range.end)) == (DOC.index("return result") + 7,
                                                                          DOC.index("return result") + 13)
    edit = await c.text_document_rename_async(types.RenameParams(doc_id(), types.Position(4, 13), "acc"))
    out = apply(DOC, edit.changes[URI])
    assert out.split("def other")[0] == DOC.split("def other")[0].replace("result", "acc")
    assert out.split("def other")[1] == DOC.split("def other")[1]


async def test_a_server_without_logprobs_turns_types_and_names_off(lsp):
    with Stub(reply="int", logprobs=False) as stub:
        c = await lsp.start_client("--model", f"openai:{stub.url}#qwen", init_options=INIT)
        try:
            status = c.statuses[-1]
            assert status.state == "ready"
            off = status.off._asdict()
            assert set(off) == {"typeHints", "variableNames", "cache"} and "no logprobs" in off["typeHints"]
            assert "distribution" in off["cache"]
            lsp.open_doc(c, URI, DOC)
            hints = await c.text_document_inlay_hint_async(types.InlayHintParams(
                text_document=doc_id(), range=types.Range(types.Position(0, 0), types.Position(5, 0))))
            assert not hints
            warned = [m.message for m in c.messages if "are off" in m.message]
            assert len(warned) == 2 and all("no logprobs" in m for m in warned)
            got = await lsp.inline(c, URI, 1, 13)  # completion still works
            assert [i.insert_text for i in got.items] == ["int"]
            edit = await c.text_document_rename_async(types.RenameParams(doc_id(), types.Position(4, 13), "acc"))
            assert apply(DOC, edit.changes[URI]).count("acc") == 3
        finally:
            await lsp.stop_client(c)
        assert not any(b.get("echo") for _, _, b in stub.requests if b.get("stream"))


async def test_prepare_rename_is_advertised_to_every_client(lsp, tmp_path):
    """pygls alone answers `renameProvider: true` to a client that does not declare prepareSupport."""
    c = await ClientServerConfig(server_command=lsp.SERVER + ["--model", str(tmp_path / "none")]).start()
    try:
        result = await c.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))
        assert result.capabilities.rename_provider == types.RenameOptions(prepare_provider=True)
    finally:
        await lsp.stop_client(c)


async def test_a_server_that_cannot_heal_says_so(lsp):
    """Issue 28: a server that ignores llama.cpp's `grammar` gets the unhealed prompt after a space, and
    the status and a window message say that token healing is off; one that follows it heals."""
    for grammar in (False, True):
        with Stub(reply="total", grammar=grammar) as stub:
            c = await lsp.start_client("--model", f"openai:{stub.url}", init_options=INIT)
            try:
                off = c.statuses[-1].off._asdict()
                warned = [m.message for m in c.messages if "token healing is off" in m.message]
                lsp.open_doc(c, URI, "def f(total):\n    return \n")
                await lsp.inline(c, URI, 1, 11)
            finally:
                await lsp.stop_client(c)
            bodies = [b for b in stub.completions() if "def f(total)" in b["prompt"]]  # not the warm-up
            assert bodies
            if grammar:
                assert "tokenHealing" not in off and not warned
                assert all(b["prompt"].endswith("return") and b["grammar"].startswith('root ::= " "') for b in bodies)
            else:
                assert "unhealed" in off["tokenHealing"] and len(warned) == 1
                assert all(b["prompt"].endswith("return ") and "grammar" not in b for b in bodies)
