"""Code completion at the cursor: where a completion starts, where it stops, and the edit it makes.

One way through: document text -> `plan_completion` (prompt text, single- or multi-line, the stop
rule) -> `infill_request` -> the engine's middle -> `to_edit` (the text and the range it replaces).
Everything here is a pure function of (text, offset, engine, options); the server only converts
positions and drives `complete_steps`, which yields after every generated token so it can be cancelled.

Rules:
- Mid-line (non-blank text before the cursor on its line) wants the rest of the line: one line.
- Just after a block opener (`syntax.opens_block`: `def f():`, `if (x) {`), at the end of the opener's
  line or on a blank line below it, wants the block's body: several lines, ending before the first
  line indented less than the body. In a brace language that line is the closing `}`; it is kept only
  when the suffix has no closer of its own.
- Anywhere else a blank line wants one line (a statement).
- Never repeat the line that follows: a middle line equal to the next non-blank line of the suffix
  ends the middle before it (and a one-line middle equal to it is no completion).
- Closing brackets the editor already inserted: when the rest of the cursor line is only closers and a
  one-line middle ends with them, the edit replaces them (its range covers them) instead of doubling.
- Indentation follows the document: tabs or spaces as the document uses them; a body starts on the
  line below an opener at the body's indentation.
- A multi-line middle cut short by the token or time budget drops its unfinished last line.
- Typed-through (`typed_through`): typing the start of the suggestion shown leaves the rest of it as
  the suggestion, with no model call.
- Text the tokenizer cannot take (lone surrogates from broken encodings) becomes U+FFFD, one for one,
  so offsets do not move.
- Repository context the model's own tokenizer cannot take (`BroughtTokenizerError`: a backtracking
  regex in a Hugging Face tokenizer.json, over its time budget or panicking) is dropped and the
  request asked again without it: another file's text never costs this document its completions.
"""
from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, replace

from infill.engines import (CacheConfig, CacheSource, CompletionResult, Engine, GenerationConfig, InfillRequest,
                            run_to_end)
from infill.engines.budget import BroughtTokenizerError
from lsp import syntax
from lsp.options import ServerOptions

CLOSERS = frozenset(")]}>\"'`;:,")
WINDOW_CHARS = 32768
"""Text kept on each side of the cursor before the engine trims to tokens (a 5 MB file stays cheap)."""
_QUANTUM = 4096
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_WORD = re.compile(r"[\w$]*\Z")


@dataclass(frozen=True)
class Edit:
    """Replace text[start:end] of the document with `text`."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class CompletionPlan:
    """What the cursor position asks for, decided before the model runs."""

    prefix: str
    """Text before the cursor given to the engine (a window of the document, whole lines)."""
    suffix: str
    offset: int
    """The cursor, as an offset into the document."""
    line_prefix: str
    """The cursor line before the cursor."""
    line_suffix: str
    """The cursor line after the cursor, without its line break."""
    multiline: bool
    body_indent: str = ""
    """Multi-line: the indentation of the body's lines."""
    opener: str = ""
    """Multi-line: the character that opened the block (":" or "{")."""
    opener_indent: str = ""
    """Multi-line: the indentation of the opener's line."""
    next_line: str = ""
    """The first non-blank line after the cursor line, stripped."""
    indent_unit: str = "    "
    suffix_closes: bool = False
    """The suffix already starts with a closing brace (after blanks)."""

    def end_of(self, middle: str) -> int | None:
        """Where the middle ends, given the text generated so far (the engine's stop rule); None: go on."""
        if not self.multiline:
            cut = middle.find("\n")
            return cut if cut >= 0 else None
        head = self.line_prefix
        full = head + middle
        body = _width(self.body_indent)
        start = 0
        for k, line in enumerate(full.split("\n")):
            line_start, start = start, start + len(line) + 1
            complete = start <= len(full)
            if (k == 0 and line_start + len(line) <= len(head)) or not line.strip():
                continue  # the opener's own line, or a blank line
            before = max(line_start - 1 - len(head), 0)
            if _width(line[:len(line) - len(line.lstrip())]) < body:
                if self.opener == "{" and line.lstrip().startswith("}") and not self.suffix_closes:
                    return start - 1 - len(head) if complete else None
                return before
            if complete and line.strip() == self.next_line:
                return before
        return None


def _width(indent: str) -> int:
    return len(indent.replace("\t", "    "))


def _indent_of(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]


def clean(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (same length)."""
    return _SURROGATE.sub("\ufffd", text)


def _window(text: str, offset: int, chars: int) -> tuple[str, str]:
    """(prefix, suffix) around `offset`, cut at line boundaries that move only every _QUANTUM chars."""
    start = (max(offset - chars, 0) // _QUANTUM) * _QUANTUM
    if start > 0:
        nl = text.find("\n", start, offset)
        start = nl + 1 if nl >= 0 else start
    end = ((offset + chars) // _QUANTUM + 1) * _QUANTUM
    if end < len(text):
        nl = text.rfind("\n", offset, end)
        end = nl + 1 if nl >= 0 else end
    return clean(text[start:offset]), clean(text[offset:end])


def plan_completion(text: str, offset: int, language: str | None = None, *,
                    window_chars: int = WINDOW_CHARS) -> CompletionPlan:
    """Decide what a completion at `offset` of `text` should be (see the module rules)."""
    offset = min(max(offset, 0), len(text))
    prefix, suffix = _window(text, offset, window_chars)
    line_prefix = prefix[prefix.rfind("\n") + 1:].lstrip("\r")
    line_suffix = re.split(r"\r|\n", suffix, maxsplit=1)[0]
    rest = suffix[len(line_suffix):]
    next_line = next((ln.strip() for ln in rest.splitlines() if ln.strip()), "")
    unit = syntax.indent_unit(text)
    common = dict(prefix=prefix, suffix=suffix, offset=offset, line_prefix=line_prefix,
                  line_suffix=line_suffix, next_line=next_line, indent_unit=unit)
    at_line_end = not line_suffix.strip() or set(line_suffix.strip()) <= {"}"}
    if not at_line_end or not syntax.opens_block(prefix, language):
        return CompletionPlan(multiline=False, **common)
    before = prefix.rstrip()
    opener_line = before[before.rfind("\n") + 1:]
    if line_prefix.strip():  # the cursor ends the opener's line: the body starts on the next line
        body = _indent_of(opener_line) + unit
    else:  # a blank line below the opener: the editor's indentation wins when it indented
        body = line_prefix if _width(line_prefix) > _width(_indent_of(opener_line)) else _indent_of(opener_line) + unit
    return CompletionPlan(multiline=True, body_indent=body, opener=before[-1], opener_indent=_indent_of(opener_line),
                          suffix_closes=suffix.lstrip().startswith("}"), **common)


def _reindent(middle: str, unit: str, first_too: bool) -> str:
    """Leading tabs become `unit` in a spaces document, and groups of 4 spaces tabs in a tabs document."""
    lines = middle.split("\n")
    for i, line in enumerate(lines):
        if i == 0 and not first_too:
            continue
        ws = _indent_of(line)
        fixed = ws.replace("    ", "\t") if unit == "\t" else ws.replace("\t", unit)
        lines[i] = fixed + line[len(ws):]
    return "\n".join(lines)


def to_edit(plan: CompletionPlan, middle: str, finish_reason: str = "stop") -> Edit | None:
    """The edit a generated middle makes at the cursor, or None when there is nothing worth showing."""
    if (cut := plan.end_of(middle)) is not None:
        middle = middle[:cut]
    middle = _reindent(middle, plan.indent_unit, first_too=not plan.line_prefix.strip())
    if not plan.multiline:
        tail = plan.line_suffix.strip()
        if not tail:
            middle = middle.rstrip()
        if not middle.strip():
            return None
        if not tail and plan.line_prefix.strip() + middle.strip() == plan.next_line \
                or not plan.line_prefix.strip() and middle.strip() == plan.next_line:
            return None  # the user's next line, again
        if tail and set(tail) <= CLOSERS and middle.rstrip().endswith(tail):
            return Edit(middle.rstrip(), plan.offset, plan.offset + len(plan.line_suffix))
        return Edit(middle, plan.offset, plan.offset)
    if finish_reason in ("length", "time") and not middle.endswith("\n"):
        done = [ln for ln in middle.split("\n")[:-1] if ln.strip()]
        if done:  # at least one whole line: drop the unfinished one
            middle = middle[:middle.rfind("\n")]
    middle = middle.rstrip()
    if (cut := plan.end_of(middle + "\n")) is not None:  # the last line, now complete, may repeat
        middle = middle[:cut].rstrip()
    if not middle.strip():
        return None
    if plan.line_suffix.strip():  # `{|}`: the body goes between the braces
        middle += "\n" + plan.opener_indent
    return Edit(middle, plan.offset, plan.offset)


def infill_request(plan: CompletionPlan, options: ServerOptions, *, session: str | None = None,
                   ext: str | None = None, context: tuple[tuple[str, str], ...] = (), path: str | None = None,
                   repo: str | None = None, document: str | None = None, version: object = None,
                   sources: tuple[tuple[str, object, str], ...] = (), cache: CacheConfig | None = None
                   ) -> InfillRequest:
    """The engine request for a plan: the plan's stop rule, the options' budgets, the repository
    context ((path, text) chunks, best first) when the options switch it on, and the cache model
    (`cache`, default `CacheConfig()` within `cacheSourcesMb`) over the whole `document` at `version`
    and the (key, version, text) `sources` when `options.cache` is on."""
    config = GenerationConfig(max_tokens=options.max_tokens, temperature=options.temperature,
                              time_budget_s=options.time_budget_ms / 1000)
    context = tuple((clean(p), clean(t)) for p, t in context) if options.context else ()
    if options.cache:
        cache = replace(cache or CacheConfig(), limit_mb=options.cache_sources_mb)
    else:
        cache, sources = None, ()
    return InfillRequest(plan.prefix, plan.suffix, config, stop_at=plan.end_of, session=session, ext=ext or None,
                         context=context, context_tokens=options.context_tokens, path=path, repo=repo,
                         cache=cache, document=document if cache is not None else None, cursor=plan.offset,
                         version=version, sources=tuple(CacheSource(*s) for s in sources))


def complete_steps(text: str, offset: int, engine: Engine, options: ServerOptions, *,
                   language: str | None = None, session: str | None = None, ext: str | None = None,
                   context: tuple[tuple[str, str], ...] = (), path: str | None = None, repo: str | None = None,
                   version: object = None, sources: tuple[tuple[str, object, str], ...] = (),
                   cache: CacheConfig | None = None,
                   ) -> Generator[None, None, tuple[Edit | None, CompletionResult]]:
    """Yield after every generated token; return (the edit or None, the engine's result). The cache
    model reads `text` whole (at `version`) and `sources`; `cache` overrides its settings."""
    plan = plan_completion(text, offset, language)
    request = infill_request(plan, options, session=session, ext=ext, context=context, path=path, repo=repo,
                             document=text, version=version, sources=sources, cache=cache)
    try:
        result = yield from engine.stream_infill(request)
    except BroughtTokenizerError:
        if not request.context:
            raise
        # another file's text the model's tokenizer cannot take must not cost this document its
        # completions: context is a bonus (as in `lsp.server.InfillServer.context_for`)
        result = yield from engine.stream_infill(replace(request, context=(), sources=()))
    if not result.candidates:
        return None, result
    best = result.candidates[0]
    return to_edit(plan, best.text, best.finish_reason), result


def complete(text: str, offset: int, engine: Engine, options: ServerOptions, **kwargs
             ) -> tuple[Edit | None, CompletionResult]:
    """`complete_steps` run to the end, for callers that need not cancel."""
    return run_to_end(complete_steps(text, offset, engine, options, **kwargs))


def typed_through(shown: str, edit: Edit, text: str, offset: int) -> Edit | None:
    """The rest of `edit` (shown as ghost text in document `shown`) once the user has typed its first
    characters, giving `text` with the cursor at `offset`; None unless exactly that happened: text
    inserted at the edit's start, all of it a proper beginning of the edit's text, nothing else changed.
    (Tabby's and llama.vim's cache: no model call while the user types what was suggested.)"""
    typed = offset - edit.start
    if typed <= 0 or typed >= len(edit.text) or len(text) != len(shown) + typed:
        return None
    if not edit.text.startswith(text[edit.start:offset]):
        return None
    if text[:edit.start] != shown[:edit.start] or text[offset:] != shown[edit.start:]:
        return None
    return Edit(edit.text[typed:], offset, edit.end + typed)


def as_completion_item(text: str, edit: Edit) -> tuple[str, Edit]:
    """(label, edit) for a `textDocument/completion` item: the edit starts at the word being typed, so
    clients that filter items by that word keep it."""
    word = _WORD.search(text[max(edit.start - 256, 0):edit.start]).group(0)
    whole = Edit(word + edit.text, edit.start - len(word), edit.end)
    label = next((ln.strip() for ln in whole.text.splitlines() if ln.strip()), whole.text)
    return (label[:60] + "…" if len(label) > 60 else label), whole
