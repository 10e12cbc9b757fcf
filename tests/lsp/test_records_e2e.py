"""Acceptance records end to end: infill-lsp as a subprocess (tests/lsp/records_server.py: the real
server with a clock the test moves), driven by pytest-lsp's client as an editor would drive it, the
JSONL files read back. Time is simulated (10 s, 30 s, 2 min, 5 min): nothing here waits for it."""
import json
import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types

pytestmark = pytest.mark.asyncio(loop_scope="module")
LAUNCHER = [sys.executable, str(Path(__file__).with_name("records_server.py"))]
DOC = "import os\n\n\ndef main(argv):\n    for i in range(\n"
LINE, COL = 4, len("    for i in range(")


def levenshtein(a: str, b: str) -> int:
    """The textbook dynamic programme, as an independent reference for rapidfuzz."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(lsp, tiny_checkpoint, tmp_path_factory):
    """One server for the module (each test records to its own directory, on its own document)."""
    sockets = tmp_path_factory.mktemp("audit") / "sockets.log"
    client = await lsp.start_client("--model", str(tiny_checkpoint), "--device", "cpu", command=LAUNCHER,
                                    env={**os.environ, "INFILL_SOCKET_LOG": str(sockets)},
                                    init_options={"maxTokens": 12, "timeBudgetMs": 60000, "cache": False})
    client.sockets = sockets
    yield client
    await lsp.stop_client(client)


@pytest.fixture
def client(server, tmp_path, request):
    """The server, recording to tmp_path/records (telemetry local, no text) on a document of this test."""
    server.uri = f"file:///records/{request.node.name}.py"
    settings(server, tmp_path)
    return server


def settings(client, tmp_path, **more) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={
        "telemetry": "local", "telemetryText": False, "telemetryDir": str(tmp_path / "records"), **more}))


async def advance(client, seconds: float) -> None:
    await client.protocol.send_request_async("test/advance", {"seconds": seconds})


def change(client, version: int, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=version, uri=client.uri),
        [types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(*start), types.Position(*end)), text=text)]))


async def suggestion(client, lsp, line=LINE, col=COL) -> types.InlineCompletionItem:
    result = await lsp.inline(client, client.uri, line, col)
    assert len(result.items) == 1, "the tiny model completes nothing here: change DOC"
    return result.items[0]


def suggestion_id(item: types.InlineCompletionItem) -> str:
    assert item.command is not None and item.command.command == "infill.accepted"
    [arg] = item.command.arguments
    return arg["id"]


async def test_show_accept_then_retention_after_edits(client, lsp, tmp_path):
    assert "infill.accepted" in client.init_result.capabilities.execute_command_provider.commands
    lsp.open_doc(client, client.uri, DOC)
    item = await suggestion(client, lsp)
    sid, text = suggestion_id(item), item.insert_text
    client.protocol.notify("infill/didShow", {"id": sid})
    # Tab: the editor inserts the text, then runs the item's command
    change(client, 2, (LINE, COL), (LINE, COL), text)
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="infill.accepted", arguments=[{"id": sid}]))
    await advance(client, 11)  # past the 10 s rule: accepted, so never rejected
    # a line added above moves the accepted text; text typed right after it is not part of it
    change(client, 3, (0, 0), (0, 0), "import sys\n")
    last, tail = LINE + 1 + text.count("\n"), text.split("\n")[-1]
    end = (COL if "\n" not in text else 0) + len(tail)
    change(client, 4, (last, end), (last, end), "  # typed after")
    await advance(client, 19)  # 30 s after the acceptance
    # the user rewrites the first two characters of it
    change(client, 5, (LINE + 1, COL), (LINE + 1, COL + 2), "XYZ")
    await advance(client, 90)  # 2 min
    await advance(client, 180)  # 5 min
    await advance(client, 600)  # nothing after the last check
    got = records(tmp_path / "records")
    assert [(r["event"], r.get("after")) for r in got] == [
        ("show", None), ("accept", None), ("retention", 30), ("retention", 120), ("retention", 300)]
    assert {r["id"] for r in got} == {sid}
    show, accept, r30, r120, r300 = got
    assert accept["kind"] == "full" and accept["acceptedLength"] == len(text) == show["length"]
    assert show["model"] == "tiny" and show["engine"] == "infill" and show["language"] == "python"
    assert show["latencyMs"] > 0 and show["promptTokens"] > 0 and show["extends"] is None
    assert r30["similarity"] == 1.0
    edited = "XYZ" + text[2:]
    want = 1 - levenshtein(text, edited) / max(len(text), len(edited))
    assert r120["similarity"] == r300["similarity"] == pytest.approx(want, abs=1e-4)
    assert "text" not in show and "text" not in r120  # no code text unless asked
    raw = b"".join(f.read_bytes() for f in (tmp_path / "records").glob("*.jsonl"))
    assert len(text.strip()) < 3 or json.dumps(text.strip())[1:-1].encode() not in raw


async def test_show_then_timeout_is_a_reject(client, lsp, tmp_path):
    settings(client, tmp_path, telemetryText=True)
    lsp.open_doc(client, client.uri, DOC)
    item = await suggestion(client, lsp)
    client.protocol.notify("infill/didShow", {"id": suggestion_id(item)})
    await advance(client, 9.5)
    assert [r["event"] for r in records(tmp_path / "records")] == ["show"]
    await advance(client, 0.5)
    show, reject = records(tmp_path / "records")
    assert (reject["event"], reject["reason"], reject["id"]) == ("reject", "timeout", show["id"])
    assert show["text"] == item.insert_text  # asked for (telemetryText)


async def test_a_suggestion_extended_by_the_next_is_not_rejected(client, lsp, tmp_path):
    lsp.open_doc(client, client.uri, DOC)
    first = await suggestion(client, lsp)
    client.protocol.notify("infill/didShow", {"id": suggestion_id(first)})
    await advance(client, 4)
    typed = first.insert_text[:1]  # the user types the suggestion's first character
    change(client, 2, (LINE, COL), (LINE, COL), typed)
    second = await suggestion(client, lsp, LINE, COL + 1)
    assert second.insert_text == first.insert_text[1:]  # the rest of it (typed through)
    client.protocol.notify("infill/didShow", {"id": suggestion_id(second)})
    await advance(client, 8)  # the first is 12 s old now
    await advance(client, 3)  # the second too: it was neither accepted nor continued
    got = records(tmp_path / "records")
    a, b = suggestion_id(first), suggestion_id(second)
    assert [(r["event"], r["id"]) for r in got] == [("show", a), ("show", b), ("reject", b)]
    assert got[1]["extends"] == a and got[1]["typedThrough"] is True


async def test_nothing_is_written_when_off(client, lsp, tmp_path):
    settings(client, tmp_path, telemetry="off")
    lsp.open_doc(client, client.uri, DOC)
    item = await suggestion(client, lsp)
    assert item.command is None  # no id to report
    client.protocol.notify("infill/didShow", {"id": "anything"})
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="infill.accepted", arguments=[{"id": "x"}]))
    await advance(client, 400)
    assert not (tmp_path / "records").exists()


async def test_the_server_opened_no_network_socket(client):
    """Run last: the whole module's event flow happened under the audit hook. No socket but the event
    loop's own AF_UNIX pair: nothing bound, connected, resolved or sent."""
    import socket

    await advance(client, 1)
    lines = client.sockets.read_text().splitlines()
    assert lines, "the audit hook saw nothing: it is not installed"  # the loop's socketpair at least
    for line in lines:
        event = line.split(" ", 1)[0]
        assert event not in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
                             "socket.sendmsg", "socket.gethostbyname"), line
        if event == "socket.__new__":  # args: (socket, family, type, proto)
            family = int(line.rsplit(", ", 3)[1])
            assert family not in (socket.AF_INET, socket.AF_INET6), line
