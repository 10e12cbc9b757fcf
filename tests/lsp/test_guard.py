"""A failure that is not an `Exception` (a pyo3 `PanicException` from a tokenizer's regex engine, the
finding of issue 28) costs its request alone: the guard answers empty, the worker thread lives on,
and the next request is answered. KeyboardInterrupt and SystemExit still stop the server."""
import asyncio

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from infill.engines import Completion, CompletionResult
from lsp.options import ServerOptions
from lsp.server import build_server, guarded, quiet
from lsp.worker import Job, ModelWorker

pytestmark = pytest.mark.asyncio
URI = "file:///doc.py"


class Panic(BaseException):
    """What pyo3 raises when Rust code panics (pyo3_runtime.PanicException derives from BaseException)."""


class PanickyEngine:
    """Panics on the first `panics` requests, then completes with "1"."""

    name, device = "panicky", "cpu"

    def __init__(self, panics: int):
        self.panics = panics

    def stream_infill(self, req):
        if self.panics:
            self.panics -= 1
            raise Panic("Onig: Regex search error: retry-limit-in-match over")
        yield
        return CompletionResult([Completion("1", 1, 0.0, "stop")], 1.0, 1)

    def drop_session(self, key):
        pass


def inline(server, line=0, char=4):
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=types.Position(line, char),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    return server.protocol.fm.features[types.TEXT_DOCUMENT_INLINE_COMPLETION](params)


async def test_a_panic_in_the_engine_answers_empty_and_the_next_request_is_served():
    server = build_server(ServerOptions())
    server.engine, server.state = PanickyEngine(panics=2), "ready"
    server.protocol._workspace = Workspace(None)
    server.workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, "x = "))
    empty = types.InlineCompletionList(items=[])
    assert await asyncio.wait_for(inline(server), 60) == empty
    assert await asyncio.wait_for(inline(server), 60) == empty
    answer = await asyncio.wait_for(inline(server), 60)
    assert len(answer.items) == 1 and answer.items[0].insert_text.endswith("1")


async def test_a_panic_in_a_worker_call_leaves_the_worker_alive():
    worker = ModelWorker()

    def panic():
        raise Panic("boom")
    worker.call(panic)
    value = await asyncio.wait_for(worker.run(Job(URI, None), _steps), 60)
    assert value == 42


def _steps():
    yield
    return 42


async def test_the_guards_pass_keyboard_interrupt_and_system_exit_through():
    for stop in (KeyboardInterrupt, SystemExit):
        async def handler(ls, params):
            raise stop()

        def note(ls, params):
            raise stop()
        with pytest.raises(stop):
            await guarded(None)(handler)(None, None)
        with pytest.raises(stop):
            quiet(note)(None, None)

    async def panics(ls, params):
        raise Panic()

    def panics_too(ls, params):
        raise Panic()
    assert await guarded(list)(panics)(None, None) == []
    quiet(panics_too)(None, None)
