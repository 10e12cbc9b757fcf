"""`infill demo`: the three editor features on one file, in the terminal.

    infill demo [FILE:LINE:COL] [--model DIR] [--name-at LINE:COL]

1. The completion at FILE:LINE:COL (default `examples/demo.py:7:16`, the README's example): the lines
   around the hole, then the same lines with the completion in, cut where the language server cuts
   it (the rest of the line mid-line, a block body after an opener, ...).
2. One inferred type: every unannotated slot of the file is inferred (as the language server's inlay
   hints are), and the most probable one is shown with its probability.
3. Suggested names for one variable: the one at `--name-at`, else the file's first function-local
   variable with a one- or two-character name (see `pick_variable`), ranked as the server's rename
   offers them.

The language server's own functions do the work (`lsp.types`, `lsp.names`), so what the demo prints is
what an editor shows. Registered as an `infill` subcommand through the `infill.commands` entry points.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_LOCATION = "examples/demo.py:7:16"
HOLE = "\u27e8hole\u27e9"
CONTEXT_LINES = 3


def register(sub) -> None:
    p = sub.add_parser("demo", help="completion, an inferred type and suggested names on one file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("location", nargs="?", default=DEFAULT_LOCATION, metavar="FILE:LINE:COL",
                   help=f"the hole, 1-based (default {DEFAULT_LOCATION})")
    p.add_argument("--model", help="infill checkpoint directory (default: $INFILL_MODEL, then the built-in model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens of the completion (default 64)")
    p.add_argument("--name-at", metavar="LINE:COL", help="the variable to suggest names for (1-based)")
    p.set_defaults(func=run)


def _numbered(lines: list[str], first: int) -> str:
    return "".join(f"{first + i:5} | {line}\n" for i, line in enumerate(lines))


def _window(text: str, line: int) -> tuple[list[str], int]:
    lines = text.split("\n")
    lo = max(1, line - CONTEXT_LINES)
    hi = min(len(lines), line + CONTEXT_LINES)
    return lines[lo - 1:hi], lo


def _offset_of(text: str, spec: str) -> int:
    from infill.text import UserError, split_at

    parts = spec.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise UserError(f"--name-at wants LINE:COL with 1-based numbers, got {spec!r}")
    return len(split_at(text, int(parts[0]), int(parts[1]))[0])


def _line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def pick_variable(text: str):
    """A variable worth renaming: the first local variable of a function with a one- or two-character
    name, else the first local variable, else the first variable of the file; None when there is none."""
    from lsp import scopes

    symbols = []
    for occ in scopes.analyse(text):
        symbol = scopes.symbol_at(text, occ.start)
        if symbol is not None and symbol.spans[0] == (occ.start, occ.end):
            symbols.append(symbol)
    local = [s for s in symbols if s.scope.kind in ("function", "lambda")]
    return next((s for s in local if len(s.name) <= 2), None) or next(iter(local or symbols), None)


def run(args) -> int:
    from infill.text import UserError, parse_location, read_source, split_at
    from infill.engines import load_engine
    from lsp import names, scopes, syntax, types
    from lsp.completion import complete
    from lsp.options import ServerOptions

    path, line, col = parse_location(args.location)
    text = read_source(path)
    if args.max_tokens < 1:
        raise UserError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    prefix, suffix = split_at(text, line, col)
    name_offset = _offset_of(text, args.name_at) if args.name_at else None
    engine = load_engine(args.model, device=args.device)
    out = sys.stdout

    out.write(f"{path}:{line}:{col} with the model {engine.name} on {engine.device}\n\n")
    window, first = _window(prefix + HOLE + suffix, line)
    out.write("the hole:\n" + _numbered(window, first))
    # what an editor shows: the server's own rules (the rest of the line mid-line, a block body
    # after an opener, ...), see lsp/completion.py
    edit, result = complete(text, len(prefix), engine, ServerOptions(max_tokens=args.max_tokens),
                            language=syntax.language_of(path.resolve().as_uri()), ext=path.suffix or None)
    start, end, middle = (edit.start, edit.end, edit.text) if edit is not None else (len(prefix), len(prefix), "")
    tokens = result.candidates[0].tokens if result.candidates else 0
    filled = text[:start] + middle + text[end:]
    window, first = _window(filled, line)
    last = min(first + len(window) - 1, line + middle.count("\n") + CONTEXT_LINES)
    out.write(f"\ninfilled ({tokens} tokens, {result.latency_ms:.0f} ms): {middle!r}\n")
    out.write(_numbered(filled.split("\n")[first - 1:last], first))

    if path.suffix not in (".py", ".pyi"):
        out.write("\ntypes and names are inferred for Python files only\n")
        return 0

    if (why := types.unavailable(engine) or names.unavailable(engine)) is not None:
        out.write(f"\ntypes and names are off for {engine.name}: {why}\n")
        return 0
    slots = types.type_slots(text)
    inferred = [(slot, types.infer(text, slot, engine)) for slot in slots]
    inferred = [(slot, t) for slot, t in inferred if t is not None]
    if inferred:
        slot, t = max(inferred, key=lambda pair: pair[1].probability)
        at_line, _ = _line_col(text, slot.at)
        shown = f"{slot.name}{types.hint_label(slot, t)}" if slot.kind == "param" else \
            f"def {slot.name}(...){types.hint_label(slot, t)}"
        out.write(f"\ninferred type (line {at_line}, the most probable of {len(slots)} slots): "
                  f"{shown}   p = {t.probability:.2f}\n")
    else:
        out.write(f"\ninferred type: none of the {len(slots)} unannotated slots gave a type that parses\n")

    symbol = scopes.symbol_at(text, name_offset) if name_offset is not None else pick_variable(text)
    if symbol is None:
        out.write("\nsuggested names: no variable " + ("at --name-at" if name_offset is not None else "in the file")
                  + "\n")
        return 0
    at_line, at_col = _line_col(text, symbol.spans[0][0])
    suggestions = names.suggest(text, symbol.spans[0][0], engine, k=3)
    listed = ", ".join(f"{s.name} ({s.logprob:.2f})" for s in suggestions) or "none (no sample was a new valid name)"
    out.write(f"\nsuggested names for '{symbol.name}' (line {at_line}:{at_col}, {len(symbol.spans)} occurrences), "
              f"with log-likelihoods: {listed}\n")
    return 0
