"""An OpenAI-compatible completions server (vLLM, llama.cpp server, ...): `--model openai:URL`.

Rules:
- The prompt is built here with a FIM template (`openai:URL#TEMPLATE`, or `template=`; default
  `infill-spm`, this project's exported models), after every sentinel string is removed from the
  user's text; the server only continues it.
- The engine talks to `POST {URL}/v1/completions` and, once, `GET {URL}/v1/models` for the served
  model's name, through `infill.engines.remote.Transport` (one `EngineError` line on failure;
  `interrupt()` from any thread; closing the stream, a stop rule or the time budget cancels the
  request on the server).
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
- Token healing, as the local engine does it after a space: when the template's prompt ends in the
  prefix and the prefix ends in a space, the local engine backs off the last token and heals that
  space alone (`infill.engines.logits`), so here the prompt loses that space and a llama.cpp
  `grammar` makes the middle start with it (the server's first token then starts with a space, as
  the local engine's mask allows); the middle returned leaves it out. Whether the server follows a
  grammar is asked once with `capabilities` ("heal"); where it does not (vLLM, others), the prompt
  goes unhealed, exactly the local engine's with `heal=False`, and `unavailable["heal"]` says so (the
  language server's status shows it). Other endings are never healed here: the last token's text
  needs the server's tokenizer.
- A request with a `session` (a document) asks the server to keep its prompt's KV cache
  (`cache_prompt`, llama.cpp's name), so the next request of that document recomputes only what changed.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from contextlib import closing
from dataclasses import replace

import httpx

from infill.engines import templates as fim
from infill.engines.base import CannotScore, CompletionResult, InfillRequest, end_of
from infill.engines.remote import NEUTRAL, EngineError, Interrupted, RemoteEngine

__all__ = ["EngineError", "Interrupted", "OpenAIEngine"]

DEFAULT_TEMPLATE = "infill-spm"
NO_SCORE = "the server returns no prompt logprobs (echo + logprobs on /v1/completions)"
NO_LOGPROBS = "the server returns no logprobs"
NO_HEAL = ("the server cannot constrain the first token (no llama.cpp grammar on /v1/completions): after a "
           "space the prompt is sent unhealed, as the local engine's with heal=False")


class OpenAIEngine(RemoteEngine):
    """Infilling (and scoring, where the server allows) through an OpenAI-compatible `/v1/completions`."""

    def __init__(self, url: str, *, template: str | None = None, model: str | None = None,
                 timeout_s: float = 60.0):
        super().__init__(url, template=template, timeout_s=timeout_s)
        if self.template.native:
            raise ValueError(f"the {self.template.name} template is the server's own endpoint "
                             f"({self.template.native}): load it as openai:URL#{self.template.name}")
        self.served_model = model
        self._caps: frozenset[str] | None = None

    # http -----------------------------------------------------------------------------------------
    def _model_name(self) -> str | None:
        """The served model's id from /v1/models (asked once); None if the server does not say."""
        if self.served_model is None:
            data = self.http.get_json("/v1/models").get("data")
            first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
            self.served_model = str(first.get("id") or "")
        return self.served_model or None

    def _body(self, **fields) -> dict:
        if (model := self._model_name()) is not None:
            fields["model"] = model
        return fields

    def _post(self, body: dict) -> dict:
        """One non-streamed completion request; its JSON answer."""
        return self.http.post("/v1/completions", body)

    # capabilities ---------------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[str]:
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
            if self.template.ends_in_prefix:  # else the prompt ends in a sentinel: nothing to heal
                if self._constrains_first_token():
                    caps.add("heal")
                else:
                    self.unavailable["heal"] = NO_HEAL
            self._caps = frozenset(caps)
        return self._caps

    def _constrains_first_token(self) -> bool:
        """Whether the server follows a llama.cpp `grammar` on /v1/completions: a one-token answer
        that must start with "Q" does (a server that ignores the field says something else)."""
        try:
            answer = self._post(self._body(prompt="x = 1", max_tokens=1, temperature=0, grammar=_starts_with("Q")))
        except Interrupted:
            raise
        except EngineError:
            return False
        return str(((answer.get("choices") or [{}])[0]).get("text", "")).startswith("Q")

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

    def healed_prompt(self, req: InfillRequest) -> tuple[str, str]:
        """(prompt text, healed text): with healing (module docstring), the prefix's last space is cut
        from the prompt and the middle must start with it."""
        prefix = self._clean(req.prefix)
        if req.heal and self.template.ends_in_prefix and prefix.endswith(" ") and "heal" in self.capabilities:
            return self.build_prompt(replace(req, prefix=prefix[:-1])), " "
        return self.build_prompt(req), ""

    def _stream(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """`stream_infill` through `/v1/completions`: one streamed request, `n` choices."""
        started = time.perf_counter()
        config = req.config
        want_logprobs = "sampled_logprobs" in self.capabilities
        prompt, heal = self.healed_prompt(req)
        stops = [s for s in dict.fromkeys((*req.stop, *self.template.stops)) if not (heal and s.startswith(heal))]
        body = {"prompt": prompt, "max_tokens": config.max_tokens, "temperature": config.temperature,
                "n": config.n, "stream": True, "stop": stops, **NEUTRAL}
        if heal:
            body["grammar"] = _starts_with(heal)
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
        timeout = self._timeout(req)
        try:
            with closing(self.http.stream("/v1/completions", body, timeout)) as events:
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
                    if all(end_of(_unheal(t, heal), req) is not None for t in texts):
                        reasons = ["stop_rule"] * n
                        break
                    if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
                        reasons = ["time"] * n
                        break
        except httpx.HTTPError as exc:
            raise self.http.fail(f"cannot reach the server, or the stream broke ({exc})") from None
        return self._result(zip((_unheal(t, heal) for t in texts), tokens, logprobs, reasons), req, started,
                            healed=heal)

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
            picked = _visible_pick(values, offsets, tokens, len(self._clean(prompt)), len(self._clean(full)), end)
        else:
            picked = [v for v, at in zip(values, offsets) if len(prompt) <= at < len(full)]
        if not picked or any(v is None for v in picked):
            raise CannotScore("the server returned no logprobs for the middle")
        return float(sum(picked))


def _starts_with(text: str) -> str:
    """A llama.cpp GBNF grammar: the output starts with `text`, then anything (code points 1 and up)."""
    literal = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'root ::= "{literal}" [\\x01-\\U0010FFFF]*'


def _unheal(text: str, heal: str) -> str:
    """The middle: the generated text less the healed text it starts with."""
    return text[len(heal):] if heal and text.startswith(heal) else text


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
