"""Repository context end to end: a two-file workspace where the completion needs the other file's
definition. In process (the prompt the engine receives) and through a real infill-lsp subprocess
(what `infill/status` reports)."""
from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from infill.engines import InfillRequest
from lsp.options import ServerOptions
from lsp.server import InfillServer

UTIL = 'def frobnicate(widget, scale):\n    """Scale a widget."""\n    return widget * scale\n'
MAIN = "from .util import frobnicate\n\n\ndef run(widget):\n    return frobnicate(\n"
CURSOR = types.Position(4, len("    return frobnicate("))


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg/__init__.py").write_text("")
    (root / "pkg/util.py").write_text(UTIL)
    (root / "pkg/main.py").write_text(MAIN)
    return root


class Recording:
    """The engine, and every request it got with the text of its prompt."""

    def __init__(self, engine):
        self.engine = engine
        self.prompts: list[str] = []
        self.results = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def stream_infill(self, req: InfillRequest):
        prompt, _ = self.engine.build_prompt(req)
        self.prompts.append(self.engine.tokenizer.decode(prompt))
        result = yield from self.engine.stream_infill(req)
        self.results.append(result)
        return result


def serve(root, engine, main: str = MAIN, **options) -> InfillServer:
    server = InfillServer(ServerOptions(**{"max_tokens": 4, **options}))
    server.protocol._workspace = Workspace(root.as_uri(), workspace_folders=[
        types.WorkspaceFolder(root.as_uri(), root.name)])
    server.engine, server.state = Recording(engine), "ready"
    server.start_context()
    if options.get("context", True):
        assert server.repo_context.ready.wait(60)
    uri = (root / "pkg/main.py").as_uri()
    server.workspace.put_text_document(types.TextDocumentItem(uri, "python", 1, main))
    server.repo_context.opened(uri, main)
    return server


def test_with_context_the_prompt_holds_the_other_files_definition(project, tiny_engine):
    server = serve(project, tiny_engine)
    uri = (project / "pkg/main.py").as_uri()
    asyncio.run(server.complete(uri, CURSOR))
    [prompt] = server.engine.prompts
    assert "def frobnicate(widget, scale):" in prompt and prompt.index("def frobnicate") < prompt.index("def run")
    status = server.status()
    assert status["contextFiles"] == ["pkg/util.py"] and status["contextTokens"] > 0


def test_without_context_it_does_not(project, tiny_engine):
    for options in ({"context": False}, {"context_tokens": 0}, {"context_sources": ()}):
        server = serve(project, tiny_engine, **options)
        asyncio.run(server.complete((project / "pkg/main.py").as_uri(), CURSOR))
        [prompt] = server.engine.prompts
        assert "def frobnicate(widget, scale)" not in prompt, options
        assert not server.status()["contextFiles"]
    assert not serve(project, tiny_engine, context=False).repo_context.workspace.folders  # nothing indexed


CACHE_UTIL = ("def frobnicate_widgets(widget, scale):\n    return widget * scale\n\n\n"
              "def twice(widget):\n    return frobnicate_widgets(widget, 2)\n\n\n"
              "def thrice(widget):\n    return frobnicate_widgets(widget, 3)\n")
CACHE_MAIN = "from . import util\n\n\ndef run(widget):\n    return util.frob"


def test_the_cache_model_supplies_a_name_from_the_other_file(project, tiny_engine):
    """The tiny model is random: alone it cannot spell `frobnicate_widgets`; the cache model, reading
    the imported file through the server's sources, can. Without context (no sources) it cannot either."""
    (project / "pkg/util.py").write_text(CACHE_UTIL)
    uri = (project / "pkg/main.py").as_uri()
    cursor = types.Position(4, len("    return util.frob"))
    completions = {}
    for name, options in (("cache", {}), ("model", {"cache": False}), ("no sources", {"context": False})):
        server = serve(project, tiny_engine, CACHE_MAIN, max_tokens=12, time_budget_ms=60_000, **options)
        edit = asyncio.run(server.complete(uri, cursor))
        completions[name] = edit.text if edit is not None else ""
        assert server.status()["cache"] == (name != "model")
        assert server.engine.results[-1].extra["cache"] == (name != "model")
    assert completions["cache"].startswith("nicate_widgets("), completions
    assert not completions["model"].startswith("nicate"), completions
    assert not completions["no sources"].startswith("nicate"), completions


def test_the_session_cache_reuses_the_prefix_after_a_keystroke(project, tiny_engine):
    server = serve(project, tiny_engine)
    uri = (project / "pkg/main.py").as_uri()

    async def run():
        await server.complete(uri, CURSOR)
        for version, typed in enumerate(("w", "wi"), 2):
            at = types.Position(CURSOR.line, CURSOR.character + len(typed) - 1)
            server.workspace.update_text_document(types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                                                  types.TextDocumentContentChangePartial(types.Range(at, at), typed[-1]))
            server.repo_context.changed(uri, server.workspace.get_text_document(uri).source, CURSOR.line)
            await server.complete(uri, types.Position(CURSOR.line, CURSOR.character + len(typed)))
    asyncio.run(run())
    first, *later = server.engine.results
    assert first.extra["context_tokens"] > 0
    for result in later:
        assert result.extra["context_tokens"] == first.extra["context_tokens"]
        assert result.cached_tokens >= result.prompt_tokens - 3


async def wait_status(client, ok, timeout: float = 60.0):
    """The newest status that satisfies `ok` (event-driven polling, generous timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if client.statuses and ok(client.statuses[-1]):
            return client.statuses[-1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no such status: {client.statuses[-3:]}")


@pytest.mark.asyncio(loop_scope="function")
async def test_through_the_server_status_names_the_context_files(project, tiny_checkpoint, lsp):
    from pytest_lsp import ClientServerConfig

    client = await ClientServerConfig(server_command=[*lsp.SERVER, "--model", str(tiny_checkpoint),
                                                      "--device", "cpu"]).start()
    client.statuses = []
    client.feature("infill/status")(lambda ls, params: client.statuses.append(params))
    await client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=project.as_uri(),
        workspace_folders=[types.WorkspaceFolder(project.as_uri(), "proj")],
        initialization_options={"maxTokens": 4, "timeBudgetMs": 60000}))
    try:
        await lsp.wait_state(client, ("ready",))
        uri = (project / "pkg/main.py").as_uri()
        lsp.open_doc(client, uri, MAIN)
        await lsp.inline(client, uri, CURSOR.line, CURSOR.character)
        status = await wait_status(client, lambda s: getattr(s, "contextFiles", None) is not None)
        assert status.contextFiles == ["pkg/util.py"] and status.contextTokens > 0
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"context": False}))
        await lsp.inline(client, uri, CURSOR.line, CURSOR.character)
        status = await wait_status(client, lambda s: getattr(s, "contextFiles", None) == [])
        assert status.contextTokens == 0
    finally:
        await lsp.stop_client(client)
