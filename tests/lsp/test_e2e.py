"""End to end: infill-lsp as a subprocess, driven over stdio by pytest-lsp's client (and, for broken
input, by raw bytes). The tiny random model's answers are compared with the feature function run in
process on the same checkpoint, so these tests are about plumbing, not about what the model says."""
import asyncio
import time

import pytest
from lsprotocol import types

from lsp.completion import as_completion_item, complete
from lsp.options import ServerOptions

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = "import os\n\n\ndef main(argv):\n    for i in range(\n"
LINE, COL = 4, len("    for i in range(")


def expected_edit(tiny_engine, text, line, col, **options):
    offset = sum(len(x) for x in text.splitlines(keepends=True)[:line]) + col
    edit, _ = complete(text, offset, tiny_engine, ServerOptions(**{"max_tokens": 24, "time_budget_ms": 60000,
                                                                   "cache": False, **options}),
                       language="python", ext=".py")
    return edit


async def test_capabilities_and_status(client):
    caps = client.protocol.server_capabilities if hasattr(client.protocol, "server_capabilities") else None
    status = client.statuses[-1]
    assert status.state == "ready" and status.model and status.device == "cpu"
    del caps


async def test_inline_completion_is_the_feature_functions_answer(client, lsp, tiny_engine):
    uri = "file:///e2e/inline.py"
    lsp.open_doc(client, uri, DOC)
    result = await lsp.inline(client, uri, LINE, COL)
    want = expected_edit(tiny_engine, DOC, LINE, COL)
    assert want is not None  # the tiny model says something at this spot
    assert [i.insert_text for i in result.items] == [want.text]
    rng = result.items[0].range
    assert (rng.start.line, rng.start.character, rng.end.line) == (LINE, COL, LINE)
    status = client.statuses[-1]
    assert status.latencyMs > 0 and status.ttftMs is not None and status.ttftMs <= status.latencyMs


async def test_completion_item_for_editors_without_inline(client, lsp, tiny_engine):
    uri = "file:///e2e/item.py"
    lsp.open_doc(client, uri, DOC)
    result = await lsp.completion(client, uri, LINE, COL)
    want = expected_edit(tiny_engine, DOC, LINE, COL)
    _, whole = as_completion_item(DOC.splitlines(keepends=True)[LINE][:COL], want)
    assert result.is_incomplete and len(result.items) == 1
    assert result.items[0].text_edit.new_text == whole.text


async def test_utf16_columns(client, lsp, tiny_engine):
    uri = "file:///e2e/emoji.py"
    text = "s = '😀😀'\n" + DOC
    lsp.open_doc(client, uri, text)
    result = await lsp.inline(client, uri, 0, len("s = '") + 4)  # after both emoji: 4 UTF-16 units
    want = expected_edit(tiny_engine, text, 0, len("s = '") + 2)
    got = result.items[0] if result.items else None
    assert (got.insert_text if got else None) == (want.text if want else None)
    if got:
        assert got.range.start.character == len("s = '") + 4


async def test_robustness_inputs_get_answers(client, lsp):
    uri = "file:///e2e/robust.py"
    lsp.open_doc(client, uri, DOC)
    assert (await lsp.inline(client, uri, 999, 999)).items is not None  # past the end
    assert (await lsp.inline(client, "file:///never/opened.py", 0, 0)).items == ()
    lsp.open_doc(client, "file:///e2e/broken.py", "x = '\udcff\udcfe'\ny = ")  # lone surrogates
    assert (await lsp.inline(client, "file:///e2e/broken.py", 1, 4)).items is not None
    big = "def f(a):\n    return a\n\n" * 220_000
    lsp.open_doc(client, "file:///e2e/big.py", big)
    started = time.perf_counter()
    assert (await lsp.inline(client, "file:///e2e/big.py", 330_000, 4)).items is not None
    assert time.perf_counter() - started < 10


async def test_a_thousand_rapid_edits_then_the_right_answer(client, lsp, tiny_engine):
    uri = "file:///e2e/edits.py"
    lsp.open_doc(client, uri, "")
    text, version, stale = "", 1, []
    typed = (DOC * 40)[:1000]
    for ch in typed:  # one character at a time at the end, as typing does
        line, col = text.count("\n"), len(text) - (text.rfind("\n") + 1)
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, col), types.Position(line, col)), text=ch)]))
        text += ch
        if version % 50 == 0:  # a request now and then (sent now), made stale by the next edits
            stale.append(client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col + 1),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))))
    line, col = text.count("\n"), len(text) - (text.rfind("\n") + 1)
    result = await lsp.inline(client, uri, line, col)
    want = expected_edit(tiny_engine, text, line, col)
    assert [i.insert_text for i in result.items] == ([want.text] if want else [])
    assert all(f.done() and f.exception() is None for f in stale)  # every request was answered


async def test_cancel_request_gets_an_answer_and_the_server_goes_on(client, lsp):
    uri = "file:///e2e/cancel.py"
    lsp.open_doc(client, uri, DOC)
    future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(LINE, COL),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)),
        msg_id="cancel-me")
    client.cancel_request(types.CancelParams(id="cancel-me"))
    try:
        await asyncio.wait_for(asyncio.wrap_future(future), 10)
    except Exception as exc:  # cancelled: an error response is the answer
        assert "cancel" in str(exc).lower()
    assert (await lsp.inline(client, uri, LINE, COL)).items is not None


async def test_bad_settings_show_a_message_and_fall_back(client, lsp):
    before = len(client.messages)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"infill": {"maxTokens": -4, "temperature": "hot"}}))
    for _ in range(100):
        if len(client.messages) >= before + 2:
            break
        await asyncio.sleep(0.02)
    shown = [m.message for m in client.messages[before:]]
    assert any("maxTokens" in m for m in shown) and any("temperature" in m for m in shown)
    assert (await lsp.inline(client, "file:///e2e/robust.py", 0, 0)).items is not None
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"maxTokens": 24}))


async def test_switching_completion_off(client, lsp):
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"completion": False}))
    uri = "file:///e2e/off.py"
    lsp.open_doc(client, uri, DOC)
    assert (await lsp.inline(client, uri, LINE, COL)).items == ()
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"completion": True}))


async def test_memory_stays_bounded(client):
    pid = client._server.pid
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    assert rss < 2048  # MiB: torch, a 5 MB document and its copies, the tiny model's caches


async def test_a_model_that_fails_to_load(lsp, tmp_path):
    c = await lsp.start_client("--model", str(tmp_path / "no-such-model"))
    try:
        status = c.statuses[-1]
        assert status.state == "failed" and "no-such-model" in status.message
        assert any(m.type == types.MessageType.Error and "no-such-model" in m.message for m in c.messages)
        lsp.open_doc(c, "file:///x.py", DOC)
        assert (await lsp.inline(c, "file:///x.py", LINE, COL)).items == ()
    finally:
        await lsp.stop_client(c)




async def test_an_oversized_model_config_fails_before_it_allocates(lsp, tmp_path, tiny_checkpoint):
    import json
    import shutil

    d = shutil.copytree(tiny_checkpoint, tmp_path / "long")
    data = json.loads((d / "config.json").read_text())
    data["model"]["max_seq_len"] = 2**22  # its RoPE tables took the server from 0.5 to 4.1 GB
    (d / "config.json").write_text(json.dumps(data))
    c = await lsp.start_client("--model", str(d), "--device", "cpu")
    try:
        status = c.statuses[-1]
        assert status.state == "failed" and "max_seq_len" in status.message and "\n" not in status.message
        with open(f"/proc/{c._server.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        assert peak < 2048  # MiB, as for the working server (test_memory_stays_bounded)
    finally:
        await lsp.stop_client(c)
