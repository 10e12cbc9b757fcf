"""The language server: pygls plumbing around the engine and the feature functions.

Rules:
- Handlers are short and of one shape: find the document, convert the position (`lsp.positions`),
  call a feature function (`lsp.completion`), return an lsprotocol type. They never raise to the
  client: a failure is logged and answered with an empty result.
- The model loads in a background thread; until it is ready, or when it failed to load, requests get
  an empty result at once, never a wait, and the server stays up.
- Generation runs on the event-loop thread, one request at a time (the engine is not thread-safe),
  awaiting between tokens, so `$/cancelRequest` and newer requests stop it within a token step. A
  request is stale as soon as a newer request for its document arrives or the document changes; a
  stale request stops, and one still waiting for its turn never starts.
- Positions are UTF-16 unless the client offers UTF-8 (then UTF-8, which costs no conversion).
- `infill/status` (a notification) tells clients the model, device, state and last latencies.
- Type inference (`lsp.types`: inlay hints, hover, the "Add inferred type annotations" code action)
  and name suggestions (`lsp.names`: the rename code actions, prepareRename's placeholder) run the
  same way, one slot or symbol at a time, and stop when their document changes. Their results are
  cached per document version, so scrolling does not recompute hints. Rename itself is pure scope
  analysis (`lsp.scopes`) and works without a model.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from lsp import names, positions, scopes, syntax
from lsp import types as inference
from lsp.completion import Edit, as_completion_item, complete_steps
from lsp.options import ServerOptions, update_options

log = logging.getLogger(__name__)
VERSION = "0.1.0"
STATUS = "infill/status"


class InfillProtocol(LanguageServerProtocol):
    """pygls' protocol, preferring UTF-8 positions whenever the client offers them."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        if general is not None and general.position_encodings and \
                types.PositionEncodingKind.Utf8 in general.position_encodings:
            general.position_encodings = [types.PositionEncodingKind.Utf8]
        return (yield from super().lsp_initialize(params))

    def structure_message(self, data):
        """pygls drops a request whose params do not parse; answer it with the error instead."""
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data and isinstance(data.get("id"), (int, str)):
                self._send_response(data["id"], error=exc.to_response_error())
            raise


@dataclass
class Latency:
    """The last finished completion, for the status notification."""

    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


class InfillServer(LanguageServer):
    """Holds the options, the engine and the per-document request bookkeeping."""

    def __init__(self, options: ServerOptions | None = None):
        super().__init__("infill-lsp", VERSION, protocol_cls=InfillProtocol)
        self.options = options or ServerOptions()
        self.engine = None
        self.state = "starting"
        """starting (before initialize), loading, ready, failed, or off (completion switched off)."""
        self.message = ""
        self.last = Latency()
        self._load_id = 0
        self._tickets = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._turn = asyncio.Lock()
        self._results: dict[str, tuple[int, dict]] = {}
        """uri -> (document version, {key: inferred type or suggestions}): the per-version cache."""

    # options and the model ------------------------------------------------------------------------
    def configure(self, raw, *, initial: bool = False) -> None:
        """Apply settings; report bad ones; reload the model when its path or device changed."""
        new, problems = update_options(self.options, raw)
        for problem in problems:
            self.show(f"infill-lsp: {problem}", types.MessageType.Warning)
        old, self.options = self.options, new
        if initial or (new.model, new.device) != (old.model, old.device):
            self.start_loading()
        elif new.cache_mb != old.cache_mb and (sessions := getattr(self.engine, "sessions", None)) is not None:
            sessions.limit_bytes = int(new.cache_mb * 2**20)
            sessions.trim()
        self.send_status()

    def start_loading(self) -> None:
        self._load_id += 1
        self.engine, self.state, self.message = None, "loading", ""
        asyncio.ensure_future(self._load(self._load_id, self.options))

    async def _load(self, load_id: int, options: ServerOptions) -> None:
        try:
            engine = await asyncio.to_thread(_load_engine, options)
        except Exception as exc:  # any failure: completion off, server up, the reason shown once
            if load_id == self._load_id:
                self.state, self.message = "failed", " ".join(str(exc).split()) or type(exc).__name__
                self.show(f"infill-lsp: no model, completion is off: {self.message}", types.MessageType.Error)
                self.send_status()
            return
        if load_id == self._load_id:  # a newer configuration did not start another load meanwhile
            self.engine, self.state, self.message = engine, "ready", ""
            self.send_status()

    # messages to the client -----------------------------------------------------------------------
    def show(self, message: str, kind: types.MessageType) -> None:
        log.warning("%s", message)
        try:
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        except Exception:  # no client connected (yet): the log has it
            log.debug("could not show a message", exc_info=True)

    def status(self) -> dict:
        """The `infill/status` payload (documented in docs/lsp.md)."""
        engine = self.engine
        return {
            "state": "off" if not self.options.completion and self.state == "ready" else self.state,
            "model": engine.name if engine is not None else self.options.model,
            "device": engine.device if engine is not None else self.options.device,
            "message": self.message,
            "latencyMs": self.last.latency_ms, "ttftMs": self.last.ttft_ms,
            "promptTokens": self.last.prompt_tokens, "cachedTokens": self.last.cached_tokens,
        }

    def send_status(self) -> None:
        try:
            self.protocol.notify(STATUS, self.status())
        except Exception:
            log.debug("could not send the status", exc_info=True)

    # completion -----------------------------------------------------------------------------------
    def position_encoding(self) -> str:
        return str(self.workspace.position_encoding or positions.UTF16)

    async def complete(self, uri: str, position: types.Position) -> Edit | None:
        """The completion edit at `position` of document `uri`, or None (see the module rules)."""
        ticket = next(self._tickets)
        self._latest[uri] = ticket
        if self.engine is None or not self.options.completion:
            return None
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return None
        text, version = doc.source, doc.version
        offset = positions.to_offset(text, position.line, position.character, self.position_encoding())

        def stale() -> bool:
            return self._latest.get(uri) != ticket or self.workspace.text_documents.get(uri) is not doc \
                or doc.version != version

        async with self._turn:
            if stale() or self.engine is None:
                return None
            started, ttft = time.perf_counter(), None
            steps = complete_steps(text, offset, self.engine, self.options,
                                   language=syntax.language_of(uri, doc.language_id),
                                   session=uri if self.options.cache_mb > 0 else None,
                                   ext=syntax.extension_of(uri))
            try:
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        edit, result = done.value
                        break
                    if ttft is None:
                        ttft = (time.perf_counter() - started) * 1000
                    await asyncio.sleep(0)
                    if stale():
                        return None
            finally:
                steps.close()
        self.last = Latency((time.perf_counter() - started) * 1000, ttft, result.prompt_tokens,
                            result.cached_tokens)
        self.send_status()
        return edit

    # type inference and names ----------------------------------------------------------------------
    def cached(self, uri: str, version: int) -> dict:
        """The result cache of document `uri` at `version` (a new version starts an empty one)."""
        held = self._results.get(uri)
        if held is None or held[0] != version:
            held = self._results[uri] = (version, {})
        return held[1]

    def cached_version(self, uri: str) -> int | None:
        held = self._results.get(uri)
        return held[0] if held else None

    async def _drive(self, uri: str, doc, make_steps):
        """Run a feature generator to its end on the event loop; None when the document changed first."""
        version = doc.version

        def stale() -> bool:
            return self.workspace.text_documents.get(uri) is not doc or doc.version != version

        async with self._turn:
            if stale() or self.engine is None:
                return None
            steps = make_steps(self.engine)
            try:
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        return done.value
                    await asyncio.sleep(0)
                    if stale():
                        return None
            finally:
                steps.close()

    async def infer_types(self, uri: str, doc, slots: list) -> list:
        """The inferred type (or None) of each slot of `doc`, from the cache when it has them."""
        version = doc.version
        cache, out = self.cached(uri, version), []
        budget = self.options.time_budget_ms / 1000
        for slot in slots:
            key = ("type", slot)
            if key not in cache:
                if self.engine is None or not self.options.type_hints:
                    return [None] * len(slots)
                text = doc.source
                result = await self._drive(uri, doc, lambda e, s=slot: inference.infer_steps(
                    text, s, e, time_budget_s=budget))
                if self.workspace.text_documents.get(uri) is not doc or doc.version != version:
                    return [None] * len(slots)
                cache[key] = result
            out.append(cache[key])
        return out

    async def suggest_names(self, uri: str, doc, symbol: scopes.Symbol, *, cached_only: bool = False
                            ) -> list[names.Suggestion]:
        """The top-k names for `symbol` of `doc`, from the cache when it has them (`cached_only`: only
        from the cache)."""
        if self.engine is None or not self.options.variable_names:
            return []
        k = self.options.name_suggestions
        cache, key = self.cached(uri, doc.version), ("names", symbol.spans, k)
        if key not in cache and cached_only:
            return []
        if key not in cache:
            text, budget = doc.source, self.options.time_budget_ms / 1000
            result = await self._drive(uri, doc, lambda e: names.suggest_steps(text, symbol, e, k,
                                                                             time_budget_s=budget))
            if result is None or doc.version != self.cached_version(uri):
                return []
            cache[key] = result
        return cache[key]

    def forget(self, uri: str) -> None:
        """A closed document: drop its bookkeeping and its session cache."""
        self._latest.pop(uri, None)
        self._results.pop(uri, None)
        if self.engine is not None:
            self.engine.drop_session(uri)


def _load_engine(options: ServerOptions):
    """Load (the model lookup of `infill complete`) and warm up, in a worker thread."""
    from infill.engines import GenerationConfig, InfillRequest
    from infill.engines.load import load_engine

    engine = load_engine(options.model, device=options.device, cache_mb=options.cache_mb)
    engine.infill(InfillRequest(config=GenerationConfig(max_tokens=2), prefix="x = ", suffix="\n"))  # first-call costs, now
    return engine


def _range(text: str, edit: Edit, encoding: str) -> types.Range:
    start = positions.to_position(text, edit.start, encoding)
    end = positions.to_position(text, edit.end, encoding)
    return types.Range(types.Position(*start), types.Position(*end))


def _span_range(text: str, start: int, end: int, encoding: str) -> types.Range:
    return _range(text, Edit("", start, end), encoding)


def _python_doc(ls: InfillServer, uri: str):
    """The open document `uri` when it is Python, else None."""
    doc = ls.workspace.text_documents.get(uri)
    if doc is None or syntax.language_of(uri, doc.language_id) != "python":
        return None
    return doc


def _symbol_at(ls: InfillServer, uri: str, position: types.Position):
    """(document, encoding, offset, symbol) for a Python position, or None where no renameable symbol is."""
    doc = _python_doc(ls, uri)
    if doc is None:
        return None
    enc = ls.position_encoding()
    offset = positions.to_offset(doc.source, position.line, position.character, enc)
    symbol = scopes.symbol_at(doc.source, offset)
    return None if symbol is None else (doc, enc, offset, symbol)


def _workspace_edit(uri: str, text: str, edits: list[tuple[int, int, str]], encoding: str) -> types.WorkspaceEdit:
    return types.WorkspaceEdit(changes={uri: [
        types.TextEdit(_span_range(text, start, end, encoding), new) for start, end, new in edits]})


def build_server(options: ServerOptions | None = None) -> InfillServer:
    """A server with every handler registered."""
    server = InfillServer(options)

    @server.feature(types.INITIALIZE)
    def initialize(ls: InfillServer, params: types.InitializeParams) -> None:
        ls.configure(params.initialization_options, initial=True)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: InfillServer, params: types.DidChangeConfigurationParams) -> None:
        ls.configure(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: InfillServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: InfillServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        edit, text = await _completion(ls, params.text_document.uri, params.position)
        if edit is None:
            return types.InlineCompletionList(items=[])
        item = types.InlineCompletionItem(insert_text=edit.text, range=_range(text, edit, ls.position_encoding()))
        return types.InlineCompletionList(items=[item])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[]))
    async def completion(ls: InfillServer, params: types.CompletionParams) -> types.CompletionList:
        edit, text = await _completion(ls, params.text_document.uri, params.position)
        if edit is None:
            return types.CompletionList(is_incomplete=True, items=[])
        label, whole = as_completion_item(text, edit)
        item = types.CompletionItem(
            label=label, kind=types.CompletionItemKind.Snippet, detail="infill", filter_text=whole.text,
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(_range(text, whole, ls.position_encoding()), whole.text))
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
    async def inlay_hint(ls: InfillServer, params: types.InlayHintParams) -> list[types.InlayHint] | None:
        async def hints():
            doc = _python_doc(ls, params.text_document.uri)
            if doc is None or not ls.options.type_hints:
                return []
            text, enc = doc.source, ls.position_encoding()
            start = positions.to_offset(text, params.range.start.line, params.range.start.character, enc)
            end = positions.to_offset(text, params.range.end.line, params.range.end.character, enc)
            slots = [s for s in inference.type_slots(text) if start <= s.at <= end]
            out = []
            for slot, t in zip(slots, await ls.infer_types(params.text_document.uri, doc, slots)):
                if t is not None and t.probability >= ls.options.type_confidence:
                    out.append(types.InlayHint(
                        position=types.Position(*positions.to_position(text, slot.at, enc)),
                        label=inference.hint_label(slot, t), kind=types.InlayHintKind.Type,
                        tooltip=f"inferred by infill, p = {t.probability:.2f}"))
            return out
        return await _guarded(hints(), [], "inlay hints", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: InfillServer, params: types.HoverParams) -> types.Hover | None:
        async def answer():
            doc = _python_doc(ls, params.text_document.uri)
            if doc is None or not ls.options.type_hints:
                return None
            text, enc = doc.source, ls.position_encoding()
            offset = positions.to_offset(text, params.position.line, params.position.character, enc)
            slot = next((s for s in inference.type_slots(text) if s.anchor[0] <= offset <= s.anchor[1]), None)
            if slot is None:
                return None
            [t] = await ls.infer_types(params.text_document.uri, doc, [slot])
            if t is None:
                return None
            shown = f"{slot.name}: {t.annotation}" if slot.kind == "param" else f"def {slot.name}(...) -> {t.annotation}"
            return types.Hover(
                contents=types.MarkupContent(types.MarkupKind.Markdown,
                                             f"```python\n{shown}\n```\ninferred by infill, p = {t.probability:.2f}"),
                range=_span_range(text, *slot.anchor, enc))
        return await _guarded(answer(), None, "hover", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.RefactorRewrite], resolve_provider=False))
    async def code_action(ls: InfillServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        async def actions():
            uri = params.text_document.uri
            doc = _python_doc(ls, uri)
            if doc is None:
                return []
            text, enc = doc.source, ls.position_encoding()
            start = positions.to_offset(text, params.range.start.line, params.range.start.character, enc)
            end = positions.to_offset(text, params.range.end.line, params.range.end.character, enc)
            out = []
            if ls.options.type_hints:
                slots = [s for s in inference.type_slots(text) if s.function[0] <= end and start <= s.function[1]]
                inferred = await ls.infer_types(uri, doc, slots)
                inserts = inference.annotation_edits(slots, inferred, ls.options.type_confidence)
                if inserts:
                    out.append(types.CodeAction(
                        title="Add inferred type annotations", kind=types.CodeActionKind.RefactorRewrite,
                        edit=_workspace_edit(uri, text, [(at, at, new) for at, new in inserts], enc)))
            symbol = scopes.symbol_at(text, start) if ls.options.variable_names else None
            if symbol is not None:
                # Editors ask for actions on every cursor move (Automatic): sampling names then would run
                # the model all the time, so only an explicit request (Invoked) computes them.
                automatic = params.context.trigger_kind == types.CodeActionTriggerKind.Automatic
                for s in await ls.suggest_names(uri, doc, symbol, cached_only=automatic):
                    out.append(types.CodeAction(
                        title=f"Rename '{symbol.name}' to '{s.name}'", kind=types.CodeActionKind.RefactorRewrite,
                        edit=_workspace_edit(uri, text, names.rename_edits(symbol, s.name), enc)))
            return out
        return await _guarded(actions(), [], "code actions", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    async def prepare_rename(ls: InfillServer, params: types.PrepareRenameParams):
        async def answer():
            found = _symbol_at(ls, params.text_document.uri, params.position)
            if found is None:
                return None
            doc, enc, offset, symbol = found
            text = doc.source
            here = next(s for s in symbol.spans if s[0] <= offset <= s[1])
            best = await ls.suggest_names(params.text_document.uri, doc, symbol)
            return types.PrepareRenamePlaceholder(range=_span_range(text, *here, enc),
                                                  placeholder=best[0].name if best else symbol.name)
        return await _guarded(answer(), None, "prepareRename", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_RENAME, types.RenameOptions(prepare_provider=True))
    async def rename(ls: InfillServer, params: types.RenameParams) -> types.WorkspaceEdit | None:
        async def answer():
            uri = params.text_document.uri
            found = _symbol_at(ls, uri, params.position)
            if found is None:
                return None
            doc, enc, _, symbol = found
            try:
                edits = names.rename_edits(symbol, params.new_name)
            except ValueError as exc:
                ls.show(f"infill-lsp: {exc}", types.MessageType.Warning)
                return None
            return _workspace_edit(uri, doc.source, edits, enc)
        return await _guarded(answer(), None, "rename", params.text_document.uri)

    return server


async def _guarded(work, empty, what: str, uri: str):
    """`work`'s answer, or `empty` on any failure (logged, never raised to the client)."""
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s failed for %s", what, uri)
        return empty


async def _completion(ls: InfillServer, uri: str, position: types.Position) -> tuple[Edit | None, str]:
    """(edit, the text it applies to); (None, "") on any failure, which is logged, never raised."""
    try:
        doc = ls.workspace.text_documents.get(uri)
        text = doc.source if doc is not None else ""
        return await ls.complete(uri, position), text
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("completion failed at %s %s", uri, position)
        return None, ""
