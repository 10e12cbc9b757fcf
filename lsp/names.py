"""Variable-name suggestions: InCoder's zero-shot renaming, every occurrence of the variable masked.

One way through: document text -> `scopes.symbol_at` (the variable and all its occurrences in its
scope) -> candidates sampled from the engine at the first occurrence (later occurrences hidden behind
"_", as `infill eval names` does) -> each valid candidate ranked by the InCoder likelihood of the whole
document with that name in every masked span (`engine.score_holes`) -> the top k -> `rename_edits`.

Rules:
- A suggestion is a Python identifier, not a keyword, not the current name, and not a name that
  already occurs in the file (renaming onto it could capture or shadow another variable).
- Ranking falls back, in order: an engine without multi-hole scoring (or a variable with more
  occurrences than it has holes, or a prompt longer than the context) ranks by `engine.score` of the
  name at the first occurrence; one that cannot score given text either, by the sampled candidates'
  own log-probabilities. An engine with none of these cannot suggest names (`unavailable` says why).
- Only the variable's occurrences are edited (see `lsp.scopes` for what counts as one).
- `suggest_steps` yields after every generated token so the server can cancel it.
"""
from __future__ import annotations

import keyword
import re
from collections.abc import Generator
from dataclasses import dataclass

from infill.engines import CannotScore, Engine, GenerationConfig, InfillRequest, run_to_end
from lsp import scopes
from lsp.completion import clean

MAX_TOKENS = 8
SAMPLES = 8
WINDOW_CHARS = 4096
"""Text kept before the first and after the last occurrence."""
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WORD = re.compile(r"\s*[A-Za-z0-9_]*")


@dataclass(frozen=True)
class Suggestion:
    name: str
    logprob: float


def is_valid_name(name: str) -> bool:
    """A Python identifier that is not a keyword (ASCII only, which is what the model writes)."""
    return bool(_IDENT.match(name)) and not keyword.iskeyword(name) and not keyword.issoftkeyword(name)


def _pieces(text: str, symbol: scopes.Symbol) -> list[str]:
    """The text around the occurrences: len(spans) + 1 pieces, the outer two cut to WINDOW_CHARS."""
    pieces, last = [], 0
    for start, end in symbol.spans:
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    pieces[0] = pieces[0][-WINDOW_CHARS:]
    pieces[-1] = pieces[-1][:WINDOW_CHARS]
    return [clean(p) for p in pieces]  # the model's tokenizer cannot take a lone surrogate


def _stop_at(middle: str) -> int | None:
    m = _WORD.match(middle)
    return m.end() if m and m.end() < len(middle) else None


def unavailable(engine: Engine) -> str | None:
    """Why `engine` cannot rank name suggestions, or None when it can."""
    if {"multi_hole_score", "score", "sampled_logprobs"} & engine.capabilities:
        return None
    why = "; ".join(engine.unavailable.get(c, f"no {c}") for c in ("score", "sampled_logprobs"))
    return f"name suggestions need the model's log-probabilities: {why}"


def suggest_steps(text: str, symbol: scopes.Symbol, engine: Engine, k: int = 3, *, seed: int = 0,
                  time_budget_s: float | None = None) -> Generator[None, None, list[Suggestion]]:
    """Yield after every token; return up to `k` suggested names for `symbol`, most likely first."""
    pieces = _pieces(text, symbol)
    config = GenerationConfig(max_tokens=MAX_TOKENS, temperature=0.8, seed=seed, n=SAMPLES,
                              time_budget_s=time_budget_s)
    req = InfillRequest(pieces[0], "_".join(pieces[1:]), config, stop_at=_stop_at, ext=".py")
    result = yield from engine.stream_infill(req)
    taken = scopes.names_in(text)
    sampled: dict[str, float] = {}
    for c in result.candidates:
        name = c.text.strip()
        if is_valid_name(name) and name != symbol.name and name not in taken:
            sampled[name] = max(sampled.get(name, float("-inf")), c.logprob)
    if not sampled:
        return []
    yield
    ranked = rank(engine, pieces, list(sampled)) or sampled
    return sorted((Suggestion(n, lp) for n, lp in ranked.items()), key=lambda s: -s.logprob)[:k]


def rank(engine: Engine, pieces: list[str], names: list[str]) -> dict[str, float] | None:
    """Log-likelihood of each name: filling every masked span (InCoder), else the first occurrence with
    the others hidden behind "_"; None when the engine can do neither here."""
    holes = len(pieces) - 1
    if "multi_hole_score" in engine.capabilities and holes <= engine.max_holes:
        try:
            return dict(zip(names, engine.score_holes(pieces, [[n] * holes for n in names], ext=".py")))
        except CannotScore:
            pass
    if "score" in engine.capabilities:
        suffix = "_".join(pieces[1:])
        try:
            return {n: engine.score(pieces[0], suffix, n, ext=".py", end=False) for n in names}
        except CannotScore:
            pass
    return None


def suggest(text: str, offset: int, engine: Engine, k: int = 3) -> list[Suggestion]:
    """`suggest_steps` for the variable at `offset`, run to the end ([] when there is none)."""
    symbol = scopes.symbol_at(text, offset)
    if symbol is None:
        return []
    return run_to_end(suggest_steps(text, symbol, engine, k))


def rename_edits(symbol: scopes.Symbol, new_name: str) -> list[tuple[int, int, str]]:
    """(start, end, new text) for every occurrence of `symbol`; ValueError for a name Python rejects."""
    if not is_valid_name(new_name):
        raise ValueError(f"{new_name!r} is not a valid Python name")
    return [(start, end, new_name) for start, end in symbol.spans]
