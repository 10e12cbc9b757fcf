"""`infill eval rest-of-line`: exact match of the rest of a line, asked as an editor asks, beside a copy baseline.

    infill eval rest-of-line --out runs/rol [--model DIR] [--package NAME | --data DIR] [-n 400] [--seed 0]
                             [--variants mix,model,cache] [--workspace open|none]

Items are lines of real package code that no corpus holds: by default the files of the held-out
package (`infill.corpus.HELD_OUT_PACKAGES`, which `infill data build` drops), else those of
`--package` (a tuning package) or the Python files of `--data`. The language server's own completion
(`lsp.completion.complete`, with its plan, stop rule and cut, and with the server's repository context
and cache sources, `lsp.context.completion_context`) produces each variant's figure, so the figure is
what an editor shows.

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
- The file-then-package copy baseline: the copy baseline, and where the file has no matching line,
  the same rule over the package's other files together.
- Variants (`--variants`, the first is the headline `exact`): mix (the model and the cache model, the
  server's default), model (the model alone), cache (the cache model alone).
- Workspace (`--workspace`): open, the package's directory is the server's workspace and the item's
  document its one open document (the file on disk, which holds the answer, is never a source: the
  open document replaces it; the ring of recent chunks starts empty for each item); none, the file
  alone, as an editor opened on one file.
- Counts are reported by kind (whole-line, mid-line) and apart for expected texts of at most 2
  characters (`:`, `)`, `,`), where a model scores on punctuation alone.
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
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_N = 400
EXAMPLES = """examples:
  infill eval rest-of-line --out runs/rol                    the built-in model, 400 items of the held-out package
  infill eval rest-of-line --package attrs --out runs/tune   the tuning package (never report on it)
  infill eval rest-of-line --workspace none --variants mix,model --out runs/alone   each file alone
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


def _copy_from(lines: list[str], head: str, skip: int = -1) -> Counter[str]:
    blank = not head.strip()
    counts: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if i == skip or len(line) <= len(head) or not line.startswith(head):
            continue
        if blank and line[len(head)].isspace():
            continue
        counts[line] += 1  # Counter keeps first-seen order, so most_common breaks ties by first occurrence
    return counts


def copy_baseline(text: str, item: Item, others: Iterable[str] = ()) -> str:
    """The copy baseline's prediction for `item` in the file `text` (the rule is in the module
    docstring); with `others` (the package's other files, in order), the file-then-package baseline:
    where the file has no matching line, the most common one of the other files."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    head = lines[item.line - 1][:item.col]
    counts = _copy_from(lines, head, item.line - 1)
    if not counts:
        counts = Counter()
        for other in others:
            counts.update(_copy_from([ln.rstrip() for ln in other.split("\n")], head))
    return counts.most_common(1)[0][0][len(head):] if counts else ""


VARIANTS = ("mix", "model", "cache")
"""mix: the model and the cache model mixed (the server's default); model: the model alone; cache:
the cache model alone (`infill.cache.CacheConfig.mode`)."""


def _variant_options(options, variant: str, cache):
    """(server options, cache settings) of a variant; `cache` is the mixture's `CacheConfig` or None
    for the defaults."""
    from dataclasses import replace as _replace

    from infill.cache import CacheConfig

    if variant == "model":
        return _replace(options, cache=False), None
    return _replace(options, cache=True), _replace(cache or CacheConfig(), mode="cache" if variant == "cache" else "mix")


def cache_config(text: str | None):
    """A `CacheConfig` from `key=value,key=value` (`--cache-config`), or None for the defaults."""
    from dataclasses import fields

    from infill.cache import CacheConfig

    if not text:
        return None
    kinds = {f.name: f.type for f in fields(CacheConfig)}
    values: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in kinds or key == "mode" or not value:
            raise ValueError(f"--cache-config takes key=value pairs of {', '.join(k for k in kinds if k != 'mode')}, "
                             f"got {part!r}")
        try:
            values[key] = int(value) if kinds[key] == "int" else float(value)
        except ValueError:
            raise ValueError(f"--cache-config {key} must be a number, got {value!r}") from None
    return CacheConfig(**values)


def predict(text: str, item: Item, engine, options, language: str = "python", *, context: dict | None = None,
            cache=None) -> tuple[str, dict]:
    """The model's prediction for `item` through the language server's completion (with the server's
    repository `context` arguments, `lsp.context.completion_context`), and what the engine said."""
    from lsp.completion import complete

    document, offset = document_of(text, item)
    edit, result = complete(document, offset, engine, options, language=language, ext=Path(item.path).suffix or None,
                            cache=cache, **(context or {}))
    best = result.candidates[0] if result.candidates else None
    info = {"tokens": best.tokens if best else 0, "finish_reason": best.finish_reason if best else None,
            "latency_ms": round(result.latency_ms, 1), "edit": edit.text if edit is not None else None,
            "cache": bool(result.extra.get("cache"))}
    return ("" if edit is None else edit.text.split("\n", 1)[0].rstrip()), info


def package_dir(name: str | None = None) -> tuple[Path, str]:
    """The installed directory of distribution `name` (default: the held-out package), and its name
    and version."""
    import importlib.metadata

    from infill.corpus import HELD_OUT_PACKAGES

    name = name or HELD_OUT_PACKAGES[0]
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"the package {name} is not installed; pip install {name}, or pass --data DIR") from None
    tops = sorted({str(f).split("/", 1)[0] for f in dist.files or () if str(f).endswith(".py") and "/" in str(f)})
    tops = [t for t in tops if not t.endswith((".dist-info", ".data"))] or tops
    if not tops:
        raise ValueError(f"the package {name} has no Python package directory; pass --data DIR")
    return Path(str(dist.locate_file(tops[0]))), f"{dist.metadata['Name']} {dist.version}"


def held_out_package_dir() -> tuple[Path, str]:
    """The installed directory of the held-out package, and its name and version."""
    return package_dir(None)


class _Workspace:
    """The server's repository context over `root`, the package open as the workspace; each item's
    document is open (and only it) while it is completed."""

    def __init__(self, root: Path | None):
        from lsp.context import RepositoryContext

        self.root = root.resolve() if root is not None else None
        self.repo = RepositoryContext()
        if self.root is not None:
            self.repo.start([self.root]).join()

    def context(self, path: str, document: str, line: int, options) -> dict:
        from lsp.context import completion_context

        if self.root is None:
            return {}
        from lsp.context import RecentChunks

        uri = (self.root / path).as_uri()
        self.repo.recent = RecentChunks()  # no chunk of an earlier item's document (it holds this line)
        self.repo.opened(uri, document, line)
        try:
            return completion_context(self.repo, uri, document, line - 1, options)
        finally:
            self.repo.closed(uri)


def _split_counts(rows: list[dict], key: str) -> dict:
    """Exact matches of predictions `key` in rows: whole-line, mid-line, total, and expected texts of at
    most 2 characters against longer ones."""
    out = Counter()
    for r in rows:
        hit = r[key] == r["expected"]
        out[r["kind"]] += hit
        out["total"] += hit
        out["short" if len(r["expected"]) <= SHORT else "long"] += hit
    return {k: out[k] for k in ("whole-line", "mid-line", "total", "short", "long")}


SHORT = 2
"""Expected texts of at most this many characters (`:`, `)`, `,`) are counted apart."""


def evaluate(engine, files: list[tuple[str, str]], out_dir: Path, *, n: int = DEFAULT_N, seed: int = 0,
             options=None, data: str = "", progress: bool = True, variants: tuple[str, ...] = VARIANTS,
             workspace: Path | None = None, cache=None) -> dict:
    """Score each variant (`VARIANTS`, the first is the headline) and the copy baselines on `n` items;
    write `items.jsonl` and `summary.json`. `workspace`: the package's directory, open as the server's
    workspace (repository context and cache sources); None: each file alone."""
    from tqdm import tqdm

    from lsp.options import ServerOptions

    options = options or ServerOptions(time_budget_ms=60_000)
    started = time.monotonic()
    items = items_of(files, n, seed)
    texts = dict(files)
    ws = _Workspace(workspace)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    finishes: Counter[str] = Counter()
    latency: dict[str, list[float]] = {v: [] for v in variants}
    with open(out_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for item in tqdm(items, desc="rest-of-line", unit="item", file=sys.stderr, disable=not progress):
            text = texts[item.path]
            others = [t for p, t in files if p != item.path]
            row = {**asdict(item), "cursor_line": text.split("\n")[item.line - 1][:item.col]}
            for k, variant in enumerate(variants):
                opts, settings = _variant_options(options, variant, cache)
                document, _ = document_of(text, item)
                context = ws.context(item.path, document, item.line, opts)
                pred, info = predict(text, item, engine, opts, context=context, cache=settings)
                latency[variant].append(info["latency_ms"])
                row[f"pred_{variant}"] = pred
                if k == 0:
                    finishes[str(info["finish_reason"])] += 1
                    row.update(model=pred, model_exact=pred == item.expected, **info)
            row["copy"] = copy_baseline(text, item)
            row["copy_exact"] = row["copy"] == item.expected
            row["copy_package"] = copy_baseline(text, item, others)
            rows.append(row)
            f.write(json.dumps(row) + "\n")
    total = len(rows)
    kinds = Counter(r["kind"] for r in rows)
    head = _split_counts(rows, "model")
    copy, copy_pkg = _split_counts(rows, "copy"), _split_counts(rows, "copy_package")
    summary = {"eval": "rest-of-line", "model": engine.name, "engine": type(engine).__name__, "data": data,
               "workspace": "open" if workspace is not None else "none", "variant": variants[0],
               "items": total, "seed": seed, "exact": round(head["total"] / total, 6), "exact_count": head["total"],
               "copy_exact": round(copy["total"] / total, 6), "copy_exact_count": copy["total"],
               "baselines": {"copy baseline (most common matching line of the file)": round(copy["total"] / total, 6),
                             "copy baseline (the file, else the package)": round(copy_pkg["total"] / total, 6)},
               **{f"items_{k}": v for k, v in sorted(kinds.items())},
               "items_short": sum(len(r["expected"]) <= SHORT for r in rows),
               "items_long": sum(len(r["expected"]) > SHORT for r in rows),
               **{f"exact_{k}": head[k] for k in sorted(kinds)},
               **{f"copy_exact_{k}": copy[k] for k in sorted(kinds)},
               "variants": {v: {**_split_counts(rows, f"pred_{v}"),
                                "mean_ms": round(sum(latency[v]) / max(len(latency[v]), 1), 1)} for v in variants},
               "copy_same_file": copy, "copy_file_then_package": copy_pkg,
               "cache_config": asdict(cache) if cache is not None else "default",
               "finish_reasons": dict(sorted(finishes.items())),
               "options": {"max_tokens": options.max_tokens, "temperature": options.temperature,
                           "time_budget_ms": options.time_budget_ms},
               "seconds": round(time.monotonic() - started, 1)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(summary: dict) -> str:
    """The summary as the table docs/eval.md quotes: whole / mid / total, and short / long items."""
    lines = [f"{summary['data']}, {summary['items']} items ({summary['items_whole-line']} whole-line, "
             f"{summary['items_mid-line']} mid-line; {summary['items_short']} of at most {SHORT} characters), "
             f"workspace {summary['workspace']}",
             "| variant | whole / mid / total | <= 2 chars / longer | mean ms |", "|---|---|---|---|"]
    rows = [("copy (same file)", summary["copy_same_file"], None),
            ("copy (file, else package)", summary["copy_file_then_package"], None)]
    rows += [(v, c, c["mean_ms"]) for v, c in summary["variants"].items()]
    for name, c, ms in rows:
        lines.append(f"| {name} | {c['whole-line']} / {c['mid-line']} / {c['total']} | {c['short']} / {c['long']} | "
                     f"{'' if ms is None else ms} |")
    return "\n".join(lines)


def run(args) -> int:
    from infill.engines import load_engine
    from infill.evaluate.documents import iter_documents
    from lsp.options import ServerOptions

    try:
        options = ServerOptions(max_tokens=args.max_tokens, time_budget_ms=args.time_budget_ms)
    except ValueError as exc:
        message = str(exc).replace("maxTokens", "--max-tokens").replace("timeBudgetMs", "--time-budget-ms")
        raise ValueError(message) from None
    variants = tuple(dict.fromkeys(v.strip() for v in args.variants.split(",") if v.strip()))
    if not variants or any(v not in VARIANTS for v in variants):
        raise ValueError(f"--variants must be a comma-separated list of {', '.join(VARIANTS)}, got {args.variants!r}")
    cache = cache_config(args.cache_config)
    if args.data:
        root, data = Path(args.data), args.data
    else:
        root, data = package_dir(args.package)
    files = [(doc.path, doc.text) for doc in iter_documents(root, {"python"})]
    items_of(files, args.n, args.seed)  # bad -n or too few lines: say so before loading a model
    engine = load_engine(args.model, device=args.device, template=args.template)
    summary = evaluate(engine, files, Path(args.out), n=args.n, seed=args.seed, options=options, data=data,
                       progress=not args.quiet, variants=variants,
                       workspace=root if args.workspace == "open" else None, cache=cache)
    print(table(summary), file=sys.stderr)
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
    p.add_argument("--package", default=None,
                   help="an installed distribution to read instead of the held-out package (a tuning package, "
                        "e.g. attrs; never report figures on the package you tune on)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="what completes, comma-separated, the first is the headline: mix (model and cache "
                        "model, the server's default), model (alone), cache (the cache model alone); "
                        f"default {','.join(VARIANTS)}")
    p.add_argument("--cache-config", default=None,
                   help="the cache model's settings for tuning, key=value,... of infill.cache.CacheConfig (order, "
                        "far_weight, weight, min_match, heal_top, limit_mb); default: its defaults")
    p.add_argument("--workspace", choices=("open", "none"), default="open",
                   help="open: the package's directory is the server's workspace (repository context and the "
                        "cache's sources); none: each file alone, as an editor opened on one file (default open)")
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
