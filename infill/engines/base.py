"""What every engine shares: the request and result types, the protocol, and the rules engines apply alike.

An engine is the only door to a model. Features (completion, type hints, names, evaluation) build an
`InfillRequest`, call `stream_infill` or a `score*` method, and never see a model, a tokenizer or a
prompt format. Before they score, they ask `capabilities`; an engine without one says why in
`unavailable`, so a feature can say so instead of failing silently.

Capabilities (strings in `Engine.capabilities`):
- "infill": `stream_infill` / `infill` work. Every engine has it.
- "score": `score(prefix, suffix, middle)` gives the log-probability of a middle in the engine's FIM
  format (for a server: through `echo` + `logprobs`).
- "multi_hole_score": `score_holes(pieces, fills)` scores several holes at once in InCoder's causal
  masking format (the model has InCoder mask tokens); `max_holes` says how many.
- "sampled_logprobs": every returned `Completion` carries its model log-probability, so sampled
  candidates can be ranked by it (the fall-back of a server that cannot score given text).
- "text_score": `score_text(text)` gives the left-to-right log-likelihood of a document (perplexity).
- "cache": a request's `cache` mixes the cache model (`infill.cache`) into the next-token
  distribution; it needs the model's whole distribution, so an engine over a completions server
  has no "cache" and ignores the field.
- "multi_hole": `stream_infill_holes` fills every hole in one pass, in InCoder's multi-mask format, each
  fill seeing the fills before it and all the text after; `max_holes` says how many. An engine without
  it fills holes one at a time (`sequential_holes`): every engine can fill holes, this says how.
- "heal": the engine heals the token at the cursor (`InfillRequest.heal`) where its prompt ends in
  the prefix; a server that cannot says why in `unavailable["heal"]` and sends the prompt unhealed.

Rules kept here, once for all engines:
- The stop rule (`end_of`): a middle ends before the first stop string or where the caller's
  `stop_at` says, whichever comes first.
- Ranking (`rank`): candidates are cut by the stop rule, identical texts merged (the most likely
  copy kept), and sorted by log-probability, best first.
- Prompt fitting (`fit_lines`): trimmed at whole lines, prefix from its start and suffix from its end.
- Repository context (`fit_context`): whole chunks, best first, within min(`context_tokens`, half the
  prompt budget); the prefix and suffix get what is left. It comes first in the prompt, so typing at
  the cursor still only appends tokens.
- Multi-hole filling (`check_holes`, `sequential_holes`): `config.max_tokens` is each hole's budget; in
  one joint pass the holes' budgets together may take at most half the context (`HOLE_SHARE`), the
  pieces around them fit in the rest; more holes than `max_holes` (joint) or `MAX_SEQUENTIAL_HOLES`, or
  a joint budget over that share, is a `CannotFill` that says which limit. Filling one at a time, each fill joins the prefix of
  the next, and later holes stay in the suffix as they are written. A time budget is for all the holes.
- Session caches (`SessionPool`): one per key (a document), least recently used dropped first once
  their bytes pass the limit.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

from infill.cache import CacheConfig
from infill.generation import GenerationConfig

__all__ = ["CAPABILITIES", "CacheConfig", "CacheSource", "CannotFill", "CannotScore", "Completion", "CompletionResult", "Engine",
           "GenerationConfig", "HolesResult", "InfillRequest", "SCORE_RESERVE", "SessionPool", "check_holes",
           "end_of", "fit_context", "fit_lines", "prompt_budget", "rank", "run_to_end", "sequential_holes"]

SCORE_RESERVE = 64
"""A score fits its prompt as a generation of max(SCORE_RESERVE, middle tokens) tokens would: the same
prompt for every short middle, so the scores of alternatives compare."""
CAPABILITIES = frozenset({"infill", "score", "multi_hole_score", "sampled_logprobs", "text_score", "heal",
                          "multi_hole", "cache"})
MAX_SEQUENTIAL_HOLES = 32
"""Most holes an engine fills one at a time in one call (each is a full request)."""
HOLE_SHARE = 0.5
"""Most of the context the holes' token budgets may take together."""


class CannotScore(ValueError):
    """The engine cannot score this (no such capability, too many holes, longer than the context)."""


class CacheSource(NamedTuple):
    """A text the cache model reads besides the current document: an open document, an imported file,
    a recent chunk. Its ids are kept per (key, version)."""

    key: str
    version: Hashable
    text: str


class CannotFill(ValueError):
    """Holes the engine cannot fill in one call: none, more than its limit, or over the token budget."""


@dataclass
class InfillRequest:
    """One fill-in-the-middle request: the text around the hole, how to sample, where to stop."""

    prefix: str
    suffix: str = ""
    config: GenerationConfig = field(default_factory=GenerationConfig)
    """How to sample (max_tokens, temperature, top_k, top_p, seed, n, time_budget_s). Its id-level
    fields (stop_ids, lookahead) are the engine's to set."""
    stop: tuple[str, ...] = ()
    """Stop strings: the middle ends before the first one."""
    stop_at: Callable[[str], int | None] | None = None
    """Where the middle ends, given the text generated so far: an index into it, or None to go on.
    Called after every token; a caller's syntax rule (e.g. the end of a block) that stop strings cannot say."""
    session: str | None = None
    """Key of the session cache to use (a document URI); None uses no cache."""
    ext: str | None = None
    """File extension for the metadata header, e.g. ".py"."""
    heal: bool = True
    """Token healing at the cursor (formats whose prompt ends in the prefix)."""
    context: tuple[tuple[str, str], ...] = ()
    """Repository context: (path, text) of other files' chunks, best first. The engine renders those
    that fit `fit_context`'s budget before the current file, in its model family's repository format."""
    context_tokens: int = 1024
    """Most tokens the context may take (and never more than half the prompt budget)."""
    path: str | None = None
    """The current file's workspace-relative path, for repository formats that name files."""
    repo: str | None = None
    """The repository (workspace folder) name, for repository formats that name it."""
    cache: CacheConfig | None = None
    """The cache model (`infill.cache`) mixed into the model's next-token distribution, by engines
    with logits; None: the model alone."""
    document: str | None = None
    """The whole current document, which the cache model reads (the prompt holds only a window of
    it); None: `prefix + suffix` is the document."""
    cursor: int | None = None
    """The cursor's offset in `document`."""
    version: Hashable | None = None
    """The document's version (its key is `session`, else `path`): the cache model keeps a document's
    ids per version. None: they are kept by its text."""
    sources: tuple[CacheSource, ...] = ()
    """The cache model's other sources, nearest first (after the document)."""


@dataclass
class Completion:
    text: str
    tokens: int
    logprob: float
    """Sum of the model's log-probabilities of the generated tokens (0.0 where the engine has none)."""
    finish_reason: str
    """stop, length, stop_rule or time."""


@dataclass
class CompletionResult:
    candidates: list[Completion]
    latency_ms: float
    prompt_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served by the session cache (not recomputed)."""
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""


@dataclass
class HolesResult:
    """The fills of several holes, in document order."""

    fills: list[Completion]
    """One per hole: its text (cut by the stop rule), tokens, log-probability, finish reason."""
    latency_ms: float
    mode: str
    """joint (one pass, InCoder's multi-mask format) or sequential (one request per hole)."""
    prompt_tokens: int = 0
    """Tokens of the (first) prompt."""
    extra: dict = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [f.text for f in self.fills]


@runtime_checkable
class Engine(Protocol):
    """What the evaluation harness and the language server need from a model.

    Optional, so not a member here (`isinstance` checks the members): `interrupt()`, thread-safe,
    stops the engine call in flight at once from another thread (the call raises; the OpenAI engine
    cancels its HTTP read). The language server calls it, where an engine has it, when the running
    job is cancelled; an engine without it stops at its next yield."""

    name: str
    device: str
    capabilities: frozenset[str]
    """What this engine can do (see the module docstring)."""
    unavailable: dict[str, str]
    """For each capability it lacks and a feature may want: why, in one line for the user."""
    max_holes: int
    """Most holes `score_holes` takes (0 without "multi_hole_score")."""

    def infill(self, req: InfillRequest) -> CompletionResult:
        """The middle(s) for one request, ranked best first."""
        ...

    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every generated token (or chunk); return the CompletionResult. Closing the
        generator cancels the request."""
        ...

    def stream_infill_holes(self, pieces: list[str], config: GenerationConfig, *, written: list[str] | None = None,
                            ext: str | None = None, stop_at: Callable[[str], int | None] | None = None
                            ) -> Generator[None, None, HolesResult]:
        """Fill the len(pieces) - 1 holes between `pieces`: jointly with "multi_hole", else one at a time
        (`written[j]`: hole j's text as written, kept in the suffix of earlier holes). `stop_at` is each
        fill's stop rule (as `InfillRequest.stop_at`). Yields between tokens; `CannotFill` over the limits."""
        ...

    def infill_holes(self, pieces: list[str], config: GenerationConfig, **kw) -> HolesResult:
        """`stream_infill_holes` run to its end."""
        ...

    def score(self, prefix: str, suffix: str, middle: str, *, ext: str | None = None, end: bool = True) -> float:
        """Natural-log probability of `middle` between `prefix` and `suffix` in the engine's FIM
        format; with `end`, of the middle followed by the token that ends it (the middle is exactly
        this). `CannotScore` where the engine cannot."""
        ...

    def score_holes(self, pieces: list[str], fills: list[list[str]], *, ext: str | None = None) -> list[float]:
        """InCoder multi-hole scoring: `pieces` are the len(holes) + 1 texts around the holes; each
        entry of `fills` gives one text per hole. The log-probability of each fill, one batch.
        `CannotScore` without "multi_hole_score", or when it does not fit."""
        ...

    def score_text(self, text: str, *, window: int | None = None) -> tuple[float, int]:
        """(log-likelihood in nats, tokens scored) of `text` read left to right after a start token,
        in windows of at most `window` tokens that overlap by half. `CannotScore` without "text_score"."""
        ...

    def drop_session(self, key: str) -> None:
        """Forget the cached state of a session (a closed document)."""
        ...


R = TypeVar("R")


def run_to_end(gen: Generator[object, None, R]) -> R:
    """Drive a generator that yields between steps (a `stream_infill`, a feature's steps) to its value."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def end_of(text: str, req: InfillRequest) -> int | None:
    """Where the middle ends by the request's stop strings and stop rule, or None: go on."""
    ends = [text.index(s) for s in req.stop if s in text]
    if req.stop_at is not None and (at := req.stop_at(text)) is not None:
        ends.append(at)
    return min(ends) if ends else None


def rank(candidates: Iterable[tuple[str, int, float, str]], req: InfillRequest) -> list[Completion]:
    """Completions from (text, tokens, logprob, finish_reason): cut by the stop rule, identical texts
    merged (the most likely kept), best first."""
    best: dict[str, Completion] = {}
    for text, tokens, logprob, reason in candidates:
        if (end := end_of(text, req)) is not None:
            text = text[:end]
        if text not in best or best[text].logprob < logprob:
            best[text] = Completion(text, tokens, logprob, reason)
    return sorted(best.values(), key=lambda c: -c.logprob)


def check_holes(pieces: list[str], config: GenerationConfig, context: int | None, limit: int) -> int:
    """The number of holes between `pieces`; `CannotFill` (saying which limit) when there is none, more
    than `limit`, or when their token budgets together take more than `HOLE_SHARE` of `context` (one
    pass holds them all; None: each hole is its own request, fitted by the engine)."""
    holes = len(pieces) - 1
    if holes < 1:
        raise CannotFill("no holes to fill")
    if holes > limit:
        raise CannotFill(f"{holes} holes: this engine fills at most {limit} at once; select fewer")
    if context is None:
        return holes
    total, room = holes * (config.max_tokens + 2), int(context * HOLE_SHARE)
    if total > room:
        raise CannotFill(f"{holes} holes x {config.max_tokens} tokens need {total} tokens, over the budget of "
                         f"{room} (half the {context}-token context); fill fewer holes or lower maxTokens")
    return holes


def sequential_holes(engine, pieces: list[str], config: GenerationConfig, *, written: list[str] | None = None,
                     ext: str | None = None, stop_at: Callable[[str], int | None] | None = None
                     ) -> Generator[None, None, HolesResult]:
    """Fill the holes between `pieces` one at a time, left to right, each with `engine.stream_infill` in
    its single-hole format: hole j's prefix holds the fills before it, its suffix the later holes as
    `written` (empty by default). The time budget (`config.time_budget_s`) is for all the holes."""
    import time

    holes = check_holes(pieces, config, None, MAX_SEQUENTIAL_HOLES)
    written = list(written) if written is not None else [""] * holes
    if len(written) != holes:
        raise ValueError(f"{holes} holes need {holes} written texts, got {len(written)}")
    started = time.perf_counter()
    fills: list[Completion] = []
    prompt_tokens = 0
    for j in range(holes):
        prefix = "".join(p + f.text for p, f in zip(pieces[:j], fills)) + pieces[j]
        suffix = pieces[j + 1] + "".join(w + p for w, p in zip(written[j + 1:], pieces[j + 2:]))
        budget = config.time_budget_s
        if budget is not None:
            budget = max(budget - (time.perf_counter() - started), 0.001)
        req = InfillRequest(prefix, suffix, replace(config, n=1, time_budget_s=budget), stop_at=stop_at, ext=ext)
        result = yield from engine.stream_infill(req)
        prompt_tokens = prompt_tokens or result.prompt_tokens
        fills.append(result.candidates[0] if result.candidates else Completion("", 0, 0.0, "stop"))
    return HolesResult(fills, (time.perf_counter() - started) * 1000, "sequential", prompt_tokens)


def prompt_budget(context: int, req: InfillRequest) -> int:
    """Tokens the prefix and suffix may take: the context less the middle's room and an allowance for
    the sentinels and the file header (12 tokens and the extension's length). ValueError when none is left."""
    budget = context - req.config.max_tokens - (12 + len(req.ext or ""))
    if budget <= 0:
        raise ValueError(f"max_tokens {req.config.max_tokens} leaves no room for a prompt (context {context})")
    return budget


def fit_context(req: InfillRequest, budget: int, count: Callable[[list[str]], list[int]],
                overhead: int = 8) -> tuple[list[tuple[str, str]], int]:
    """(chunks kept, tokens they take): `req.context` best first, each while it fits in
    min(req.context_tokens, budget // 2) tokens; a chunk costs its path and text plus `overhead`
    tokens of separators. Depends on the chunks and the budget only, never on the prefix, so the
    context stays the same while the user types and the session cache keeps hitting."""
    if not req.context or req.context_tokens <= 0:
        return [], 0
    room = min(req.context_tokens, budget // 2)
    costs = count([f"{path}\n{text}" for path, text in req.context])
    kept, used = [], 0
    for chunk, cost in zip(req.context, costs):
        if used + cost + overhead <= room:
            kept.append(chunk)
            used += cost + overhead
    return kept, used


def _tail_chars(line: str, room: int) -> str:
    return line[-room:] if room > 0 else ""


def fit_lines(prefix: str, suffix: str, budget: int, count: Callable[[list[str]], list[int]],
              tail: Callable[[str, int], str] = _tail_chars) -> tuple[str, str]:
    """Trim `prefix` from its start and `suffix` from its end, whole lines at a time, to `budget`
    tokens; `count(list[str]) -> list[int]` gives the token count of each line. The suffix keeps at
    most a quarter of the budget. A cursor line that alone exceeds the budget keeps its end:
    `tail(line, room)`, its last `room` tokens (default: characters, at least one token each)."""
    pre = prefix.splitlines(keepends=True)
    suf = suffix.splitlines(keepends=True)
    pre_n = count(pre) if pre else []
    suf_n = count(suf) if suf else []
    if sum(pre_n) + sum(suf_n) <= budget:
        return prefix, suffix
    keep, used = 0, 0
    while keep < len(suf) and used + suf_n[keep] <= min(sum(suf_n), budget // 4):
        used += suf_n[keep]
        keep += 1
    room, start, used_pre = budget - used, len(pre), 0
    while start > 0 and used_pre + pre_n[start - 1] <= room:
        used_pre += pre_n[start - 1]
        start -= 1
    if start == len(pre) and pre:
        return tail(pre[-1], room), "".join(suf[:keep])
    return "".join(pre[start:]), "".join(suf[:keep])


S = TypeVar("S")


class SessionPool(Generic[S]):
    """Session caches by key, least recently used first out once their bytes pass `limit_bytes`
    (the newest always stays)."""

    def __init__(self, cache_mb: float, nbytes: Callable[[S], int]):
        self.limit_bytes = int(cache_mb * 2**20)
        self._nbytes = nbytes
        self._items: OrderedDict[str, S] = OrderedDict()

    def get(self, key: str, make: Callable[[S | None], S]) -> S:
        """The session of `key` (made by `make(old or None)`, which may return `old`), now most recent."""
        session = make(self._items.pop(key, None))
        self._items[key] = session
        self.trim()
        return session

    def trim(self) -> None:
        total = self.nbytes()
        while total > self.limit_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            total -= self._nbytes(old)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def values(self) -> list[S]:
        return list(self._items.values())

    def nbytes(self) -> int:
        return sum(self._nbytes(s) for s in self._items.values())


def windowed_logprob(ids: list[int], window: int, logprobs_of: Callable[[list[int]], list[float]]
                     ) -> tuple[float, int]:
    """(sum of log-probabilities, tokens scored) of ids[1:] given what precedes each, in windows of
    `window` tokens; each window after the first starts with the last `window // 2` tokens of the one
    before as unscored context. `logprobs_of(chunk)` gives the log-probability of chunk[i] after
    chunk[:i], for i >= 1 (len(chunk) - 1 values)."""
    if window < 2:
        raise CannotScore(f"context {window} is too short to score anything")
    keep = window // 2
    total, scored, pos = 0.0, 0, 1
    while pos < len(ids):
        begin = max(0, pos - (1 if pos == 1 else keep))
        end = min(len(ids), begin + window)
        lps = logprobs_of(ids[begin:end])
        total += math.fsum(lps[pos - begin - 1:])
        scored += end - pos
        pos = end
    return total, scored
