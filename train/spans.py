"""Span candidates for masking: random ones between pre-tokenizer pieces, syntax-aware ones from tree-sitter.

Every span is a half-open character range `(start, end)` of the document, non-empty. Rules:
- Random spans start and end on boundaries of the tokenizer's pre-split pieces (`infill.tokenizer.splitter`, the current version), so a
  piece encoded on its own gives the same tokens as inside the document: masking never changes how
  the rest of the file tokenizes.
- Syntax-aware spans (Python, tree-sitter; AST-FIM, Gong et al. 2025) come in three kinds:
  `node` whole expressions, statements and blocks; `identifier` every occurrence of one name
  (renaming); `annotation` type-annotation slots (type inference).
- A list of spans returned by `choose_*` is sorted and non-overlapping.
"""
from __future__ import annotations

import bisect
import random
from functools import lru_cache

from infill.tokenizer import splitter

Span = tuple[int, int]

# Statement-, block- and expression-level node types worth hiding whole.
NODE_TYPES = frozenset({
    "expression_statement", "return_statement", "if_statement", "for_statement", "while_statement",
    "try_statement", "with_statement", "raise_statement", "assert_statement", "import_statement",
    "import_from_statement", "function_definition", "class_definition", "decorated_definition", "block",
    "call", "argument_list", "parameters", "binary_operator", "boolean_operator", "comparison_operator",
    "conditional_expression", "list", "dictionary", "tuple", "set", "list_comprehension",
    "dictionary_comprehension", "generator_expression", "subscript", "attribute", "lambda", "string",
    "assignment", "augmented_assignment", "elif_clause", "else_clause", "except_clause",
})
# Parents whose `type` child is an annotation slot (a parameter, a return type, `x: T = ...`).
ANNOTATED_PARENTS = frozenset({"typed_parameter", "typed_default_parameter", "function_definition", "assignment"})
SYNTAX_KINDS = ("node", "identifier", "annotation")


@lru_cache(maxsize=1)
def _splitter():
    return splitter()


def piece_boundaries(text: str) -> list[int]:
    """Sorted character offsets where a pre-split piece starts or the text ends (0 and len included)."""
    bounds = [start for _, (start, _) in _splitter().pre_tokenize_str(text)]
    return bounds + [len(text)] if bounds else [0]


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter
    import tree_sitter_python

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))


def _char_offsets(data: bytes, text: str):
    """Map byte offsets of `data` (UTF-8 of `text`) to character offsets."""
    if len(data) == len(text):
        return lambda b: b
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return lambda b: bisect.bisect_left(starts, b)


def syntax_candidates(text: str) -> dict[str, list]:
    """Syntax-aware span candidates of Python `text`.

    Returns {"node": [span...], "identifier": [[span...] per name], "annotation": [span...]}; empty
    lists when nothing parses. Nodes that span the whole file or contain syntax errors are skipped.
    """
    data = text.encode("utf-8")
    tree = _parser().parse(data)
    to_char = _char_offsets(data, text)
    nodes: list[Span] = []
    names: dict[str, list[Span]] = {}
    annotations: list[Span] = []
    cursor = tree.walk()
    visited_children = False
    while True:  # pre-order walk with a cursor: no Python recursion, no child lists
        if not visited_children:
            node = cursor.node
            kind = node.type
            if node.has_error and kind != "module":
                pass  # keep walking: an error subtree may still hold good statements
            elif kind in NODE_TYPES and node.end_byte - node.start_byte < len(data):
                nodes.append((node.start_byte, node.end_byte))
            elif kind == "identifier":
                names.setdefault(data[node.start_byte:node.end_byte].decode("utf-8", "replace"), []).append(
                    (node.start_byte, node.end_byte))
            elif kind == "type" and node.parent is not None and node.parent.type in ANNOTATED_PARENTS:
                annotations.append((node.start_byte, node.end_byte))
            if cursor.goto_first_child():
                continue
        if cursor.goto_next_sibling():
            visited_children = False
            continue
        if not cursor.goto_parent():
            break
        visited_children = True
    conv = lambda spans: [(to_char(a), to_char(b)) for a, b in spans if b > a]  # noqa: E731
    return {"node": conv(nodes), "identifier": [conv(v) for v in names.values() if len(v) > 1],
            "annotation": conv(annotations)}


def truncated_poisson(rng: random.Random, k: int) -> int:
    """A Poisson(1) draw truncated to [1, k] (redrawn until it falls inside, as InCoder)."""
    while True:
        # Knuth's method: count uniforms until their product drops below e^-1.
        n, p = 0, rng.random()
        while p > 0.36787944117144233:
            n += 1
            p *= rng.random()
        if 1 <= n <= k:
            return n


def choose_random_spans(rng: random.Random, bounds: list[int], n: int) -> list[Span]:
    """Up to `n` non-overlapping spans with endpoints drawn uniformly from `bounds` (InCoder: sample
    both endpoints, reject a span that overlaps one already taken). Sorted by start."""
    spans: list[Span] = []
    if len(bounds) < 2:
        return spans
    for _ in range(n * 10):
        if len(spans) == n:
            break
        a, b = sorted(rng.sample(range(len(bounds)), 2))
        start, end = bounds[a], bounds[b]
        if all(end <= s or start >= e for s, e in spans):
            spans.append((start, end))
    return sorted(spans)


def choose_nodes(rng: random.Random, candidates: list[Span], n: int) -> list[Span]:
    """Up to `n` non-overlapping candidate spans, drawn uniformly; sorted by start."""
    spans: list[Span] = []
    order = rng.sample(range(len(candidates)), min(len(candidates), n * 10))
    for i in order:
        if len(spans) == n:
            break
        start, end = candidates[i]
        if all(end <= s or start >= e for s, e in spans):
            spans.append((start, end))
    return sorted(spans)


def choose_syntax_spans(rng: random.Random, text: str, n: int, k: int, kinds: dict[str, float]) -> list[Span]:
    """Syntax-aware spans of Python `text`, kind drawn by `kinds` weights; [] when none applies.

    `node` and `annotation` take `n` spans; `identifier` takes every occurrence of one name that
    occurs at most `k` times.
    """
    cand = syntax_candidates(text)
    names = [occ for occ in cand["identifier"] if len(occ) <= k]
    available = {"node": bool(cand["node"]), "identifier": bool(names), "annotation": bool(cand["annotation"])}
    weights = {kind: w for kind, w in kinds.items() if w > 0 and available[kind]}
    if not weights:
        return []
    kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    if kind == "identifier":
        return sorted(rng.choice(names))
    return choose_nodes(rng, cand[kind], n)
