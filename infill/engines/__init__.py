"""Engines: one interface in front of every kind of model, used by `infill eval` and by `infill-lsp`.

- `infill.engine.LocalEngine`: an infill checkpoint directory.
- `infill.engines.hf.HFEngine`: a Hugging Face model (directory or locally cached hub name) through
  transformers, prompted with a FIM template (`infill.engines.templates`).
- `infill.engines.openai.OpenAIEngine`: an OpenAI-compatible completions server (`openai:URL`).

Every engine takes an `infill.engine.InfillRequest` and returns an `infill.engine.CompletionResult`;
`stream_infill` is a generator that yields between tokens (a place for the caller to cancel, by
closing it) and returns the result. `infill.load.load_engine` picks the engine for a `--model` value.
"""
from __future__ import annotations

from collections.abc import Generator
from typing import Protocol, runtime_checkable

from infill.engine import CompletionResult, InfillRequest


@runtime_checkable
class Engine(Protocol):
    """What the evaluation harness and the language server need from a model."""

    name: str
    device: str

    def infill(self, req: InfillRequest) -> CompletionResult:
        """The middle(s) for one request, ranked best first."""
        ...

    def stream_infill(self, req: InfillRequest) -> Generator[None, None, CompletionResult]:
        """Yield after every generated token (or chunk); return the CompletionResult."""
        ...

    def drop_session(self, key: str) -> None:
        """Forget the cached state of a session (a closed document)."""
        ...


def run_to_end(gen: Generator[None, None, CompletionResult]) -> CompletionResult:
    """Drive a `stream_infill` generator to its result."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def end_of(text: str, req: InfillRequest) -> int | None:
    """Where the middle ends by the request's stop strings and stop rule, or None (as in LocalEngine)."""
    ends = [text.index(s) for s in req.stop if s in text]
    if req.stop_at is not None and (at := req.stop_at(text)) is not None:
        ends.append(at)
    return min(ends) if ends else None


def fit_lines(prefix: str, suffix: str, budget: int, count) -> tuple[str, str]:
    """Trim `prefix` from its start and `suffix` from its end, whole lines at a time, to `budget`
    tokens; `count(list[str]) -> list[int]` gives the token count of each line. The suffix keeps at
    most a quarter of the budget; a cursor line that alone exceeds the budget keeps its last characters.
    The same rule as `LocalEngine`, for engines with another tokenizer."""
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
    if start == len(pre) and pre:  # characters as a stand-in for tokens: a line is at least 1 char/token
        return pre[-1][-max(room, 0):] if room > 0 else "", "".join(suf[:keep])
    return "".join(pre[start:]), "".join(suf[:keep])
