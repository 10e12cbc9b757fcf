"""The server's request bookkeeping, in process, with a slow fake engine: cancellation, stale requests,
loading. (The real engine and a real client are in test_e2e.py.)"""
import asyncio
import time

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from infill.engines import Completion, CompletionResult
from lsp.options import ServerOptions
from lsp.server import build_server

pytestmark = pytest.mark.asyncio
URI = "file:///doc.py"


class SlowEngine:
    """Yields forever, one token every 2 ms, counting the steps it was asked for."""

    name, device = "slow", "cpu"

    def __init__(self):
        self.steps, self.started, self.sessions = 0, 0, []

    def stream_infill(self, req):
        self.started += 1
        self.sessions.append(req.session)
        for _ in range(100_000):
            self.steps += 1
            time.sleep(0.002)
            yield
        return CompletionResult([Completion("x", 1, 0.0, "length")], 1.0, 1)

    def drop_session(self, key):
        pass


@pytest.fixture
def server():
    s = build_server(ServerOptions())
    s.engine, s.state = SlowEngine(), "ready"
    s.protocol._workspace = Workspace(None)
    s.workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, "x = "))
    return s


def ask(server, uri=URI):
    return asyncio.ensure_future(server.complete(uri, types.Position(0, 4)))


async def test_cancel_stops_generation_within_a_step(server):
    task = ask(server)
    await asyncio.sleep(0.05)
    assert server.engine.steps > 0
    task.cancel()
    before = server.engine.steps
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.engine.steps <= before + 1


async def test_a_newer_request_for_the_document_ends_the_older_one(server):
    first = ask(server)
    await asyncio.sleep(0.03)
    second = ask(server)
    assert await asyncio.wait_for(first, 1.0) is None
    await asyncio.sleep(0.03)
    assert server.engine.started == 2
    second.cancel()


async def test_a_stale_request_waiting_for_its_turn_never_starts(server):
    server.workspace.put_text_document(types.TextDocumentItem("file:///other.py", "python", 1, "y = "))
    running = ask(server, "file:///other.py")
    await asyncio.sleep(0.03)
    queued = [ask(server) for _ in range(3)]  # all for URI: only the last is current
    await asyncio.sleep(0.01)
    running.cancel()
    assert await asyncio.wait_for(queued[0], 1.0) is None
    assert await asyncio.wait_for(queued[1], 1.0) is None
    await asyncio.sleep(0.03)
    assert server.engine.started == 2  # `running` and the last one only
    queued[2].cancel()


async def test_an_edit_makes_the_running_request_stale(server):
    task = ask(server)
    await asyncio.sleep(0.03)
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 2, "x = 1"))
    assert await asyncio.wait_for(task, 1.0) is None


async def test_session_cache_off_when_cache_mb_is_zero(server):
    server.options = ServerOptions(cache_mb=0)
    task = ask(server)
    await asyncio.sleep(0.01)
    task.cancel()
    assert server.engine.sessions == [None]


async def test_requests_while_loading_or_without_a_model_return_at_once(server, tmp_path):
    server.engine, server.state = None, "loading"
    started = time.perf_counter()
    assert await server.complete(URI, types.Position(0, 4)) is None
    assert time.perf_counter() - started < 0.05
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
