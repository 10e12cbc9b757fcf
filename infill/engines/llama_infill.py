"""llama.cpp's native `/infill` endpoint (llama.vim's and llama.vscode's protocol): `--model openai:URL#llama-infill`.

Rules:
- The server builds the prompt from the FIM tokens its GGUF file marks, so the request carries the
  parts: `input_prefix`, `input_suffix` (the text as it is: llama.cpp reads no special tokens from
  them), `input_extra` (the request's repository-context chunks, as {"filename", "text"}), and
  `n_predict`, `cache_prompt` (a session), `t_max_predict_ms` (the time budget) and the sampling knobs.
- The answer streams `{"content", "stop"}` events; the last says why it stopped (`stop_type`) and how
  many tokens the prompt took and the cache served. `n` candidates are `n` requests (seeds
  `seed + i`).
- It has no echo and no log-probabilities, so such an engine cannot score (`unavailable` says so),
  and it cannot heal the token at the cursor: the server tokenizes the prefix itself.
- Transport, cancellation and the rest: `infill.engines.remote`.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from contextlib import closing

import httpx

from infill.engines.base import CannotScore, CompletionResult, InfillRequest, end_of
from infill.engines.remote import NEUTRAL, RemoteEngine

NO_NATIVE_SCORE = ("llama.cpp's /infill endpoint returns no prompt log-probabilities; to score, use the "
                   "same server with openai:URL (its /v1/completions, the infill-spm template)")


class LlamaInfillEngine(RemoteEngine):
    """Infilling through llama.cpp's `/infill`."""

    default_template = "llama-infill"
    capabilities = frozenset({"infill"})

    def __init__(self, url: str, *, template: str | None = None, timeout_s: float = 60.0):
        super().__init__(url, template=template, timeout_s=timeout_s)
        if not self.template.native:
            raise ValueError(f"{self.template.name} is a prompt template; llama.cpp's /infill takes llama-infill")
        self.unavailable.update(score=NO_NATIVE_SCORE, sampled_logprobs=NO_NATIVE_SCORE,
                                heal="llama.cpp's /infill tokenizes the prefix itself: no token healing")

    def _stream(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """One streamed request per candidate."""
        started = time.perf_counter()
        config = req.config
        context, _ = self._context(req)  # the repository context, within its budget
        body = {"input_prefix": req.prefix, "input_suffix": req.suffix, "prompt": "",
                "input_extra": [{"filename": p, "text": t} for p, t in context[::-1]],
                "n_predict": config.max_tokens, "temperature": config.temperature, "stream": True,
                "cache_prompt": req.session is not None, "stop": list(req.stop), **NEUTRAL}
        for key in ("top_p", "top_k"):
            if getattr(config, key) is not None:
                body[key] = getattr(config, key)
        if config.time_budget_s is not None:
            body["t_max_predict_ms"] = max(1, int(config.time_budget_s * 1000))
        rows, prompt_tokens, cached = [], 0, 0
        for i in range(config.n):
            if config.seed is not None:
                body["seed"] = config.seed + i
            text, tokens, reason = "", 0, "length"
            try:
                with closing(self.http.stream(self.template.native, body, self._timeout(req))) as events:
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
                raise self.http.fail(f"cannot reach the server, or the stream broke ({exc})") from None
            rows.append((text, tokens, 0.0, reason))
            if reason == "time":
                break
        return self._result(rows, req, started, prompt_tokens, cached)

    def score(self, prefix: str, suffix: str, middle: str, *, ext: str | None = None, end: bool = True) -> float:
        raise CannotScore(NO_NATIVE_SCORE)
