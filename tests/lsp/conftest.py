"""Fixtures for the language-server tests: an infill-lsp subprocess on the tiny checkpoint, a client."""
from __future__ import annotations

import asyncio
import sys
import time

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

SERVER = [sys.executable, "-m", "lsp"]


async def start_client(*args: str, init_options=None, capabilities=None, wait_ready=True, command=SERVER,
                       env=None) -> LanguageClient:
    """A pytest-lsp client of an initialized infill-lsp (`command`) started with `args` (and `env`);
    it records `infill/status`, and keeps the server's answer to `initialize` as `init_result`."""
    client = await ClientServerConfig(server_command=list(command) + list(args), server_env=env).start()
    client.statuses = []
    client.feature("infill/status")(lambda ls, params: client.statuses.append(params))
    client.init_result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities or types.ClientCapabilities(),
        initialization_options=init_options))
    if wait_ready:
        await wait_state(client, ("ready", "failed"))
    return client


async def wait_state(client: LanguageClient, states, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.statuses and client.statuses[-1].state in states:
            return client.statuses[-1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"server never reached {states}: {client.statuses}")


async def stop_client(client: LanguageClient) -> None:
    await client.shutdown_session()
    await client.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_checkpoint):
    """One server for a module's tests (starting one costs seconds); tests use their own URIs. The cache
    model is off: its completions read every open document, so a test's expected edit (computed from its
    own document) would depend on the other tests' documents (tests/lsp/test_cache_e2e.py tests it on)."""
    c = await start_client("--model", str(tiny_checkpoint), "--device", "cpu",
                           init_options={"maxTokens": 24, "timeBudgetMs": 60000, "cache": False})
    yield c
    await stop_client(c)


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))


async def completion(client: LanguageClient, uri: str, line: int, character: int) -> types.CompletionList:
    return await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character)))


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint):
    from infill.engines.local import LocalEngine

    return LocalEngine.from_dir(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def lsp():
    """The helpers above, for test modules (conftest modules are not importable by name)."""
    import types as pytypes

    return pytypes.SimpleNamespace(start_client=start_client, stop_client=stop_client, wait_state=wait_state,
                                   open_doc=open_doc, inline=inline, completion=completion, SERVER=SERVER)
