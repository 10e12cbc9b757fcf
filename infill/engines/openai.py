"""An OpenAI-compatible completions server (vLLM, llama.cpp server, ...): `--model openai:URL`.

Rules:
- The prompt is built here with a FIM template (`openai:URL#TEMPLATE`, or `template=`; default
  `infill-spm`, this project's exported models), after every sentinel string is removed from the
  user's text; the server only continues it.
- The engine talks to the given URL only: `POST {URL}/v1/completions` and, once, `GET {URL}/v1/models`
  for the served model's name. Redirects are not followed; a failure is one `EngineError` line.
- Requests stream (server-sent events), so `stream_infill` yields after every chunk; closing the
  generator, a stop rule or the time budget closes the connection, which cancels the request.
- Stop strings (the request's and the template's end tokens) go to the server, and are applied again
  here, since servers differ in how they treat them.
"""
from __future__ import annotations

import http.client
import json
import time
from collections.abc import Generator
from urllib.parse import urlsplit

from infill.engine import Completion, CompletionResult, InfillRequest
from infill.engines import end_of, run_to_end
from infill.engines import templates as fim

DEFAULT_TEMPLATE = "infill-spm"


class EngineError(ValueError):
    """A server that cannot be reached or answers with an error."""


class OpenAIEngine:
    """Infilling through an OpenAI-compatible `/v1/completions` endpoint."""

    def __init__(self, url: str, *, template: str | None = None, model: str | None = None,
                 timeout_s: float = 60.0):
        if "#" in url:
            url, _, fragment = url.partition("#")
            template = template or fragment
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"openai:URL needs an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base_path = parts.path.rstrip("/")
        if self.base_path.endswith("/v1"):
            self.base_path = self.base_path[:-3]
        self.template = fim.get(template or DEFAULT_TEMPLATE)
        self.served_model = model
        self.timeout_s = timeout_s
        self.name = f"openai:{self.url}"
        self.device = "remote"

    # http -----------------------------------------------------------------------------------------
    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def _fail(self, what: str) -> EngineError:
        return EngineError(f"{self.name}: {what}")

    def _model_name(self) -> str | None:
        """The served model's id from /v1/models (asked once); None if the server does not say."""
        if self.served_model is None:
            conn = self._connect(10)
            try:
                conn.request("GET", self.base_path + "/v1/models")
                resp = conn.getresponse()
                data = json.loads(resp.read()) if resp.status == 200 else {}
                self.served_model = (data.get("data") or [{}])[0].get("id", "")
            except (OSError, ValueError, http.client.HTTPException, AttributeError):
                self.served_model = ""
            finally:
                conn.close()
        return self.served_model or None

    def drop_session(self, key: str) -> None:
        """Sessions live on the server (its prefix cache), nothing to drop here."""

    # generation -----------------------------------------------------------------------------------
    def build_prompt(self, req: InfillRequest) -> str:
        specials = self.template.sentinels
        return self.template.render(fim.clean(req.prefix, specials), fim.clean(req.suffix, specials))

    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every streamed chunk (a place to cancel); return the CompletionResult."""
        started = time.perf_counter()
        body = {"prompt": self.build_prompt(req), "max_tokens": req.max_tokens, "temperature": req.temperature,
                "n": req.n, "stream": True, "stop": list(dict.fromkeys((*req.stop, *self.template.stops)))}
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.top_k is not None:
            body["top_k"] = req.top_k
        if req.seed is not None:
            body["seed"] = req.seed
        if (model := self._model_name()) is not None:
            body["model"] = model
        timeout = min(self.timeout_s, req.time_budget_s + 5) if req.time_budget_s else self.timeout_s
        texts, reasons = [""] * req.n, ["length"] * req.n
        conn = self._connect(timeout)
        try:
            try:
                conn.request("POST", self.base_path + "/v1/completions", body=json.dumps(body),
                             headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise self._fail(f"cannot reach the server ({exc})") from None
            if resp.status != 200:
                detail = resp.read(500).decode("utf-8", errors="replace").strip().splitlines()
                raise self._fail(f"HTTP {resp.status}: {detail[0] if detail else resp.reason}")
            for event in _events(resp, self._fail):
                for choice in event.get("choices", []):
                    i = int(choice.get("index", 0))
                    if 0 <= i < req.n:
                        texts[i] += choice.get("text", "")
                        if choice.get("finish_reason"):
                            reasons[i] = "stop" if choice["finish_reason"] == "stop" else "length"
                yield
                if all(end_of(t, req) is not None for t in texts):
                    reasons = ["stop_rule"] * req.n
                    break
                if req.time_budget_s is not None and time.perf_counter() - started > req.time_budget_s:
                    reasons = ["time"] * req.n
                    break
        finally:
            conn.close()  # also what cancels a request the caller abandoned
        completions: dict[str, Completion] = {}
        for text, reason in zip(texts, reasons):
            if (end := end_of(text, req)) is not None:
                text = text[:end]
            completions.setdefault(text, Completion(text, 0, 0.0, reason))
        return CompletionResult(list(completions.values()), (time.perf_counter() - started) * 1000, 0,
                                extra={"template": self.template.name})

    def infill(self, req: InfillRequest) -> CompletionResult:
        return run_to_end(self.stream_infill(req))


def _events(resp: http.client.HTTPResponse, fail):
    """The JSON payloads of a server-sent-event stream, or of a plain JSON answer, until [DONE]."""
    if "text/event-stream" not in (resp.getheader("Content-Type") or ""):
        try:
            yield json.loads(resp.read())
        except ValueError:
            raise fail("the answer is not JSON") from None
        return
    while True:
        try:
            line = resp.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise fail(f"the stream broke ({exc})") from None
        if not line:
            return
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            raise fail("a streamed event is not JSON") from None
