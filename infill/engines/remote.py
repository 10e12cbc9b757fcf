"""Talking to a model server: the HTTP transport, and what every server engine shares.

Rules:
- The transport talks to the given URL only (httpx, no proxies from the environment, no redirects).
  A failure is one `EngineError` line.
- HTTP is `httpx.AsyncClient` on a private asyncio event loop that the transport owns and runs in the
  calling thread (`loop.run_until_complete`, one task per read), behind synchronous methods (called
  from a coroutine, the loop runs in a helper thread while the caller blocks, as a synchronous client
  would block it). So `interrupt()`, from any thread, cancels the read in flight
  (`loop.call_soon_threadsafe(task.cancel)`): a hung server's read ends at once with `Interrupted`
  instead of at the read timeout. Calls into an engine still come one at a time.
- Requests stream (server-sent events, or one JSON answer), so `stream_infill` yields after every
  chunk; closing the generator closes the response mid-stream, which drops the connection and so
  cancels the request on the server.
- Sampling is ours: every request sets the knobs a server might default otherwise (`NEUTRAL`).
- A server engine (`RemoteEngine`) keeps no sessions (a session asks the server to keep its prompt's
  KV cache instead), estimates repository context at three characters a token (the server's
  tokenizer is unknown) and cannot score several holes or a whole document.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import httpx

from infill.engines import templates as fim
from infill.engines.base import (CannotScore, CompletionResult, GenerationConfig, HolesResult, InfillRequest,
                                 fit_context, rank, run_to_end, sequential_holes)

NEUTRAL = {"repeat_penalty": 1.0, "min_p": 0.0}
NO_CACHE = ("a completions server returns a few sampled tokens, not the next-token distribution the cache model "
            "mixes into; completions come from the server's model alone")
"""Sampling as `infill.generation` does it, where a server's defaults differ (llama-cpp-python's
server penalises repeats by 1.1 and cuts at min_p 0.05 unless told, which changes even greedy output)."""


def server_url(url: str) -> httpx.URL:
    """`url` as the HTTP client reads it (httpx's parser, the one that connects: the one that decides),
    or ValueError in one line: http(s) with a host, and no backslash or user name (`user@host`), since
    parsers read those differently: `http://127.0.0.1\\@evil.example/` is 127.0.0.1 to a browser's URL
    parser and evil.example to Python's."""
    if "\\" in url:
        raise ValueError(f"openai:URL must not contain a backslash, got {url!r}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValueError(f"openai:URL needs an http(s) URL, got {url!r} ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"openai:URL needs an http(s) URL, got {url!r}")
    if parsed.userinfo:
        raise ValueError(f"openai:URL must not carry a user name or password (user@host), got {url!r}")
    return parsed


class EngineError(ValueError):
    """A server that cannot be reached or answers with an error."""


class Interrupted(EngineError):
    """The request was cancelled by `interrupt` (from another thread)."""


class Transport:
    """HTTP to one server, cancellable from another thread (module docstring)."""

    def __init__(self, base_url: str, name: str, timeout_s: float):
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, follow_redirects=False,
                                         trust_env=False)
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._streams = 0
        self._pending = False

    def run(self, coro):
        """Run `coro` to its value on the transport's loop, as a task `interrupt` can cancel."""
        with self._lock:
            if self._pending:
                self._pending = False
                coro.close()
                raise Interrupted(f"{self.name}: interrupted")
            self._task = task = self._loop.create_task(coro)
        try:
            return self._until(task)
        except asyncio.CancelledError:
            raise Interrupted(f"{self.name}: interrupted") from None
        finally:
            with self._lock:
                self._task = None

    def _until(self, aw):
        """`aw`'s value, running the loop in this thread; in a thread that already runs a loop (the
        engine called from a coroutine, which it blocks as any synchronous call does), in a helper
        thread, since one thread cannot run two loops."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run_until_complete(aw)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(self._loop.run_until_complete, aw).result()

    def interrupt(self) -> None:
        """Cancel the HTTP read in flight (thread-safe): the call waiting on it raises `Interrupted` at
        once. Between reads of a stream, its next read is cancelled instead; outside one, nothing."""
        with self._lock:
            if self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)
            elif self._streams:
                self._pending = True

    @contextmanager
    def streaming(self):
        """Around an engine's `stream_infill`: an `interrupt` between its reads cancels the next one."""
        with self._lock:
            self._streams += 1
        try:
            yield
        finally:
            with self._lock:
                self._streams -= 1
                self._pending = self._pending and self._streams > 0

    def fail(self, what: str) -> EngineError:
        return EngineError(f"{self.name}: {what}")

    def stream(self, path: str, body: dict, timeout: float) -> Iterator[dict]:
        """The JSON events of one streamed POST; closing the iterator closes the response."""
        request = self._client.build_request("POST", path, json=body, timeout=timeout,
                                             headers={"Accept": "text/event-stream"})
        resp = self.run(self._client.send(request, stream=True))
        events = self._events(resp)
        try:
            if resp.status_code != 200:
                detail = _first_line(self.run(resp.aread())[:500].decode("utf-8", errors="replace"))
                raise self.fail(f"HTTP {resp.status_code}: {detail or resp.reason_phrase}")
            while True:
                try:
                    yield self.run(_next(events))
                except StopAsyncIteration:
                    return
        finally:  # not interruptible: closing must finish
            self._until(_close(events, resp))

    async def _events(self, resp: httpx.Response):
        """The JSON payloads of a server-sent-event stream, or of a plain JSON answer, until [DONE]."""
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            try:
                yield json.loads(await resp.aread())
            except ValueError:
                raise self.fail("the answer is not JSON") from None
            return
        async for line in resp.aiter_lines():
            line = line.strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                yield json.loads(data)
            except ValueError:
                raise self.fail("a streamed event is not JSON") from None

    def post(self, path: str, body: dict) -> dict:
        """One non-streamed POST; its JSON answer."""
        try:
            resp = self.run(self._client.post(path, json=body))
        except httpx.HTTPError as exc:
            raise self.fail(f"cannot reach the server ({exc})") from None
        if resp.status_code != 200:
            raise self.fail(f"HTTP {resp.status_code}: {_first_line(resp.text) or resp.reason_phrase}")
        try:
            return resp.json()
        except ValueError:
            raise self.fail("the answer is not JSON") from None

    def get_json(self, path: str) -> dict:
        """A GET's JSON object; {} when the server has none to give (any failure but `Interrupted`)."""
        try:
            resp = self.run(self._client.get(path, timeout=10))
            data = resp.json() if resp.status_code == 200 else {}
            return data if isinstance(data, dict) else {}
        except Interrupted:
            raise
        except (httpx.HTTPError, ValueError):
            return {}

    def close(self) -> None:
        self._until(self._client.aclose())
        self._loop.close()


class RemoteEngine:
    """The half of an engine over a model server that does not depend on its protocol. Subclasses
    provide `_stream(req)` (the generator behind `stream_infill`) and `capabilities`."""

    max_holes = 0
    default_template = "infill-spm"

    def __init__(self, url: str, *, template: str | None = None, timeout_s: float = 60.0):
        if "#" in url:
            url, _, fragment = url.partition("#")
            template = template or fragment
        server_url(url)
        self.url = url.rstrip("/")
        self.template = fim.get(template or self.default_template)
        self.timeout_s = timeout_s
        self.name = f"openai:{self.url}"
        self.device = "remote"
        self.http = Transport(self.url[:-3] if self.url.endswith("/v1") else self.url, self.name, timeout_s)
        self.unavailable: dict[str, str] = {"multi_hole_score": "a completions server scores one hole at a time",
                                            "multi_hole": "a completions server fills one hole at a time",
                                            "text_score": "perplexity needs the model's logits, not a server",
                                            "cache": NO_CACHE}

    @classmethod
    def load(cls, name: str, *, device: str = "auto", cache_mb: float = 256.0, template: str | None = None):
        """The engine for `openai:URL` (`infill.engines.load`); a server has no device or cache here."""
        return cls(name.partition(":")[2], template=template)  # a name of load.REMOTE_PREFIXES

    def interrupt(self) -> None:
        """Cancel the HTTP read in flight, from any thread (`Transport.interrupt`)."""
        self.http.interrupt()

    def drop_session(self, key: str) -> None:
        """Sessions live on the server (its prefix cache), nothing to drop here."""

    def close(self) -> None:
        self.http.close()

    def _context(self, req: InfillRequest) -> tuple[list[tuple[str, str]], int]:
        """`fit_context` counting three characters a token (no tokenizer here: the server's is unknown,
        and code runs about 3-4 characters a token), so the count is an estimate."""
        return fit_context(req, 2 * req.context_tokens, lambda texts: [len(t) // 3 + 1 for t in texts])

    def _timeout(self, req: InfillRequest) -> float:
        budget = req.config.time_budget_s
        return min(self.timeout_s, budget + 5) if budget else self.timeout_s

    def _result(self, rows, req: InfillRequest, started: float, prompt_tokens: int = 0, cached: int = 0,
                **extra) -> CompletionResult:
        context, context_tokens = self._context(req)
        return CompletionResult(rank(rows, req), (time.perf_counter() - started) * 1000, prompt_tokens, cached,
                                extra={"template": self.template.name, "context_tokens": context_tokens,
                                       "context_files": list(dict.fromkeys(p for p, _ in context)), **extra})

    def _stream(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        raise NotImplementedError

    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every streamed chunk (a place to cancel); return the CompletionResult.
        `Interrupted` when `interrupt` cancels it."""
        with self.http.streaming():
            return (yield from self._stream(req))

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))

    def stream_infill_holes(self, pieces: list[str], config: GenerationConfig, **kw
                            ) -> Generator[None, None, HolesResult]:
        """One hole at a time, left to right (`base.sequential_holes`): a server has no mask sentinels."""
        return sequential_holes(self, pieces, config, **kw)

    def infill_holes(self, pieces: list[str], config: GenerationConfig, **kw) -> HolesResult:
        return run_to_end(self.stream_infill_holes(pieces, config, **kw))

    def score_holes(self, pieces: list[str], fills: list[list[str]], *, ext: str | None = None) -> list[float]:
        raise CannotScore(self.unavailable["multi_hole_score"])

    def score_text(self, text: str, *, window: int | None = None) -> tuple[float, int]:
        raise CannotScore(self.unavailable["text_score"])


async def _next(events):
    """The next item of an async iterator, as a coroutine (a task needs one; `anext` gives an awaitable)."""
    return await events.__anext__()


async def _close(events, resp: httpx.Response) -> None:
    """Close a stream, then let the loop finish closing httpx's inner async generators (their
    finalizers are scheduled on the loop, which runs only while the engine is called)."""
    await events.aclose()
    await resp.aclose()
    for _ in range(8):
        await asyncio.sleep(0)
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if not others:
            return
        await asyncio.wait(others, timeout=1.0)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""
