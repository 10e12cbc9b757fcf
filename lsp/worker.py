"""Where the model runs: one worker thread, jobs that stop between tokens, and what the reader thread sees.

The engine is not thread-safe and a forward pass (or a blocking HTTP read) must never hold the event
loop, so every engine call runs on one worker thread, one job at a time, in arrival order. The event
loop only submits jobs and awaits their results; it stays free to answer cheap requests.

Rules:
- A job runs a feature's step generator (`stream_infill`, `complete_steps`, `infer_steps`,
  `suggest_steps`) to its value; between steps it checks its cancellation flag (a `threading.Event`)
  and its document's version, and stops (value None) when either says so. A job whose flag is set or
  whose document changed before its turn never starts.
- The flag is set by: the awaiting task being cancelled (pygls cancels it on `$/cancelRequest`), and,
  from the reader thread (`peek`, before the message reaches the loop, so it works while the loop is
  busy): a `$/cancelRequest` for the job's request id, a newer completion request for its document,
  and any didChange/didOpen/didClose of its document. `peek` also records each open document's
  newest version (lock-guarded), which the worker compares with the job's; a URI that is not open
  leaves nothing behind.
- Setting the flag of the running job also calls its `interrupt` (the engine's, where it has one:
  the OpenAI engine cancels its HTTP read), so a job blocked in a read from a hung server stops at
  once instead of at the read timeout. A job that raises once its flag is set went stale: value None.
- Responses are written only on the loop thread: a job's value goes back through the loop's future.
- The thread is a daemon thread of its own rather than a `ThreadPoolExecutor`: the interpreter joins
  an executor's threads at exit, so a job stuck in a read from a hung server would hold the exit.
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

COMPLETIONS = frozenset({"textDocument/inlineCompletion", "textDocument/completion"})
DOCUMENT_EVENTS = frozenset({"textDocument/didChange", "textDocument/didOpen", "textDocument/didClose"})
_KEEP_CANCELLED = 256
"""Request ids cancelled before their job existed, kept (oldest dropped first)."""


@dataclass(eq=False)
class Job:
    """One piece of model work for document `uri` at `version` (None: not known to `peek`)."""

    uri: str
    version: int | None
    msg_id: object = None
    completion: bool = False
    stale: Callable[[], bool] | None = None
    """The loop side's own staleness test (document replaced, newer ticket), read from the worker."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    interrupt: Callable[[], None] | None = None
    """Stops the engine call in flight at once (thread-safe; `Engine.interrupt`), where the engine has one."""


class ModelWorker:
    """The worker thread and the bookkeeping `peek` and the jobs share (see the module rules)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._latest_completion: dict[str, object] = {}
        self._jobs: set[Job] = set()
        self._cancelled_ids: OrderedDict[object, None] = OrderedDict()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running: Job | None = None
        self.pending = 0
        """Jobs submitted and not finished (read on the loop: is the model busy?)."""

    # the reader thread ----------------------------------------------------------------------------
    def peek(self, body: bytes) -> None:
        """Look at a message as the reader thread reads it; cancel what it makes stale."""
        try:
            message = json.loads(body)
            method = message.get("method")
            params = message.get("params") or {}
        except (ValueError, AttributeError, TypeError):
            return  # pygls reports it
        if method is None or not isinstance(params, dict):
            return
        if method == "$/cancelRequest":
            self.cancel_id(params.get("id"))
            return
        doc = params.get("textDocument")
        uri = doc.get("uri") if isinstance(doc, dict) else None
        if not isinstance(uri, str):
            return
        if method in DOCUMENT_EVENTS:
            version = doc.get("version")
            with self._lock:
                if method == "textDocument/didClose":
                    self._versions.pop(uri, None)
                    self._latest_completion.pop(uri, None)
                elif isinstance(version, int) and (method == "textDocument/didOpen" or uri in self._versions):
                    self._versions[uri] = version  # open documents only: the tables stay bounded
                for job in self._jobs:
                    if job.uri == uri:
                        self._cancel(job)
        elif method in COMPLETIONS and "id" in message:
            with self._lock:
                if uri in self._versions:
                    self._latest_completion[uri] = message["id"]
                for job in self._jobs:
                    if job.uri == uri and job.completion and job.msg_id != message["id"]:
                        self._cancel(job)

    def cancel_id(self, msg_id) -> None:
        if not isinstance(msg_id, (int, str)):
            return
        with self._lock:
            hit = False
            for job in self._jobs:
                if job.msg_id == msg_id:
                    self._cancel(job)
                    hit = True
            if not hit:
                self._cancelled_ids[msg_id] = None
                while len(self._cancelled_ids) > _KEEP_CANCELLED:
                    self._cancelled_ids.popitem(last=False)

    def _cancel(self, job: Job) -> None:
        """Set the job's flag; if it is running, interrupt the engine call it is blocked in."""
        job.cancelled.set()
        if job is self._running and job.interrupt is not None:
            try:
                job.interrupt()
            except Exception:
                log.exception("interrupting the engine failed")

    # jobs -----------------------------------------------------------------------------------------
    def is_stale(self, job: Job) -> bool:
        """The job should stop (or not start): see the module rules."""
        if job.cancelled.is_set():
            return True
        with self._lock:
            if job.version is not None and self._versions.get(job.uri, job.version) != job.version:
                return True
            if job.completion and job.msg_id is not None and \
                    self._latest_completion.get(job.uri, job.msg_id) != job.msg_id:
                return True
        return job.stale is not None and job.stale()

    async def run(self, job: Job, make_steps: Callable[[], object], on_step: Callable[[], None] | None = None):
        """Run `make_steps()` (a step generator, made on the worker) to its value on the worker; None
        when the job went stale first. Cancelling the awaiting task sets the job's flag."""
        with self._lock:
            if job.msg_id is not None and job.msg_id in self._cancelled_ids:
                return None
            self._jobs.add(job)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending += 1
        self._start()
        self._queue.put((job, make_steps, on_step, loop, future))
        try:
            return await future
        except asyncio.CancelledError:
            self._cancel(job)
            raise
        finally:
            self.pending -= 1
            with self._lock:
                self._jobs.discard(job)

    def call(self, fn: Callable[[], object]) -> None:
        """Run `fn()` on the worker, after the jobs already queued (engine calls that answer nothing)."""
        self._start()
        self._queue.put((None, fn, None, None, None))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="infill-model", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            job, make_steps, on_step, loop, future = self._queue.get()
            if job is None:
                try:
                    make_steps()
                except BaseException:  # a Rust panic too: the worker thread must outlive any call
                    log.exception("a model call failed")
                continue
            try:
                value, error = self._steps(job, make_steps, on_step), None
            except BaseException as exc:  # handed to the awaiting task, which logs it
                value, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, value, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _steps(self, job: Job, make_steps, on_step):
        self._running = job  # before the first staleness test: a cancel from now on interrupts
        try:
            if self.is_stale(job):
                return None
            steps = make_steps()
            try:
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        return done.value
                    if on_step is not None:
                        on_step()
                    if self.is_stale(job):
                        return None
            except Exception:
                if job.cancelled.is_set():
                    return None  # interrupted (or failed after going stale): cancelled
                raise
            finally:
                steps.close()
        finally:
            self._running = None


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
