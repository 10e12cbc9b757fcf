"""The server's request bookkeeping, in process, with a slow fake engine: cancellation, stale requests,
loading, the typed-through cache. (The real engine and a real client are in test_e2e.py.)"""
import asyncio
import json
import threading
import time

import pytest
from lsprotocol import types
from pygls.workspace import Workspace
from doubles import SlowEngine

from infill.engines import Completion, CompletionResult
from lsp.options import ServerOptions
from lsp.server import build_server
from lsp.worker import Job

pytestmark = pytest.mark.asyncio
URI = "file:///doc.py"


@pytest.fixture
def server():
    s = build_server(ServerOptions())
    s.engine, s.state = SlowEngine(), "ready"
    s.protocol._workspace = Workspace(None)
    s.workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, "x = "))
    return s


def ask(server, uri=URI):
    return asyncio.ensure_future(server.complete(uri, types.Position(0, 4)))


async def until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def drained(server):
    """Wait until the worker has finished every job queued so far (jobs run in order)."""
    def nothing():
        yield
    await server.worker.run(Job("file:///drain", None), nothing)


async def test_cancel_stops_generation_within_a_few_tokens_on_the_worker(server):
    task = ask(server)
    await until(lambda: server.engine.steps > 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    before = server.engine.steps  # the flag is set now
    await drained(server)
    assert server.engine.closed.is_set()
    assert server.engine.steps <= before + 3
    assert server.engine.threads == {"infill-model"}  # never on the event loop's thread


async def test_a_cancel_seen_by_the_reader_stops_the_model_while_the_loop_is_busy(server):
    server.protocol._ctx_msg_id.set(7)  # what pygls sets while it dispatches request 7
    task = ask(server)
    await until(lambda: server.engine.steps > 0)
    server.on_read(json.dumps({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 7}}).encode())
    before = server.engine.steps
    assert server.engine.closed.wait(10)  # blocks the loop: only the reader's flag can stop the worker
    assert server.engine.steps <= before + 3
    assert await asyncio.wait_for(task, 10) is None


async def test_a_newer_completion_request_seen_by_the_reader_stops_the_older_one(server):
    server.protocol._ctx_msg_id.set("old")
    task = ask(server)
    await until(lambda: server.engine.steps > 0)
    server.on_read(json.dumps({"jsonrpc": "2.0", "id": "new", "method": "textDocument/inlineCompletion", "params": {
        "textDocument": {"uri": URI}, "position": {"line": 0, "character": 4},
        "context": {"triggerKind": 2}}}).encode())
    assert server.engine.closed.wait(10)  # the loop is blocked: the reader's flag stopped it
    assert await asyncio.wait_for(task, 10) is None


async def test_an_edit_seen_by_the_reader_drops_a_request_before_it_starts(server):
    server.workspace.put_text_document(types.TextDocumentItem("file:///other.py", "python", 1, "y = "))
    running = ask(server, "file:///other.py")
    await until(lambda: server.engine.steps > 0)
    queued = ask(server)  # URI at version 1, behind `running`
    await asyncio.sleep(0.01)
    server.on_read(json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
        "textDocument": {"uri": URI, "version": 2}, "contentChanges": [{"text": "x = 1"}]}}).encode())
    running.cancel()
    assert await asyncio.wait_for(queued, 10) is None
    await drained(server)
    assert server.engine.started == 1


async def test_a_newer_request_for_the_document_ends_the_older_one(server):
    first = ask(server)
    await until(lambda: server.engine.started == 1)  # conditions, not fixed sleeps: CI may be loaded
    second = ask(server)
    assert await asyncio.wait_for(first, 30) is None
    await until(lambda: server.engine.started >= 2)
    assert server.engine.started == 2
    second.cancel()


async def test_a_stale_request_waiting_for_its_turn_never_starts(server):
    server.workspace.put_text_document(types.TextDocumentItem("file:///other.py", "python", 1, "y = "))
    running = ask(server, "file:///other.py")
    await until(lambda: server.engine.started == 1)
    queued = [ask(server) for _ in range(3)]  # all for URI: only the last is current
    await asyncio.sleep(0.01)
    running.cancel()
    assert await asyncio.wait_for(queued[0], 30) is None
    assert await asyncio.wait_for(queued[1], 30) is None
    await until(lambda: server.engine.started >= 2)  # the last one starts; the jobs run in order
    await asyncio.sleep(0.05)
    assert server.engine.started == 2  # `running` and the last one only
    queued[2].cancel()


async def test_an_edit_makes_the_running_request_stale(server):
    task = ask(server)
    await until(lambda: server.engine.steps > 0)
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 2, "x = 1"))
    assert await asyncio.wait_for(task, 10) is None


class CountingEngine:
    """Answers every request with the same middle, counting the calls."""

    name, device = "counting", "cpu"

    def __init__(self, middle):
        self.middle, self.calls = middle, 0

    def stream_infill(self, req):
        self.calls += 1
        yield
        return CompletionResult([Completion(self.middle, 3, 0.0, "stop")], 1.0, 1)

    def drop_session(self, key):
        pass


async def test_typing_the_ghost_text_gets_the_rest_without_a_model_call(server):
    server.engine = CountingEngine("range(len(xs)):")
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, "for i in \nprint(i)\n"))
    first = await server.complete(URI, types.Position(0, 9))
    assert first.text == "range(len(xs)):" and server.engine.calls == 1
    for version, typed in enumerate(["r", "ra", "ran"], start=2):
        server.workspace.put_text_document(
            types.TextDocumentItem(URI, "python", version, f"for i in {typed}\nprint(i)\n"))
        edit = await server.complete(URI, types.Position(0, 9 + len(typed)))
        assert edit.text == "range(len(xs)):"[len(typed):] and edit.start == edit.end == 9 + len(typed)
        assert server.status()["typedThrough"] is True
    assert server.engine.calls == 1
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 5, "for i in rat\nprint(i)\n"))
    await server.complete(URI, types.Position(0, 12))  # typed something else: the model again
    assert server.engine.calls == 2 and server.status()["typedThrough"] is False


async def test_session_cache_off_when_cache_mb_is_zero(server):
    server.options = ServerOptions(cache_mb=0)
    task = ask(server)
    await until(lambda: server.engine.sessions)  # the request reached the engine (no fixed sleep: load)
    task.cancel()
    assert server.engine.sessions == [None]


async def test_requests_while_loading_or_without_a_model_return_at_once(server, tmp_path):
    server.engine, server.state = None, "loading"
    # At once: without waiting for a model (a bound far above any scheduling delay, not a timing).
    assert await asyncio.wait_for(server.complete(URI, types.Position(0, 4)), 10) is None
    server._load_id = 7
    await server._load(7, ServerOptions(model=str(tmp_path / "missing")))
    assert server.state == "failed" and "missing" in server.message
    assert server.status()["state"] == "failed"
    assert await server.complete(URI, types.Position(0, 4)) is None


def handler(server, method):
    return server.protocol.fm.features[method]


async def test_unknown_uris_and_requests_before_initialize_are_empty(server):
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier("file:///never-opened.py"), position=types.Position(0, 0),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    inline = handler(server, types.TEXT_DOCUMENT_INLINE_COMPLETION)
    assert await inline(params) == types.InlineCompletionList(items=[])
    fresh = build_server(ServerOptions())
    fresh.engine = SlowEngine()  # no initialize: no workspace yet, the guard answers empty
    assert await handler(fresh, types.TEXT_DOCUMENT_INLINE_COMPLETION)(params) == \
        types.InlineCompletionList(items=[])
    hover = types.HoverParams(text_document=types.TextDocumentIdentifier(URI), position=types.Position(0, 0))
    assert await handler(fresh, types.TEXT_DOCUMENT_HOVER)(hover) is None
    assert fresh.engine.started == 0
