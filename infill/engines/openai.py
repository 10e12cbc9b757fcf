"""An OpenAI-compatible completions server (vLLM, llama.cpp server, ...): `--model openai:URL`.

Rules:
- The prompt is built here with a FIM template (`openai:URL#TEMPLATE`, or `template=`; default
  `infill-spm`, this project's exported models), after every sentinel string is removed from the
  user's text; the server only continues it.
- The engine talks to the given URL only (httpx, no proxies from the environment, no redirects):
  `POST {URL}/v1/completions` and, once, `GET {URL}/v1/models` for the served model's name. A failure
  is one `EngineError` line.
- Requests stream (server-sent events), so `stream_infill` yields after every chunk; closing the
  generator, a stop rule or the time budget closes the response mid-stream, which drops the
  connection and so cancels the request on the server.
- HTTP is `httpx.AsyncClient` on a private asyncio event loop that the engine owns and runs in the
  calling thread (`loop.run_until_complete`, one task per read), behind the same synchronous methods
  as every engine (called from a coroutine, the loop runs in a helper thread while the caller
  blocks, as a synchronous client would block it). So `interrupt()`, from any thread, cancels the
  read in flight (`loop.call_soon_threadsafe(task.cancel)`): a hung server's read ends at once with
  `Interrupted` instead of at the read timeout. Calls into the engine still come one at a time.
- Sampling is ours: the request sets every knob a server might default otherwise (`NEUTRAL`).
- Stop strings (the request's and the template's end tokens) go to the server, and are applied again
  here, since servers differ in how they treat them.
- What the server can do is asked once, on first use of `capabilities`, with two one-token requests:
  `echo` + `logprobs` (vLLM) gives "score" (the prompt's own token log-probabilities, so a given
  middle can be scored, once a third request shows that the echoed log-probability of a token the
  server generated is the one it generated it with); `logprobs` alone gives "sampled_logprobs" (candidates come back with their
  log-probabilities and can be ranked). A server with neither gets only "infill", and `unavailable`
  says why. A server that cannot be reached is asked again next time.
- A score is the sum of the log-probabilities of the echoed tokens that start inside the middle
  (and the end token), found by the `text_offset`s the server returns (counted in the prompt's
  text, or, as llama-cpp-python does, in its text without the special tokens).
- A request with a `session` (a document) asks the server to keep its prompt's KV cache
  (`cache_prompt`, llama.cpp's name), so the next request of that document recomputes only what changed.
- The `llama-infill` template talks llama.cpp's native `POST {URL}/infill` instead (llama.vim's
  protocol): `input_prefix`, `input_suffix`, `input_extra` (the request's repository-context chunks,
  as {"filename", "text"}), `n_predict`, `cache_prompt`, `t_max_predict_ms` for the time budget; the
  server builds the prompt from its GGUF's FIM tokens and streams `{"content", "stop"}` events. It
  has no echo, so such an engine cannot score (`unavailable` says so); `n` candidates are `n` requests.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from urllib.parse import urlsplit

import httpx

from infill.engines import templates as fim
from infill.engines.base import (CannotScore, CompletionResult, GenerationConfig, HolesResult, InfillRequest, end_of,
                                 fit_context, rank, run_to_end, sequential_holes)

DEFAULT_TEMPLATE = "infill-spm"
NO_SCORE = "the server returns no prompt logprobs (echo + logprobs on /v1/completions)"
NO_LOGPROBS = "the server returns no logprobs"
NEUTRAL = {"repeat_penalty": 1.0, "min_p": 0.0}
"""Sampling as `infill.generation` does it, where a server's defaults differ (llama-cpp-python's
server penalises repeats by 1.1 and cuts at min_p 0.05 unless told, which changes even greedy output)."""
NO_NATIVE_SCORE = ("llama.cpp's /infill endpoint returns no prompt log-probabilities; to score, use the "
                   "same server with openai:URL (its /v1/completions, the infill-spm template)")


class EngineError(ValueError):
    """A server that cannot be reached or answers with an error."""


class Interrupted(EngineError):
    """The request was cancelled by `OpenAIEngine.interrupt` (from another thread)."""


class OpenAIEngine:
    """Infilling (and scoring, where the server allows) through an OpenAI-compatible `/v1/completions`."""

    max_holes = 0

    def __init__(self, url: str, *, template: str | None = None, model: str | None = None,
                 timeout_s: float = 60.0):
        if "#" in url:
            url, _, fragment = url.partition("#")
            template = template or fragment
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"openai:URL needs an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        base = self.url[:-3] if self.url.endswith("/v1") else self.url
        self.template = fim.get(template or DEFAULT_TEMPLATE)
        self.served_model = model
        self.timeout_s = timeout_s
        self.name = f"openai:{self.url}"
        self.device = "remote"
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(base_url=base, timeout=timeout_s, follow_redirects=False, trust_env=False)
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._streams = 0
        self._pending = False
        self._caps: frozenset[str] | None = None
        self.unavailable: dict[str, str] = {"multi_hole_score": "a completions server scores one hole at a time",
                                            "multi_hole": "a completions server fills one hole at a time",
                                            "text_score": "perplexity needs the model's logits, not a server"}

    # http -----------------------------------------------------------------------------------------
    def _run(self, coro):
        """Run `coro` to its value on the engine's loop, as a task `interrupt` can cancel."""
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
        """`aw`'s value, running the engine's loop in this thread; in a thread that already runs a loop
        (the engine called from a coroutine, which it blocks as any synchronous call does), in a helper
        thread, since one thread cannot run two loops."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run_until_complete(aw)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(self._loop.run_until_complete, aw).result()

    def interrupt(self) -> None:
        """Cancel the HTTP read in flight (thread-safe): the call waiting on it raises `Interrupted` at
        once. Between reads of a `stream_infill`, its next read is cancelled instead; outside one, nothing."""
        with self._lock:
            if self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)
            elif self._streams:
                self._pending = True

    def _stream(self, path: str, body: dict, timeout: float) -> Iterator[dict]:
        """The events of one streamed POST; closing the iterator closes the response."""
        request = self._client.build_request("POST", path, json=body, timeout=timeout,
                                             headers={"Accept": "text/event-stream"})
        resp = self._run(self._client.send(request, stream=True))
        events = self._events(resp)
        try:
            if resp.status_code != 200:
                detail = _first_line(self._run(resp.aread())[:500].decode("utf-8", errors="replace"))
                raise self._fail(f"HTTP {resp.status_code}: {detail or resp.reason_phrase}")
            while True:
                try:
                    yield self._run(_next(events))
                except StopAsyncIteration:
                    return
        finally:  # not interruptible: closing must finish
            self._until(_close(events, resp))

    def _fail(self, what: str) -> EngineError:
        return EngineError(f"{self.name}: {what}")

    def _model_name(self) -> str | None:
        """The served model's id from /v1/models (asked once); None if the server does not say."""
        if self.served_model is None:
            try:
                resp = self._run(self._client.get("/v1/models", timeout=10))
                data = resp.json() if resp.status_code == 200 else {}
                self.served_model = (data.get("data") or [{}])[0].get("id", "")
            except Interrupted:
                raise
            except (httpx.HTTPError, ValueError, AttributeError, IndexError):
                self.served_model = ""
        return self.served_model or None

    def _body(self, **fields) -> dict:
        if (model := self._model_name()) is not None:
            fields["model"] = model
        return fields

    def _post(self, body: dict) -> dict:
        """One non-streamed completion request; its JSON answer."""
        try:
            resp = self._run(self._client.post("/v1/completions", json=body))
        except httpx.HTTPError as exc:
            raise self._fail(f"cannot reach the server ({exc})") from None
        if resp.status_code != 200:
            raise self._fail(f"HTTP {resp.status_code}: {_first_line(resp.text) or resp.reason_phrase}")
        try:
            return resp.json()
        except ValueError:
            raise self._fail("the answer is not JSON") from None

    def drop_session(self, key: str) -> None:
        """Sessions live on the server (its prefix cache), nothing to drop here."""

    def close(self) -> None:
        self._until(self._client.aclose())
        self._loop.close()

    # capabilities ---------------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[str]:
        if self._caps is None and self.template.native:
            self.unavailable.update(score=NO_NATIVE_SCORE, sampled_logprobs=NO_NATIVE_SCORE)
            self._caps = frozenset({"infill"})
        if self._caps is None:
            caps = {"infill"}
            try:
                echoed = self._post(self._body(prompt="x = 1", max_tokens=1, temperature=0, echo=True, logprobs=1))
                if len(_logprobs(echoed).get("token_logprobs") or []) >= 2:
                    caps.add("sampled_logprobs")
                    if (why := self._echo_disagrees()) is None:
                        caps.add("score")
                    else:
                        self.unavailable["score"] = why
            except Interrupted:
                raise
            except EngineError as exc:
                if "cannot reach" in str(exc):
                    self.unavailable.update(score=str(exc), sampled_logprobs=str(exc))
                    return frozenset(caps)  # not cached: asked again once the server is up
            if "score" not in caps and "sampled_logprobs" not in caps:
                self.unavailable["score"] = NO_SCORE
                try:
                    plain = self._post(self._body(prompt="x = 1", max_tokens=1, temperature=0, logprobs=1))
                    if _logprobs(plain).get("token_logprobs"):
                        caps.add("sampled_logprobs")
                except Interrupted:
                    raise
                except EngineError:
                    pass
                if "sampled_logprobs" not in caps:
                    self.unavailable["sampled_logprobs"] = NO_LOGPROBS
            self._caps = frozenset(caps)
        return self._caps

    def _echo_disagrees(self) -> str | None:
        """Why echoed logprobs cannot score, or None: the log-probability the server gives a token it
        generated (greedy, after "x = 1") must come back when that token is echoed after the same text
        (compared only when the echo has a token starting where the generation did; otherwise trusted).
        llama-cpp-python 0.3's echo gives each token the log-probability of the distribution after it."""
        probe = "x = 1"
        answer = self._post(self._body(prompt=probe, max_tokens=1, temperature=0, logprobs=1))
        choice = (answer.get("choices") or [{}])[0]
        generated = [v for v in _logprobs(choice).get("token_logprobs") or [] if v is not None]
        text = choice.get("text", "")
        if not text or not generated:
            return None  # nothing to compare: trust the echo
        lp = _logprobs(self._post(self._body(prompt=probe + text, max_tokens=1, temperature=0, echo=True, logprobs=1)))
        values, offsets = lp.get("token_logprobs") or [], lp.get("text_offset") or []
        echoed = [v for v, at in zip(values, offsets) if len(probe) <= at < len(probe) + len(text) and v is not None]
        if len(probe) not in offsets or len(echoed) != len(generated) or "\ufffd" in text:
            return None  # the echo split the text differently from the generation: nothing to compare
        if abs(sum(echoed) - sum(generated)) <= 1e-2 * max(1.0, abs(sum(generated))):
            return None
        return (f"the server's echoed prompt logprobs disagree with its own generation ({sum(echoed):.3f} "
                f"vs {sum(generated):.3f} for one token), so scores would be wrong")

    # generation -----------------------------------------------------------------------------------
    def _clean(self, text: str) -> str:
        return fim.clean(text, self.template.sentinels)

    def build_prompt(self, req: InfillRequest) -> str:
        """The prompt text; repository context within `req.context_tokens` (`_context`)."""
        context = [(self._clean(p), self._clean(t)) for p, t in self._context(req)[0][::-1]]
        return self.template.render(self._clean(req.prefix), self._clean(req.suffix), req.ext, context,
                                    req.path, req.repo)

    def _context(self, req: InfillRequest) -> tuple[list[tuple[str, str]], int]:
        """`fit_context` counting three characters a token (no tokenizer here: the server's is unknown,
        and code runs about 3-4 characters a token), so the count is an estimate."""
        return fit_context(req, 2 * req.context_tokens, lambda texts: [len(t) // 3 + 1 for t in texts])

    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every streamed chunk (a place to cancel); return the CompletionResult.
        `Interrupted` when `interrupt` cancels it."""
        with self._lock:
            self._streams += 1
        try:
            return (yield from (self._stream_native(req) if self.template.native else self._stream_completions(req)))
        finally:
            with self._lock:
                self._streams -= 1
                self._pending = self._pending and self._streams > 0

    def _stream_completions(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """`stream_infill` through `/v1/completions`: one streamed request, `n` choices."""
        started = time.perf_counter()
        config = req.config
        want_logprobs = "sampled_logprobs" in self.capabilities
        body = {"prompt": self.build_prompt(req), "max_tokens": config.max_tokens, "temperature": config.temperature,
                "n": config.n, "stream": True, "stop": list(dict.fromkeys((*req.stop, *self.template.stops))),
                **NEUTRAL}
        for key in ("top_p", "top_k", "seed"):
            if getattr(config, key) is not None:
                body[key] = getattr(config, key)
        if req.session is not None:
            body["cache_prompt"] = True
        if want_logprobs:
            body["logprobs"] = 1
        body = self._body(**body)
        n = config.n
        texts, reasons, logprobs, tokens = [""] * n, ["length"] * n, [0.0] * n, [0] * n
        timeout = min(self.timeout_s, config.time_budget_s + 5) if config.time_budget_s else self.timeout_s
        try:
            with closing(self._stream("/v1/completions", body, timeout)) as events:
                for event in events:
                    for choice in event.get("choices", []):
                        i = int(choice.get("index", 0))
                        if 0 <= i < n:
                            texts[i] += choice.get("text", "")
                            lps = [x for x in (_logprobs(choice).get("token_logprobs") or []) if x is not None]
                            logprobs[i] += sum(lps)
                            tokens[i] += len(lps)
                            if choice.get("finish_reason"):
                                reasons[i] = "stop" if choice["finish_reason"] == "stop" else "length"
                    yield  # closing the generator here leaves the `with`: the response closes mid-stream
                    if all(end_of(t, req) is not None for t in texts):
                        reasons = ["stop_rule"] * n
                        break
                    if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
                        reasons = ["time"] * n
                        break
        except httpx.HTTPError as exc:
            raise self._fail(f"cannot reach the server, or the stream broke ({exc})") from None
        rows = zip(texts, tokens, logprobs, reasons)
        context, context_tokens = self._context(req)
        return CompletionResult(rank(rows, req), (time.perf_counter() - started) * 1000, 0,
                                extra={"template": self.template.name, "context_tokens": context_tokens,
                                       "context_files": list(dict.fromkeys(p for p, _ in context))})

    def _stream_native(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """`stream_infill` through llama.cpp's `/infill`: one streamed request per candidate."""
        started = time.perf_counter()
        config = req.config
        context, context_tokens = self._context(req)  # the repository context, within its budget
        body = {"input_prefix": req.prefix, "input_suffix": req.suffix, "prompt": "",
                "input_extra": [{"filename": p, "text": t} for p, t in context[::-1]],
                "n_predict": config.max_tokens, "temperature": config.temperature, "stream": True,
                "cache_prompt": req.session is not None, "stop": list(req.stop), **NEUTRAL}
        for key in ("top_p", "top_k"):
            if getattr(config, key) is not None:
                body[key] = getattr(config, key)
        if config.time_budget_s is not None:
            body["t_max_predict_ms"] = max(1, int(config.time_budget_s * 1000))
        timeout = min(self.timeout_s, config.time_budget_s + 5) if config.time_budget_s else self.timeout_s
        rows, prompt_tokens, cached = [], 0, 0
        for i in range(config.n):
            if config.seed is not None:
                body["seed"] = config.seed + i
            text, tokens, reason = "", 0, "length"
            try:
                with closing(self._stream(self.template.native, body, timeout)) as events:
                    for event in events:
                        if event.get("content"):
                            text += event["content"]
                            tokens += 1
                        if event.get("stop"):
                            reason = "length" if event.get("stop_type") == "limit" else "stop"
                            tokens = int(event.get("tokens_predicted") or tokens)
                            timings = event.get("timings") or {}
                            prompt_tokens = int(event.get("tokens_evaluated") or timings.get("prompt_n") or 0)
                            cached = int(timings.get("cache_n") or event.get("tokens_cached") or 0)
                        yield  # closing the generator here closes the response: the server stops
                        if end_of(text, req) is not None:
                            reason = "stop_rule"
                            break
                        if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
                            reason = "time"
                            break
            except httpx.HTTPError as exc:
                raise self._fail(f"cannot reach the server, or the stream broke ({exc})") from None
            rows.append((text, tokens, 0.0, reason))
            if reason == "time":
                break
        return CompletionResult(rank(rows, req), (time.perf_counter() - started) * 1000, prompt_tokens, cached,
                                extra={"template": self.template.name, "context_tokens": context_tokens,
                                       "context_files": list(dict.fromkeys(p for p, _ in context))})

    async def _events(self, resp: httpx.Response):
        """The JSON payloads of a server-sent-event stream, or of a plain JSON answer, until [DONE]."""
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            try:
                yield json.loads(await resp.aread())
            except ValueError:
                raise self._fail("the answer is not JSON") from None
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
                raise self._fail("a streamed event is not JSON") from None

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))

    def stream_infill_holes(self, pieces: list[str], config: GenerationConfig, **kw
                            ) -> Generator[None, None, HolesResult]:
        """One hole at a time, left to right (`base.sequential_holes`): no mask sentinels here."""
        return sequential_holes(self, pieces, config, **kw)

    def infill_holes(self, pieces: list[str], config: GenerationConfig, **kw) -> HolesResult:
        return run_to_end(self.stream_infill_holes(pieces, config, **kw))

    # scoring --------------------------------------------------------------------------------------
    def score(self, prefix: str, suffix: str, middle: str, *, ext: str | None = None, end: bool = True) -> float:
        """Log-probability of `middle` (and, with `end`, the template's first end token) after the
        prompt, from the server's echoed prompt logprobs."""
        if "score" not in self.capabilities:
            raise CannotScore(self.unavailable.get("score", NO_SCORE))
        prompt = self.build_prompt(InfillRequest(prefix, suffix, ext=ext))
        full = prompt + self._clean(middle) + (self.template.stops[0] if end else "")
        if len(full) == len(prompt):
            return 0.0
        lp = _logprobs(self._post(self._body(prompt=full, max_tokens=1, temperature=0, echo=True, logprobs=1)))
        values, offsets = lp.get("token_logprobs") or [], lp.get("text_offset") or []
        if len(offsets) != len(values):
            raise CannotScore("the server's logprobs have no text offsets")
        tokens = lp.get("tokens") or []
        if len(tokens) == len(values) and not full.startswith("".join(tokens)):
            picked = _visible_pick(values, offsets, tokens, len(self._visible(prompt)), len(self._visible(full)), end)
        else:
            picked = [v for v, at in zip(values, offsets) if len(prompt) <= at < len(full)]
        if not picked or any(v is None for v in picked):
            raise CannotScore("the server returned no logprobs for the middle")
        return float(sum(picked))

    def _visible(self, text: str) -> str:
        return fim.clean(text, self.template.sentinels)

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


def _logprobs(answer: dict) -> dict:
    """The `logprobs` object of a choice, or of an answer's first choice; {} when there is none."""
    if "choices" in answer:
        answer = (answer.get("choices") or [{}])[0]
    return answer.get("logprobs") or {}


def _visible_pick(values: list, offsets: list[int], tokens: list[str], lo: int, hi: int, end: bool) -> list:
    """The middle's log-probabilities when a server's token texts and offsets leave special tokens
    out (llama-cpp-python: a special token is "" at the offset of the text after it): the visible
    tokens that start in [lo, hi), and with `end` the first special token at hi."""
    picked = [v for v, at, t in zip(values, offsets, tokens) if t and lo <= at < hi]
    if end:
        picked += [v for v, at, t in zip(values, offsets, tokens) if not t and at == hi][:1]
    return picked


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""
