"""The language server: pygls plumbing around the engine and the feature functions.

Rules:
- Handlers are short and of one shape (jedi-language-server's): get the document, convert positions,
  call a feature function (`lsp.completion`, `lsp.types`, `lsp.names`), return an lsprotocol type
  (`lsp.answers`). One guard (`guarded`) keeps them from raising to the client: a failure is logged
  and answered with the handler's empty result.
- The model loads in a background thread; until it is ready, or when it failed to load, requests get
  an empty result at once, never a wait, and the server stays up.
- The model is driven in one place (`InfillServer.drive`), on one worker thread (`lsp.worker`): one
  job at a time (the engine is not thread-safe), checking between tokens whether to stop, so the
  event loop never runs a forward pass or waits on a model server, and a cheap request (didChange,
  rename, prepareRename, hover from the cache, a model-free code action) is answered within
  milliseconds whatever the model is doing. A job stops, or never starts, when it is cancelled
  (`$/cancelRequest`), when a newer completion request for its document arrives, or when its document
  changes; the reader thread sees these before the loop does (`on_read`), so they work while the
  loop is busy, and they interrupt an engine call in flight where the engine can (`interrupt`: the
  OpenAI engine's HTTP read). Every other engine call (dropping or trimming session caches) is queued on the same
  worker. Responses are written from the loop thread only.
- Typed-through cache: when the user types the first characters of the ghost text last shown for a
  document (and nothing else changed), the rest of that suggestion is the answer, with no model call
  (`lsp.completion.typed_through`); the status says `typedThrough`.
- prepareRename asks the model for its placeholder only when the worker is idle; while it is busy
  the placeholder comes from the name cache or is the current name, so a rename never waits.
- Repository context (`lsp.context`): the workspace folders are indexed in a background thread after
  `initialized` (only with the `context` option on); didOpen, didChange, didSave and
  workspace/didChangeWatchedFiles keep the index and the ring of recent chunks up to date; a
  completion asks `RepositoryContext.for_completion`, which recomputes only when a source changed,
  so typing at the cursor keeps the same context and the session cache keeps hitting.
- Positions are UTF-16 unless the client offers UTF-8 (then UTF-8, which costs no conversion).
- `infill/status` (a notification) tells clients the model, device, state and last latencies, and
  in `off` which features this engine cannot serve and why (`lsp.types.unavailable`,
  `lsp.names.unavailable`: an OpenAI-compatible server without logprobs; `tokenHealing`: a server
  that cannot constrain the first token); a window message says it once per loaded model.
- Filling holes (`lsp.fill`, `lsp.holes`): the "Fill N holes in `name`" code action (any language with a
  grammar) runs the model only when the user asks (trigger Invoked); an automatic request gets the
  action from the per-version cache or nothing. It is one job on the worker, dropped when the document
  changes; the status's `holes` says how many were filled, how, and how long it took.
- Type inference (`lsp.types`: inlay hints, hover, the "Add inferred type annotations" code action)
  and name suggestions (`lsp.names`: the rename code actions, prepareRename's placeholder) run the
  same way, one slot or symbol at a time, and stop when their document changes. Their results are
  cached per document version, so scrolling does not recompute hints. Rename itself is pure scope
  analysis (`lsp.scopes`) and works without a model. `prepareProvider` is always advertised.
- Acceptance records (`lsp.acceptance`, `lsp.records`), only with `telemetry: "local"`: every
  suggestion returned carries the `infill.accepted` command with its id; `infill/didShow`,
  `infill/didAccept`, `infill/didReject` and that command report what the user did; didChange and
  didClose feed retention; the time rules run once a second while anything is pending.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from lsp import answers, documents, fill, holes, names, positions, scopes, syntax
from lsp.acceptance import COMMAND as ACCEPTED, Acceptance, Clock
from lsp.context import RepositoryContext, completion_context, path_of
from lsp import types as inference
from lsp.completion import Edit, complete_steps, typed_through
from lsp.options import ServerOptions, update_options
from lsp.records import RecordStore, default_dir
from lsp.worker import Job, ModelWorker

log = logging.getLogger(__name__)
VERSION = "0.1.0"
STATUS = "infill/status"
DID_SHOW, DID_ACCEPT, DID_REJECT = "infill/didShow", "infill/didAccept", "infill/didReject"
SWEEP_S = 1.0
OFF_LOOP_CHARS = 100_000
"""A document at least this long is parsed and scope-analysed on a thread, off the event loop."""


class InfillProtocol(LanguageServerProtocol):
    """pygls' protocol, preferring UTF-8 positions whenever the client offers them."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        if general is not None and general.position_encodings and \
                types.PositionEncodingKind.Utf8 in general.position_encodings:
            general.position_encodings = [types.PositionEncodingKind.Utf8]
        result = yield from super().lsp_initialize(params)
        # pygls says `renameProvider: true` unless the client declares prepareSupport, which hides
        # prepareRename (and its suggested placeholder) from clients that would use it
        result.capabilities.rename_provider = types.RenameOptions(prepare_provider=True)
        return result

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        """All the changes at once, in linear time (`lsp.documents`), then the server's handler."""
        documents.update(self.workspace, params)
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

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
    tokens: int | None = None
    """Tokens generated for the suggestion shown."""
    typed_through: bool = False
    context_tokens: int | None = None
    context_files: list[str] | None = None


class InfillServer(LanguageServer):
    """Holds the options, the engine and the per-document request bookkeeping."""

    def __init__(self, options: ServerOptions | None = None, clock: Clock | None = None):
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
        self.worker = ModelWorker()
        self._shown: dict[str, tuple[str, Edit]] = {}
        """uri -> (document text, edit): the last suggestion shown, for the typed-through cache."""
        self._results: dict[str, tuple[int, dict]] = {}
        """uri -> (document version, {key: inferred type or suggestions}): the per-version cache."""
        self.off: dict[str, str] = {}
        """Features the engine cannot serve (typeHints, variableNames) and why."""
        self.repo_context = RepositoryContext()
        self.context_started = False
        self.last_fill: dict | None = None
        """The last hole filling, for the status: holes, filled, mode, ms."""
        self.acceptance = Acceptance(clock)
        self._offered: dict[str, tuple[Edit, str]] = {}
        """uri -> (edit, id): the last suggestion recorded, for the command of the item that shows it."""
        self._sweeper: asyncio.Future | None = None
        self.too_large: dict[str, str] = {}
        """uri -> why, for the open documents over `maxDocumentMb` (see `check_size`)."""

    # options and the model ------------------------------------------------------------------------
    def configure(self, raw, *, initial: bool = False) -> None:
        """Apply settings; report bad ones; reload the model when its path or device changed."""
        new, problems = update_options(self.options, raw)
        for problem in problems:
            self.show(f"infill-lsp: {problem}", types.MessageType.Warning)
        old, self.options = self.options, new
        if initial or (new.telemetry, new.telemetry_text, new.telemetry_dir) != \
                (old.telemetry, old.telemetry_text, old.telemetry_dir):
            self.acceptance.configure(RecordStore(new.telemetry_dir or default_dir(), self.show_warning)
                                      if new.telemetry == "local" else None, new.telemetry_text)
        if new.max_document_mb != old.max_document_mb:
            for uri in list(self.workspace.text_documents):
                self.check_size(uri)
        if new.context and self.context_started is False and not initial:
            self.start_context()
        if initial or (new.model, new.device) != (old.model, old.device):
            self.start_loading()
        elif new.cache_mb != old.cache_mb and (sessions := getattr(self.engine, "sessions", None)) is not None:
            def trim(limit=int(new.cache_mb * 2**20)):
                sessions.limit_bytes = limit
                sessions.trim()
            self.worker.call(trim)
        self.send_status()

    def start_context(self) -> None:
        """Index the workspace folders for repository context, in the background (only with context on)."""
        if not self.options.context:
            return
        self.context_started = True
        folders = [p for f in (self.workspace.folders or {}).values() if (p := path_of(f.uri)) is not None]
        if not folders and self.workspace.root_uri and (root := path_of(self.workspace.root_uri)) is not None:
            folders = [root]
        self.repo_context.start(folders, max_file_bytes=self.options.context_file_kb * 1024)

    def context_for(self, uri: str, doc, line: int) -> dict:
        """The repository-context and cache-source arguments of a completion on `line` of `doc`."""
        try:
            return completion_context(self.repo_context, uri, doc.source, line, self.options, cache=self.cache_on(),
                                      python=syntax.language_of(uri, doc.language_id) == "python")
        except Exception:  # context is a bonus: a completion without it is still a completion
            log.exception("gathering repository context failed for %s", uri)
            return {}

    def cache_on(self) -> bool:
        """Whether completions mix in the cache model: the option, and an engine with logits."""
        return self.options.cache and (self.engine is None or "cache" not in self.off)

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
            healing = engine.unavailable.get("heal") if "heal" not in engine.capabilities else None
            self.off = {k: why for k, why in (("typeHints", inference.unavailable(engine)),
                                              ("variableNames", names.unavailable(engine)),
                                              ("tokenHealing", healing),
                                              ("cache", cache_unavailable(engine))) if why}
            for feature, why in self.off.items():
                shown = {"typeHints": "type hints are", "variableNames": "name suggestions are",
                         "tokenHealing": "token healing is", "cache": "the cache model is"}[feature]
                self.show(f"infill-lsp: {shown} off for {engine.name}: {why}", types.MessageType.Warning)
            self.send_status()

    # messages to the client -----------------------------------------------------------------------
    def show(self, message: str, kind: types.MessageType) -> None:
        log.warning("%s", message)
        try:
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        except Exception:  # no client connected (yet): the log has it
            log.debug("could not show a message", exc_info=True)

    def show_warning(self, message: str) -> None:
        self.show(f"infill-lsp: {message}", types.MessageType.Warning)

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
            "tokens": self.last.tokens, "typedThrough": self.last.typed_through,
            "contextTokens": self.last.context_tokens, "contextFiles": self.last.context_files,
            "cache": self.cache_on() and engine is not None,
            "off": dict(self.off), "holes": self.last_fill,
            "tooLarge": dict(self.too_large),
        }

    def send_status(self) -> None:
        try:
            self.protocol.notify(STATUS, self.status())
        except Exception:
            log.debug("could not send the status", exc_info=True)

    # documents and positions --------------------------------------------------------------------
    def position_encoding(self) -> str:
        return str(self.workspace.position_encoding or positions.UTF16)

    def document(self, uri: str, *, python: bool = False):
        """The open document `uri` (only a Python one with `python`), else None; None too when it is
        over `maxDocumentMb`, which turns every feature off for it (editing still works)."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None or python and syntax.language_of(uri, doc.language_id) != "python" or \
                len(doc.source) > self.options.max_document_mb * 2**20:
            return None
        return doc

    def check_size(self, uri: str) -> bool:
        """Whether open document `uri` is within `maxDocumentMb`; the status (and a message, once)
        says when it crosses the cap either way."""
        doc = self.workspace.text_documents.get(uri)
        mb = len(doc.source) / 2**20 if doc is not None else 0.0
        if mb <= self.options.max_document_mb:
            if self.too_large.pop(uri, None) is not None:
                self.send_status()
            return True
        if uri not in self.too_large:
            self.too_large[uri] = f"too large ({mb:.1f} MiB > maxDocumentMb {self.options.max_document_mb:g})"
            self.show(f"infill-lsp: {uri.rsplit('/', 1)[-1]} is {self.too_large[uri]}: completion, type hints, "
                      "names and rename are off for it", types.MessageType.Warning)
            self.send_status()
        return False

    async def analysed(self, uri: str, doc, fn, *args):
        """`fn(*args)`, a pure analysis of `doc` (a parse, a scope walk): on a thread when the document
        is big (`OFF_LOOP_CHARS`), so the loop keeps answering meanwhile; None when the document
        changed before it finished."""
        if len(doc.source) < OFF_LOOP_CHARS:
            return fn(*args)
        version = doc.version
        result = await asyncio.to_thread(fn, *args)
        return result if self.workspace.text_documents.get(uri) is doc and doc.version == version else None

    def offsets(self, doc, *points: types.Position) -> list[int]:
        return [answers.offset_of(doc.source, p, self.position_encoding()) for p in points]

    # the model, driven in one place ---------------------------------------------------------------
    def on_read(self, body: bytes) -> None:
        """The transport's reader-thread hook: cancellations and edits reach the worker at once."""
        self.worker.peek(body)

    async def drive(self, uri: str, doc, make_steps, *, ticket: int | None = None, on_step=None,
                    completion: bool = False):
        """Run `make_steps(engine)` (a generator that yields between tokens) to its value on the model
        worker; None when it went stale first (see the module rules)."""
        engine, version = self.engine, doc.version
        if engine is None:
            return None

        def stale() -> bool:
            return (ticket is not None and self._latest.get(uri) != ticket) \
                or self.workspace.text_documents.get(uri) is not doc or doc.version != version

        job = Job(uri, version if isinstance(version, int) else None, self.protocol.msg_id,
                  completion=completion, stale=stale, interrupt=getattr(engine, "interrupt", None))
        return await self.worker.run(job, lambda: make_steps(engine), on_step)

    async def complete(self, uri: str, position: types.Position) -> Edit | None:
        """The completion edit at `position` of document `uri`, or None (see the module rules)."""
        ticket = next(self._tickets)
        doc = self.document(uri)
        if doc is None:  # not open (nothing kept for it) or too large
            return None
        self._latest[uri] = ticket
        if self.engine is None or not self.options.completion:
            return None
        text, [offset] = doc.source, self.offsets(doc, position)
        started, first = time.perf_counter(), []
        shown = self._shown.pop(uri, None)
        if shown is not None and (edit := typed_through(*shown, text, offset)) is not None:
            self._shown[uri] = (text, edit)
            self.last = Latency((time.perf_counter() - started) * 1000, typed_through=True)
            self.send_status()
            self.offer(uri, doc, text, edit, None)
            return edit
        # off the loop: it reads workspace files (lsp.workspace reads only regular files, size first)
        context = await asyncio.to_thread(self.context_for, uri, doc, position.line) if self.options.context else {}

        def make_steps(engine):
            return complete_steps(text, offset, engine, self.options,
                                  language=syntax.language_of(uri, doc.language_id),
                                  session=uri if self.options.cache_mb > 0 else None, ext=syntax.extension_of(uri),
                                  version=doc.version, **context)

        def on_step():  # on the worker thread
            if not first:
                first.append((time.perf_counter() - started) * 1000)
        done = await self.drive(uri, doc, make_steps, ticket=ticket, on_step=on_step, completion=True)
        if done is None:
            return None
        edit, result = done
        if edit is not None:
            self._shown[uri] = (text, edit)
        self.last = Latency((time.perf_counter() - started) * 1000, first[0] if first else None,
                            result.prompt_tokens, result.cached_tokens,
                            result.candidates[0].tokens if result.candidates else 0,
                            context_tokens=result.extra.get("context_tokens"),
                            context_files=result.extra.get("context_files"))
        self.send_status()
        self.offer(uri, doc, text, edit, result.extra.get("cache"))
        return edit

    # acceptance records ---------------------------------------------------------------------------
    def offer(self, uri: str, doc, text: str, edit: Edit | None, cache_model) -> None:
        """Record the suggestion `edit` about to be returned (telemetry on only), with `self.last`."""
        if edit is None or self.acceptance.store is None or (engine := self.engine) is None:
            return
        last = self.last
        meta = {"model": engine.name, "engine": _kind(engine),
                "language": syntax.language_of(uri, doc.language_id),
                "latencyMs": _ms(last.latency_ms), "ttftMs": _ms(last.ttft_ms), "promptTokens": last.prompt_tokens,
                "cachedTokens": last.cached_tokens, "contextTokens": last.context_tokens,
                "cacheModel": None if cache_model is None else bool(cache_model),
                "typedThrough": last.typed_through}
        self._offered[uri] = (edit, self.acceptance.offer(uri, text, edit, meta))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())

    def accept_command(self, uri: str, edit: Edit | None) -> types.Command | None:
        """The `infill.accepted` command of the item that shows `edit` (None with telemetry off)."""
        offered = self._offered.pop(uri, None)
        if edit is None or offered is None or offered[0] is not edit:
            return None
        return types.Command(title="Infill: suggestion accepted", command=ACCEPTED, arguments=[{"id": offered[1]}])

    async def _sweep(self) -> None:
        while self.acceptance.pending:
            await asyncio.sleep(SWEEP_S)
            try:
                self.acceptance.sweep()
            except Exception:  # records are a bonus: never a reason to stop
                log.exception("acceptance records: the time rules failed")

    # type inference and names ----------------------------------------------------------------------
    def cached(self, uri: str, version: int) -> dict:
        """The result cache of document `uri` at `version` (a new version starts an empty one)."""
        held = self._results.get(uri)
        if held is None or held[0] != version:
            held = self._results[uri] = (version, {})
        return held[1]

    async def infer_types(self, uri: str, doc, slots: list) -> list:
        """The inferred type (or None) of each slot of `doc`, from the cache when it has them."""
        version, out = doc.version, []
        cache = self.cached(uri, version)
        budget = self.options.time_budget_ms / 1000
        for slot in slots:
            key = ("type", slot)
            if key not in cache:
                if self.engine is None or not self.options.type_hints or "typeHints" in self.off:
                    return [None] * len(slots)
                text = doc.source
                result = await self.drive(uri, doc, lambda e, s=slot: inference.infer_steps(
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
        if self.engine is None or not self.options.variable_names or "variableNames" in self.off:
            return []
        version, k = doc.version, self.options.name_suggestions
        cache, key = self.cached(uri, version), ("names", symbol.spans, k)
        if key not in cache and cached_only:
            return []
        if key not in cache:
            text, budget = doc.source, self.options.time_budget_ms / 1000
            result = await self.drive(uri, doc, lambda e: names.suggest_steps(text, symbol, e, k,
                                                                            time_budget_s=budget))
            if result is None or doc.version != version:
                return []
            cache[key] = result
        return cache[key]

    async def fill_holes(self, uri: str, params: types.CodeActionParams) -> list[types.CodeAction]:
        """The "Fill N holes" action for the cursor or selection of `params` (see the module rules)."""
        doc = self.document(uri)
        if doc is None or not self.options.fill_holes:
            return []
        text, (start, end) = doc.source, self.offsets(doc, params.range.start, params.range.end)
        found = await self.analysed(uri, doc, functools.partial(
            holes.find_holes, language=syntax.language_of(uri, doc.language_id), patterns=self.options.hole_patterns),
            text, start, end)
        if found is None:
            return []
        cache, key = self.cached(uri, doc.version), ("holes", found)
        if key not in cache:
            from infill.engines import CannotFill  # loaded with the engine (the server starts without torch)

            if params.context.trigger_kind == types.CodeActionTriggerKind.Automatic or self.engine is None:
                return []
            started, n, version = time.perf_counter(), len(found.holes), doc.version
            budget = min(self.options.time_budget_ms * n, 60_000) / 1000
            try:
                done = await self.drive(uri, doc, lambda e: fill.fill_steps(
                    text, found, e, max_tokens=self.options.max_tokens, time_budget_s=budget,
                    ext=syntax.extension_of(uri) or None))
            except CannotFill as exc:
                self.show(f"infill-lsp: cannot fill the holes: {exc}", types.MessageType.Warning)
                return []
            if done is None or self.workspace.text_documents.get(uri) is not doc or doc.version != version:
                return []  # the document changed (or the job was cancelled): nothing to offer
            cache[key] = done
            self.last_fill = {"holes": n, "filled": len(done[0]), "mode": done[1].mode,
                              "ms": round((time.perf_counter() - started) * 1000, 1)}
            self.send_status()
        changes, _ = cache[key]
        caps = getattr(self.protocol, "client_capabilities", None)  # set by initialize
        edit_caps = getattr(getattr(caps, "workspace", None), "workspace_edit", None)
        annotate = bool(edit_caps and edit_caps.document_changes and edit_caps.change_annotation_support)
        return answers.fill_action(uri, text, found, changes, self.position_encoding(), version=doc.version,
                                   annotate=annotate)

    def forget(self, uri: str) -> None:
        """A closed document: drop its bookkeeping and its session cache."""
        self._latest.pop(uri, None)
        self._results.pop(uri, None)
        self.repo_context.closed(uri)
        self._shown.pop(uri, None)
        self._offered.pop(uri, None)
        self.acceptance.closed(uri)
        if self.too_large.pop(uri, None) is not None:
            self.send_status()
        if (engine := self.engine) is not None:
            self.worker.call(lambda: engine.drop_session(uri))


def cache_unavailable(engine) -> str | None:
    """Why completions with `engine` cannot mix in the cache model, or None when they can."""
    if "cache" in engine.capabilities:
        return None
    return engine.unavailable.get("cache", "this engine gives no next-token distribution to mix the cache into")


def _kind(engine) -> str:
    """The engine's kind, as `infill.engines.load.ENGINES` names it (else its class name)."""
    from infill.engines.load import ENGINES

    name = type(engine).__name__
    return next((kind for kind, where in ENGINES.items() if where.rsplit(":", 1)[-1] == name), name)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _load_engine(options: ServerOptions):
    """Load (the model lookup of `infill complete`), ask what it can do, and warm up, in a worker thread."""
    from infill.engines import GenerationConfig, InfillRequest, load_engine

    engine = load_engine(options.model, device=options.device, cache_mb=options.cache_mb)
    engine.capabilities  # noqa: B018 (a server is asked once, here, off the event loop)
    engine.infill(InfillRequest("x = ", "\n", GenerationConfig(max_tokens=2)))  # first-call costs, now
    return engine


def guarded(empty):
    """A handler's guard: its answer, or `empty` on any failure (logged, never raised to the client),
    BaseExceptions included (pyo3 raises a Rust panic as one); only cancellation, KeyboardInterrupt and
    SystemExit go through."""
    def wrap(handler):
        @functools.wraps(handler)
        async def run(ls: InfillServer, params):
            try:
                return await handler(ls, params)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # a pyo3 PanicException (a tokenizer's regex engine) is no Exception
                uri = getattr(getattr(params, "text_document", None), "uri", "")
                log.exception("%s failed for %s", handler.__name__, uri)
                return empty() if callable(empty) else empty
        return run
    return wrap


def quiet(handler):
    """A notification handler's guard: a failure is logged, never sent to the client."""
    @functools.wraps(handler)
    def run(ls: InfillServer, params):
        try:
            handler(ls, params)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # as in `guarded`
            log.exception("%s failed", handler.__name__)
    return run


def _param(params, name: str):
    """A field of a custom notification's params (a dict, or the object pygls makes of one)."""
    return params.get(name) if isinstance(params, dict) else getattr(params, name, None)


def build_server(options: ServerOptions | None = None, clock: Clock | None = None) -> InfillServer:
    """A server with every handler registered (`clock`: the acceptance records' time, for tests)."""
    server = InfillServer(options, clock)

    @server.feature(types.INITIALIZE)
    def initialize(ls: InfillServer, params: types.InitializeParams) -> None:
        ls.configure(params.initialization_options, initial=True)

    @server.feature(types.INITIALIZED)
    @quiet
    def initialized(ls: InfillServer, params: types.InitializedParams) -> None:
        if not ls.context_started:
            ls.start_context()

    # repository context: the index follows the documents and the files (lsp.context) ----------------
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @quiet
    def did_open(ls: InfillServer, params: types.DidOpenTextDocumentParams) -> None:
        if ls.check_size(params.text_document.uri):
            ls.repo_context.opened(params.text_document.uri, params.text_document.text)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    @quiet
    def did_change(ls: InfillServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.check_size(params.text_document.uri)
        doc = ls.document(params.text_document.uri)
        if doc is not None:
            ls.acceptance.changed(doc.uri, params.content_changes, doc.source, ls.position_encoding())
        if doc is not None and params.content_changes:
            change = params.content_changes[-1]
            line = change.range.start.line if getattr(change, "range", None) is not None else 0
            ls.repo_context.changed(doc.uri, doc.source, line)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    @quiet
    def did_save(ls: InfillServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.document(params.text_document.uri)
        ls.repo_context.saved(params.text_document.uri, doc.source if doc is not None else None)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    @quiet
    def did_change_watched_files(ls: InfillServer, params: types.DidChangeWatchedFilesParams) -> None:
        for change in params.changes:
            ls.repo_context.watched(change.uri, change.type == types.FileChangeType.Deleted)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: InfillServer, params: types.DidChangeConfigurationParams) -> None:
        ls.configure(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: InfillServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    @guarded(lambda: types.InlineCompletionList(items=[]))
    async def inline_completion(ls: InfillServer, params: types.InlineCompletionParams):
        text = getattr(ls.document(params.text_document.uri), "source", "")
        edit = await ls.complete(params.text_document.uri, params.position)
        command = ls.accept_command(params.text_document.uri, edit)
        return answers.inline_completions(text, edit, ls.position_encoding(), command)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[]))
    @guarded(lambda: types.CompletionList(is_incomplete=True, items=[]))
    async def completion(ls: InfillServer, params: types.CompletionParams):
        text = getattr(ls.document(params.text_document.uri), "source", "")
        edit = await ls.complete(params.text_document.uri, params.position)
        command = ls.accept_command(params.text_document.uri, edit)
        return answers.completion_list(text, edit, ls.position_encoding(), command)

    # acceptance records (lsp.acceptance): what the client saw and did ------------------------------
    @server.feature(DID_SHOW)
    @quiet
    def did_show(ls: InfillServer, params) -> None:
        ls.acceptance.shown(str(_param(params, "id")))

    @server.feature(DID_ACCEPT)
    @quiet
    def did_accept(ls: InfillServer, params) -> None:
        ls.acceptance.accepted(str(_param(params, "id")), _param(params, "kind") or "full",
                               _param(params, "acceptedLength"))

    @server.feature(DID_REJECT)
    @quiet
    def did_reject(ls: InfillServer, params) -> None:
        ls.acceptance.rejected(str(_param(params, "id")))

    @server.command(ACCEPTED)
    def accepted(ls: InfillServer, *args) -> None:
        for arg in args:  # [{"id": ...}]: the item's command, run by the client after a full acceptance
            try:
                if (id := _param(arg, "id")) is not None:
                    ls.acceptance.accepted(str(id), "full")
            except Exception:  # a record is never worth an error in the editor
                log.exception("recording an acceptance failed")

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
    @guarded(list)
    async def inlay_hint(ls: InfillServer, params: types.InlayHintParams):
        doc = ls.document(params.text_document.uri, python=True)
        if doc is None or not ls.options.type_hints:
            return []
        text, (start, end) = doc.source, ls.offsets(doc, params.range.start, params.range.end)
        slots = [s for s in await ls.analysed(params.text_document.uri, doc, inference.type_slots, text) or ()
                 if start <= s.at <= end]
        inferred = await ls.infer_types(params.text_document.uri, doc, slots)
        return answers.inlay_hints(text, slots, inferred, ls.options.type_confidence, ls.position_encoding())

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @guarded(None)
    async def hover(ls: InfillServer, params: types.HoverParams):
        doc = ls.document(params.text_document.uri, python=True)
        if doc is None or not ls.options.type_hints:
            return None
        text, [offset] = doc.source, ls.offsets(doc, params.position)
        slot = await ls.analysed(params.text_document.uri, doc, inference.slot_at, text, offset)
        if slot is None:
            return None
        [t] = await ls.infer_types(params.text_document.uri, doc, [slot])
        return answers.hover(text, slot, t, ls.position_encoding())

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.RefactorRewrite], resolve_provider=False))
    @guarded(list)
    async def code_action(ls: InfillServer, params: types.CodeActionParams):
        uri, doc = params.text_document.uri, ls.document(params.text_document.uri, python=True)
        filled = await ls.fill_holes(uri, params)
        if doc is None:
            return filled
        text, (start, end) = doc.source, ls.offsets(doc, params.range.start, params.range.end)
        slots = await ls.analysed(uri, doc, inference.slots_in, text, start, end) or [] if ls.options.type_hints else []
        inferred = await ls.infer_types(uri, doc, slots)
        symbol = await ls.analysed(uri, doc, scopes.symbol_at, text, start) if ls.options.variable_names else None
        # Editors ask on every cursor move (Automatic): only an explicit request (Invoked) runs the model
        automatic = params.context.trigger_kind == types.CodeActionTriggerKind.Automatic
        suggested = await ls.suggest_names(uri, doc, symbol, cached_only=automatic) if symbol else []
        enc = ls.position_encoding()
        return answers.annotate_action(uri, text, slots, inferred, ls.options.type_confidence, enc) \
            + answers.rename_actions(uri, text, symbol, suggested, enc) + filled

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    @guarded(None)
    async def prepare_rename(ls: InfillServer, params: types.PrepareRenameParams):
        doc = ls.document(params.text_document.uri, python=True)
        text, offset = (doc.source, ls.offsets(doc, params.position)[0]) if doc is not None else ("", 0)
        symbol = await ls.analysed(params.text_document.uri, doc, scopes.symbol_at, text, offset) \
            if doc is not None else None
        if symbol is None:
            return None
        best = await ls.suggest_names(params.text_document.uri, doc, symbol, cached_only=ls.worker.pending > 0)
        return answers.rename_placeholder(text, symbol, offset, best, ls.position_encoding())

    @server.feature(types.TEXT_DOCUMENT_RENAME, types.RenameOptions(prepare_provider=True))
    @guarded(None)
    async def rename(ls: InfillServer, params: types.RenameParams):
        doc = ls.document(params.text_document.uri, python=True)
        text = doc.source if doc is not None else ""
        symbol = await ls.analysed(params.text_document.uri, doc, scopes.symbol_at, text,
                                   ls.offsets(doc, params.position)[0]) if doc is not None else None
        if symbol is None:
            return None
        if not names.is_valid_name(params.new_name):
            ls.show(f"infill-lsp: {params.new_name!r} is not a valid Python name", types.MessageType.Warning)
            return None
        edits = names.rename_edits(symbol, params.new_name)
        return answers.workspace_edit(params.text_document.uri, text, edits, ls.position_encoding())

    return server
