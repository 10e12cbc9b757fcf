"""Type and name prediction on held-out Python functions (InCoder's zero-shot infilling protocols).

Items come from the functions of held-out Python files, found with `ast`; each item is one hole in
the source of one function (the function alone is the document; other holes stay filled in).

- types: every return annotation and parameter annotation is one item. The annotation is removed
  (the hole sits right after `-> ` or `name: `), the model infills it, and the prediction is its
  text up to the first `:` (return) or `,` `)` `=` (parameter) outside brackets. Exact match after
  normalisation: both sides parsed and unparsed by `ast` (spacing and quotes no longer matter);
  a prediction that does not parse is wrong. InCoder-6.7B: 58.1% exact on return types.
- names: one item per function: the first parameter or assigned local name of 4+ characters (not
  `self`/`cls`, not dunder). Every occurrence is masked; the model fills the first occurrence (the
  hole), the others are replaced by `_` so they give the name away nowhere, and the prediction is the
  identifier the middle starts with. Top-1 exact match. InCoder-6.7B: 30.6%. (InCoder fills every
  occurrence as one multi-hole prompt; a single-hole engine interface cannot, hence the placeholder.)
- The default data is the Python standard library (fixed order; a model trained on it has seen it,
  so pass the data pipeline's held-out shards with `--data` to measure a trained model), without the
  third-party packages installed inside it (`site-packages`, `dist-packages` under the stdlib
  directory of a pyenv or source-built Python): those differ from machine to machine, and took 373
  of the 500 type items on one machine, so the figure measured what happened to be installed.
"""
from __future__ import annotations

import ast
import json
import re
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from infill.evaluate.documents import Document, iter_documents
from infill.text import cut_annotation, normalise

DEFAULT_LIMIT = 500
THIRD_PARTY = frozenset({"site-packages", "dist-packages"})
"""Directories of the standard library's tree that hold installed packages, not the standard library."""
MIN_NAME = 4
_IDENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Item:
    where: str
    kind: str
    """return, param or name."""
    prefix: str
    suffix: str
    target: str


def held_out_files(data: Path | None) -> Iterator[Document]:
    """Python documents of `data` (a directory or shards), else of the standard library."""
    if data is not None:
        return iter_documents(data, {"python"})
    return iter_documents(Path(sysconfig.get_paths()["stdlib"]), {"python"}, skip=THIRD_PARTY)


def _functions(doc: Document) -> Iterator[tuple[str, ast.AST, str]]:
    """(name, node with positions relative to the snippet, snippet source) for each function."""
    try:
        tree = ast.parse(doc.text)
    except (SyntaxError, ValueError, RecursionError):
        return
    lines = doc.text.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            snippet = "".join(lines[first - 1:node.end_lineno])
            try:
                sub = ast.parse(_dedent_safe(snippet))
            except SyntaxError:
                continue
            if sub.body and isinstance(sub.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{doc.path}:{node.lineno}:{node.name}", sub.body[0], _dedent_safe(snippet)


def _dedent_safe(snippet: str) -> str:
    """The snippet with the first line's indentation removed from every line that has it."""
    indent = snippet[:len(snippet) - len(snippet.lstrip(" \t"))]
    if not indent:
        return snippet
    return "".join(line[len(indent):] if line.startswith(indent) else line
                   for line in snippet.splitlines(keepends=True))


def _offsets(source: str) -> list[int]:
    """Character offset of each line start (ast columns are UTF-8 byte offsets within a line)."""
    starts, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _at(source: str, starts: list[int], lineno: int, col: int) -> int:
    line = source[starts[lineno - 1]:starts[lineno]] if lineno < len(starts) else source[starts[lineno - 1]:]
    return starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def type_items(doc: Document) -> Iterator[Item]:
    for where, fn, src in _functions(doc):
        starts = _offsets(src)
        slots = [("return", fn.returns)] + [("param", a.annotation) for a in
                                            fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
        for kind, ann in slots:
            if ann is None or ann.end_lineno is None:
                continue
            begin = _at(src, starts, ann.lineno, ann.col_offset)
            end = _at(src, starts, ann.end_lineno, ann.end_col_offset)
            yield Item(where, kind, src[:begin], src[end:], ast.unparse(ann))


def name_items(doc: Document) -> Iterator[Item]:
    for where, fn, src in _functions(doc):
        occurrences: dict[str, list[tuple[int, int]]] = {}
        starts = _offsets(src)
        for node in ast.walk(fn):
            if isinstance(node, ast.arg):
                name, line, col = node.arg, node.lineno, node.col_offset
            elif isinstance(node, ast.Name):
                name, line, col = node.id, node.lineno, node.col_offset
            else:
                continue
            occurrences.setdefault(name, []).append((line, col))
        assigned = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs] + [
            n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
        chosen = next((n for n in assigned if len(n) >= MIN_NAME and n not in ("self", "cls")
                       and not n.startswith("__")), None)
        if chosen is None:
            continue
        spans = sorted(_at(src, starts, line, col) for line, col in occurrences[chosen])
        pieces, last = [], 0
        for s in spans:
            pieces.append(src[last:s])
            last = s + len(chosen)
        pieces.append(src[last:])
        yield Item(where, "name", pieces[0], "_".join(pieces[1:]), chosen)


def predicted(item: Item, middle: str) -> str | None:
    if item.kind == "name":
        m = _IDENT.match(middle)
        return m.group(1) if m else None
    return normalise(cut_annotation(middle, ":" if item.kind == "return" else ",)="))


def _run(engine, items: Iterator[Item], out_dir: Path, name: str, limit: int | None, progress: bool,
         cache: bool = False) -> dict:
    from tqdm import tqdm

    from infill.engines import CacheConfig, GenerationConfig, InfillRequest

    started = time.monotonic()
    limit = DEFAULT_LIMIT if limit is None else limit
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, list[int]] = {}
    bar = tqdm(total=limit, desc=name, unit="item", file=sys.stderr, disable=not progress)
    with open(out_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for n, item in enumerate(items):
            if n >= limit:
                break
            req = InfillRequest(item.prefix, item.suffix, GenerationConfig(max_tokens=24), stop=("\n",), ext=".py",
                                cache=CacheConfig() if cache else None)
            middle = engine.infill(req).text
            guess = predicted(item, middle)
            right = guess is not None and guess == (item.target if item.kind == "name" else normalise(item.target))
            counts.setdefault(item.kind, [0, 0])
            counts[item.kind][0] += right
            counts[item.kind][1] += 1
            row = {k: v for k, v in asdict(item).items() if k not in ("prefix", "suffix")}
            f.write(json.dumps({**row, "middle": middle, "prediction": guess, "exact": right}) + "\n")
            bar.update(1)
    bar.close()
    if not counts:
        raise ValueError("no items found in the data")
    right, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    summary = {"eval": name, "model": engine.name, "engine": type(engine).__name__, "cache": cache,
               "exact": round(right / total, 6),
               "items": total, **{f"exact_{k}": round(c[0] / c[1], 6) for k, c in sorted(counts.items())},
               **{f"items_{k}": c[1] for k, c in sorted(counts.items())},
               "seconds": round(time.monotonic() - started, 1)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_types(engine, docs, out_dir: Path, *, limit: int | None = None, progress: bool = True,
                   cache: bool = False) -> dict:
    """Exact match of infilled return and parameter annotations; summary keys exact, exact_return, exact_param.
    `cache`: the cache model over the item's document mixed in."""
    return _run(engine, (i for d in docs for i in type_items(d)), out_dir, "types", limit, progress, cache)


def evaluate_names(engine, docs, out_dir: Path, *, limit: int | None = None, progress: bool = True,
                   cache: bool = False) -> dict:
    """Top-1 exact match of infilled variable names; summary key exact. `cache`: the cache model mixed in."""
    return _run(engine, (i for d in docs for i in name_items(d)), out_dir, "names", limit, progress, cache)
