"""`infill eval rest-of-line`: exact match of the rest of a line, asked as an editor asks, beside a copy baseline.

    infill eval rest-of-line --out runs/rol [--model DIR] [--data DIR] [-n 80] [--seed 0]

Items are lines of real package code that no corpus holds: by default the files of the held-out
package (`infill.corpus.HELD_OUT_PACKAGES`, which `infill data build` drops), else the Python files
of `--data`. The language server's own completion (`lsp.completion.complete`, with its plan, stop
rule and cut) produces the model's figure, so the figure is what an editor shows.

Rules:
- A candidate line is a line of a file that Python's `tokenize` reads whole, on which at least one
  token starts that is not a comment, and whose first token is not a string running on past the line
  (docstring text and comments are not code to complete).
- A whole-line item puts the cursor at the line's indentation; a mid-line item at the start of a token
  of the line other than its first (a token boundary), chosen by the seeded generator. The expected
  text is the rest of the line from the cursor, trailing blanks dropped.
- The document the model sees is the file with the rest of that line removed: the cursor line ends
  at the cursor, every other line is intact.
- Sampling: `n // 2` whole-line and `n - n // 2` mid-line items, on distinct lines, drawn by
  `random.Random(seed)` from the candidates in file order, so the same files, n and seed give the
  same items. Fewer candidates than asked is a one-line error.
- The model's prediction is the first line of the edit the server returns (a block body offered on
  a blank line below an opener counts by its first line), trailing blanks dropped; no edit is "".
  Exact match is string equality with the expected text.
- The copy baseline: let P be the cursor line before the cursor. Among the other lines of the same
  file (trailing blanks dropped; the item's own line excluded, other lines equal to it included) that
  start with P, are longer than P, and, when P is blank, have exactly P as their indentation, take the
  most frequent text, ties to the one that occurs first in the file; its text after P is the
  prediction. No such line: "". It needs no model, and is what a model must beat.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
import tokenize
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_N = 80
EXAMPLES = """examples:
  infill eval rest-of-line --out runs/rol                    the built-in model, 80 items of the held-out package
  infill eval rest-of-line --model ckpt/ -n 200 --seed 1 --out runs/rol-200
  infill eval rest-of-line --data src/ --out runs/mine       lines of your own Python files
  infill eval report runs/rol --out report/                  the model beside the copy baseline
"""
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


@dataclass(frozen=True)
class Item:
    path: str
    line: int
    """1-based line number in the file."""
    col: int
    """The cursor's column (characters) in the line."""
    kind: str
    """"whole-line" or "mid-line"."""
    expected: str


def token_starts(text: str) -> dict[int, list[int]] | None:
    """Columns where code tokens start, by 0-based line index, for the candidate lines of `text`
    (see the module rules); None when `tokenize` cannot read the file."""
    starts: dict[int, list[int]] = {}
    excluded: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in _SKIP:
                continue
            row = tok.start[0] - 1
            if row not in starts and tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                excluded.add(row)
            starts.setdefault(row, []).append(tok.start[1])
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    return {row: cols for row, cols in starts.items() if row not in excluded}


def items_of(files: list[tuple[str, str]], n: int = DEFAULT_N, seed: int = 0) -> list[Item]:
    """`n` items over `files` ((path, text) pairs, in a fixed order), half whole-line, half mid-line."""
    if n < 2:
        raise ValueError(f"-n must be at least 2 (half whole-line, half mid-line items), got {n}")
    whole, mid = [], []
    for path, text in files:
        starts = token_starts(text)
        if not starts:
            continue
        lines = text.split("\n")
        for row in sorted(starts):
            line = lines[row].rstrip()
            indent = len(line) - len(line.lstrip())
            cols = [c for c in starts[row] if indent < c < len(line)]
            whole.append((path, row, indent, line))
            if cols:
                mid.append((path, row, cols, line))
    n_whole, n_mid = n // 2, n - n // 2
    if len(mid) < n_mid or len(whole) < n:
        raise ValueError(f"only {len(whole)} code lines ({len(mid)} with a token boundary) in the files: "
                         f"too few for {n} items")
    rng = random.Random(seed)
    items = []
    for path, row, cols, line in rng.sample(mid, n_mid):
        col = rng.choice(cols)
        items.append(Item(path, row + 1, col, "mid-line", line[col:]))
    taken = {(it.path, it.line - 1) for it in items}
    pool = [w for w in whole if (w[0], w[1]) not in taken]
    for path, row, indent, line in rng.sample(pool, n_whole):
        items.append(Item(path, row + 1, indent, "whole-line", line[indent:]))
    return sorted(items, key=lambda it: (it.path, it.line))


def document_of(text: str, item: Item) -> tuple[str, int]:
    """(the document the model sees, the cursor offset): the file with the rest of the item's line removed."""
    lines = text.split("\n")
    start = sum(len(ln) + 1 for ln in lines[:item.line - 1])
    line = lines[item.line - 1]
    end = start + len(line) - (1 if line.endswith("\r") else 0)
    return text[:start + item.col] + text[end:], start + item.col


def copy_baseline(text: str, item: Item) -> str:
    """The copy baseline's prediction for `item` in the file `text` (the rule is in the module docstring)."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    head = lines[item.line - 1][:item.col]
    blank = not head.strip()
    counts: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if i == item.line - 1 or len(line) <= len(head) or not line.startswith(head):
            continue
        if blank and line[len(head)].isspace():
            continue
        counts[line] += 1  # Counter keeps first-seen order, so most_common breaks ties by first occurrence
    return counts.most_common(1)[0][0][len(head):] if counts else ""


def predict(text: str, item: Item, engine, options, language: str = "python") -> tuple[str, dict]:
    """The model's prediction for `item` through the language server's completion, and what the engine said."""
    from lsp.completion import complete

    document, offset = document_of(text, item)
    edit, result = complete(document, offset, engine, options, language=language, ext=Path(item.path).suffix or None)
    best = result.candidates[0] if result.candidates else None
    info = {"tokens": best.tokens if best else 0, "finish_reason": best.finish_reason if best else None,
            "latency_ms": round(result.latency_ms, 1), "edit": edit.text if edit is not None else None}
    return ("" if edit is None else edit.text.split("\n", 1)[0].rstrip()), info


def held_out_package_dir() -> tuple[Path, str]:
    """The installed directory of the held-out package, and its name and version."""
    import importlib.metadata

    from infill.corpus import HELD_OUT_PACKAGES

    name = HELD_OUT_PACKAGES[0]
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"the held-out package {name} is not installed; pip install {name}, "
                         "or pass --data DIR") from None
    tops = sorted({str(f).split("/", 1)[0] for f in dist.files or () if str(f).endswith(".py") and "/" in str(f)})
    if not tops:
        raise ValueError(f"the held-out package {name} has no Python package directory; pass --data DIR")
    return Path(str(dist.locate_file(tops[0]))), f"{name} {dist.version}"


def evaluate(engine, files: list[tuple[str, str]], out_dir: Path, *, n: int = DEFAULT_N, seed: int = 0,
             options=None, data: str = "", progress: bool = True) -> dict:
    """Score the model and the copy baseline on `n` items; write `items.jsonl` and `summary.json`."""
    from tqdm import tqdm

    from lsp.options import ServerOptions

    options = options or ServerOptions(time_budget_ms=60_000)
    started = time.monotonic()
    items = items_of(files, n, seed)
    texts = dict(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    right: dict[str, Counter] = {"model": Counter(), "copy": Counter()}
    kinds: Counter[str] = Counter()
    finishes: Counter[str] = Counter()
    with open(out_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for item in tqdm(items, desc="rest-of-line", unit="item", file=sys.stderr, disable=not progress):
            text = texts[item.path]
            model, info = predict(text, item, engine, options)
            copy = copy_baseline(text, item)
            kinds[item.kind] += 1
            finishes[str(info["finish_reason"])] += 1
            right["model"][item.kind] += model == item.expected
            right["copy"][item.kind] += copy == item.expected
            f.write(json.dumps({**asdict(item), "cursor_line": text.split("\n")[item.line - 1][:item.col],
                                "model": model, "model_exact": model == item.expected, "copy": copy,
                                "copy_exact": copy == item.expected, **info}) + "\n")
    total = sum(kinds.values())
    model_right, copy_right = sum(right["model"].values()), sum(right["copy"].values())
    summary = {"eval": "rest-of-line", "model": engine.name, "engine": type(engine).__name__, "data": data,
               "items": total, "seed": seed, "exact": round(model_right / total, 6), "exact_count": model_right,
               "copy_exact": round(copy_right / total, 6), "copy_exact_count": copy_right,
               "baselines": {"copy baseline (most common matching line of the file)": round(copy_right / total, 6)},
               **{f"items_{k}": v for k, v in sorted(kinds.items())},
               **{f"exact_{k}": right["model"][k] for k in sorted(kinds)},
               **{f"copy_exact_{k}": right["copy"][k] for k in sorted(kinds)},
               "finish_reasons": dict(sorted(finishes.items())),
               "options": {"max_tokens": options.max_tokens, "temperature": options.temperature,
                           "time_budget_ms": options.time_budget_ms},
               "seconds": round(time.monotonic() - started, 1)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args) -> int:
    from infill.engines import load_engine
    from infill.evaluate.documents import iter_documents
    from lsp.options import ServerOptions

    try:
        options = ServerOptions(max_tokens=args.max_tokens, time_budget_ms=args.time_budget_ms)
    except ValueError as exc:
        message = str(exc).replace("maxTokens", "--max-tokens").replace("timeBudgetMs", "--time-budget-ms")
        raise ValueError(message) from None
    if args.data:
        root, data = Path(args.data), args.data
    else:
        root, data = held_out_package_dir()
    files = [(doc.path, doc.text) for doc in iter_documents(root, {"python"})]
    items_of(files, args.n, args.seed)  # bad -n or too few lines: say so before loading a model
    engine = load_engine(args.model, device=args.device, template=args.template)
    summary = evaluate(engine, files, Path(args.out), n=args.n, seed=args.seed, options=options, data=data,
                       progress=not args.quiet)
    print(json.dumps(summary, sort_keys=True))
    return 0


def register(sub) -> None:
    """Add `rest-of-line` to the `infill eval` subcommands (an `infill.commands` entry point named eval.*)."""
    p = sub.add_parser("rest-of-line", help="exact match of the rest of a line through the language server, "
                                            "beside a copy baseline", description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="infill checkpoint dir, Hugging Face dir or cached hub name, or openai:URL "
                                   "(default: $INFILL_MODEL, then the built-in model)")
    p.add_argument("--template", help="FIM template of a Hugging Face model or server (default: detected)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", required=True, help="output directory (summary.json, items.jsonl)")
    p.add_argument("--data", default=None, help="a directory of Python files (default: the installed held-out "
                                                "package, which no corpus holds)")
    p.add_argument("-n", type=int, default=DEFAULT_N,
                   help=f"items, half whole-line, half mid-line (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0, help="seed of the item sampling (default 0)")
    p.add_argument("--max-tokens", type=int, default=64,
                   help="token budget of one completion (default 64, the server's)")
    p.add_argument("--time-budget-ms", type=float, default=60_000,
                   help="time budget of one completion (default 60000, so a loaded machine does not change the "
                        "figure; an editor's default is 2000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
