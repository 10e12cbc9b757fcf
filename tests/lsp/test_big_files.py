"""An 880 KiB file with non-ASCII text: byte -> string offsets are one pass per parse, not one decode
per identifier (which made one codeAction block the server for 16.8 s).
The bounds are generous (a loaded 2-core machine); the quadratic version takes minutes."""
import time

import pytest

from lsp import scopes
from lsp import types as inference

BLOCK = "def f{i}(alpha, beta):\n    # café, ünïcode ☕ 😀\n    total = alpha + beta\n    return total\n\n"
TEXT = "".join(BLOCK.format(i=i) for i in range(9100))


def test_the_file_is_880_kib_and_not_ascii():
    assert 870 * 1024 < len(TEXT.encode()) < 890 * 1024 and not TEXT.isascii()


def test_scopes_of_a_big_file_in_linear_time():
    started = time.perf_counter()
    symbol = scopes.symbol_at(TEXT, TEXT.rindex("total"))
    assert time.perf_counter() - started < 30  # 2.5 s here; the quadratic version ~100 s
    last = TEXT.rindex("def ")
    assert symbol.name == "total"
    assert [TEXT[a:b] for a, b in symbol.spans] == ["total", "total"]
    assert symbol.spans[0][0] == TEXT.index("total", last)  # string offsets, not byte offsets


def test_type_slots_of_a_big_file_in_linear_time():
    started = time.perf_counter()
    slots = inference.type_slots(TEXT)
    assert time.perf_counter() - started < 30  # 2 s here; the quadratic version ~50 s
    assert len(slots) == 3 * 9100
    last = slots[-1]
    assert TEXT[last.anchor[0]:last.anchor[1]] == "f9099" and last.kind == "return"


@pytest.mark.asyncio
async def test_a_code_action_on_a_big_file_is_answered(lsp, tiny_checkpoint):
    from lsprotocol import types

    client = await lsp.start_client("--model", str(tiny_checkpoint), "--device", "cpu",
                                    init_options={"typeHints": False})
    try:
        uri = "file:///big.py"
        lsp.open_doc(client, uri, TEXT)
        at = TEXT.rindex("total")
        line, column = TEXT.count("\n", 0, at), at - TEXT.rindex("\n", 0, at) - 1  # ASCII line: UTF-16 = chars
        started = time.perf_counter()
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=types.Range(types.Position(line, column), types.Position(line, column)),
            context=types.CodeActionContext(diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Automatic)))
        assert time.perf_counter() - started < 60
        assert not actions  # names come only on request (Invoked); the scope analysis ran
        edit = await client.text_document_rename_async(types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, column), new_name="s"))
        assert len(edit.changes[uri]) == 2
        assert edit.changes[uri][0].range.start.line == line - 1
    finally:
        await lsp.stop_client(client)
