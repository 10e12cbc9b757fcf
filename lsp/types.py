"""Type inference for Python: InCoder's zero-shot recipe, an infilled annotation slot.

One way through: document text -> `type_slots` (where an annotation is missing, found with
tree-sitter) -> `slot_prompt` (prefix ending in ": " or " -> ", the rest as suffix) -> the engine's
middle, cut at the end of the annotation -> `normalise` -> its probability (`engine.score` of exactly
that annotation as the whole middle) -> `InferredType`. `annotation_edits` turns the confident ones
into insertions.

Rules:
- A slot is an unannotated parameter (plain, with a default, `*args`, `**kwargs`, keyword-only) or a
  missing return annotation. The first parameter of a method (`self`, `cls`) gets none.
- The annotation is inserted right after the parameter's name (`a=1` becomes `a: T=1`, `*args` becomes
  `*args: T`) and a return annotation right after the parameter list's `)`. Insertions never overlap,
  so a file that parsed still parses.
- The inferred type is the longest start of the middle, cut at a whitespace boundary, that parses as a
  Python expression (a model that rambles on after the type still gives the type; its probability,
  scored for exactly that type, says how much to trust it). A middle with no such start is no type.
- On an engine that cannot score given text but returns the log-probabilities of what it samples
  (a server without `echo`), the probability is that of the generated middle; an engine with neither
  cannot serve type hints, and `unavailable` says why.
- Everything is a pure function of (text, slot, engine); `infer_steps` yields after every generated
  token so the server can cancel it.
"""
from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from functools import lru_cache

from infill.engines import Engine, GenerationConfig, InfillRequest, run_to_end
from infill.text import cut_annotation, normalise
from lsp import positions, syntax
from lsp.completion import clean

MAX_TOKENS = 16
WINDOW_CHARS = 16384
"""Text kept on each side of a slot (the engine trims further to its context)."""


@dataclass(frozen=True)
class Slot:
    """A missing annotation."""

    kind: str
    """param or return."""
    name: str
    """The parameter's name, or the function's name for a return slot."""
    at: int
    """Where the annotation is inserted (a string offset)."""
    anchor: tuple[int, int]
    """The identifier a hover on which asks for this slot (the parameter or the function name)."""
    function: tuple[int, int] = (0, 0)
    """The function definition the slot belongs to (string offsets)."""


@dataclass(frozen=True)
class InferredType:
    annotation: str
    probability: float


def type_slots(text: str) -> list[Slot]:
    """Every missing parameter and return annotation of every function in `text`, in document order."""
    return list(_type_slots(text))


@lru_cache(maxsize=8)
def _type_slots(text: str) -> tuple[Slot, ...]:
    parser = syntax.parser_for("python")
    if parser is None:
        return ()
    data = text.encode("utf-8", "surrogatepass")
    out: list[Slot] = []

    off = positions.char_offsets(data)  # byte -> string offset, built once per parse

    def walk(node) -> None:
        if node.type == "function_definition":
            out.extend(_function_slots(node, off))
        for child in node.children:
            walk(child)

    walk(parser.parse(data).root_node)
    return tuple(sorted(out, key=lambda s: s.at))


def slot_at(text: str, offset: int) -> Slot | None:
    """The slot whose anchor (parameter or function name) is at `offset`, or None."""
    return next((s for s in type_slots(text) if s.anchor[0] <= offset <= s.anchor[1]), None)


def slots_in(text: str, start: int, end: int) -> list[Slot]:
    """The slots of every function that overlaps text[start:end]."""
    return [s for s in type_slots(text) if s.function[0] <= end and start <= s.function[1]]


def _is_method(fn) -> bool:
    parent = fn.parent
    if parent is not None and parent.type == "decorated_definition":
        parent = parent.parent
    return parent is not None and parent.type == "block" and parent.parent is not None \
        and parent.parent.type == "class_definition"


def _function_slots(fn, off) -> list[Slot]:
    name = fn.child_by_field_name("name")
    params = fn.child_by_field_name("parameters")
    if name is None or params is None:
        return []
    fname = name.text.decode("utf-8", "surrogatepass")
    whole = (off(fn.start_byte), off(fn.end_byte))
    slots, first = [], True
    for p in params.named_children:
        ident = None
        if p.type == "identifier":
            ident = p
        elif p.type == "default_parameter":
            ident = p.child_by_field_name("name")
        elif p.type in ("list_splat_pattern", "dictionary_splat_pattern"):
            ident = next((c for c in p.children if c.type == "identifier"), None)
        is_first, first = first, False
        if ident is None or ident.type != "identifier":
            continue
        pname = ident.text.decode("utf-8", "surrogatepass")
        if is_first and p.type == "identifier" and _is_method(fn) and pname in ("self", "cls"):
            continue
        span = (off(ident.start_byte), off(ident.end_byte))
        slots.append(Slot("param", pname, span[1], span, whole))
    if fn.child_by_field_name("return_type") is None:
        slots.append(Slot("return", fname, off(params.end_byte), (off(name.start_byte), off(name.end_byte)), whole))
    return slots


def slot_prompt(text: str, slot: Slot) -> tuple[str, str]:
    """(prefix, suffix) whose middle is the annotation of `slot`."""
    glue = ": " if slot.kind == "param" else " -> "
    return clean(text[max(0, slot.at - WINDOW_CHARS):slot.at]) + glue, clean(text[slot.at:slot.at + WINDOW_CHARS])


def _stop_rule(kind: str):
    stops = ":" if kind == "return" else ",)="

    def stop_at(middle: str) -> int | None:
        cut = cut_annotation(middle, stops)
        return len(cut) if len(cut) < len(middle) else None
    return stop_at


def unavailable(engine: Engine) -> str | None:
    """Why `engine` cannot infer types, or None when it can."""
    if {"score", "sampled_logprobs"} & engine.capabilities:
        return None
    why = "; ".join(engine.unavailable.get(c, f"no {c}") for c in ("score", "sampled_logprobs"))
    return f"type hints need the model's log-probabilities: {why}"


def infer_steps(text: str, slot: Slot, engine: Engine, *, time_budget_s: float | None = None
                ) -> Generator[None, None, InferredType | None]:
    """Yield after every token; return the inferred type of `slot` with its probability, or None."""
    prefix, suffix = slot_prompt(text, slot)
    req = InfillRequest(prefix, suffix, GenerationConfig(max_tokens=MAX_TOKENS, time_budget_s=time_budget_s),
                        stop_at=_stop_rule(slot.kind), ext=".py")
    result = yield from engine.stream_infill(req)
    if not result.candidates:
        return None
    best = result.candidates[0]
    annotation = annotation_of(best.text, slot.kind)
    if not annotation:
        return None
    yield
    if "score" not in engine.capabilities:  # the sampled middle's own probability
        return InferredType(annotation, min(math.exp(best.logprob), 1.0))
    return InferredType(annotation, probability(engine, prefix, suffix, annotation))


def annotation_of(middle: str, kind: str) -> str | None:
    """The annotation a middle starts with: the longest part before a stop (`:` for a return, `,)=`
    for a parameter) and a whitespace boundary that parses, normalised; None when no part parses."""
    cut = cut_annotation(middle, ":" if kind == "return" else ",)=").strip()
    ends = [len(cut)] + [i for i in range(len(cut) - 1, 0, -1) if cut[i].isspace() and not cut[i - 1].isspace()]
    for end in ends:
        if (found := normalise(cut[:end])) is not None:
            return found
    return None


def probability(engine: Engine, prefix: str, suffix: str, middle: str) -> float:
    """The model's probability that the middle between `prefix` and `suffix` is exactly `middle`."""
    return math.exp(engine.score(prefix, suffix, middle, ext=".py"))


def infer(text: str, slot: Slot, engine: Engine) -> InferredType | None:
    """`infer_steps` run to the end."""
    return run_to_end(infer_steps(text, slot, engine))


def annotation_edits(slots: list[Slot], inferred: list[InferredType | None], confidence: float
                     ) -> list[tuple[int, str]]:
    """(offset, text to insert) for every inferred type at or above `confidence`."""
    edits = []
    for slot, t in zip(slots, inferred):
        if t is not None and t.probability >= confidence:
            edits.append((slot.at, (": " if slot.kind == "param" else " -> ") + t.annotation))
    return edits


def hint_label(slot: Slot, t: InferredType) -> str:
    """The inlay hint's text, as it would be inserted."""
    return (": " if slot.kind == "param" else " -> ") + t.annotation
