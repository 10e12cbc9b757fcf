"""Fill every hole of a function at once: the language server's "Fill N holes in `name`" code action and
`infill fill FILE[:LINE]`.

The holes come from `lsp.holes` (tree-sitter, the one home of the patterns); the engine fills them in
one call (`Engine.stream_infill_holes`: jointly in InCoder's multi-mask format where the model has mask
tokens, else one at a time, left to right), so each fill sees the code after every hole. The result is
one edit per filled hole; a blank fill leaves its hole as written.

Rules:
- `fill_steps` is a pure feature function of (text, holes, engine): it yields between tokens (the
  language server's worker checks there whether the document changed, and drops the job when it did)
  and returns the changes and the engine's `HolesResult`.
- Each hole gets `max_tokens`; the time budget is for all the holes together.
- `infill fill FILE[:LINE]` fills the holes of the function or class around LINE (1-based), or every
  hole of the file without LINE, and prints the filled function (the whole file without LINE), or a
  unified diff with `--diff`. Errors are one line and exit status 2.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Generator
from pathlib import Path

from lsp import holes as hole_finder
from lsp import syntax

EXAMPLES = """examples:
  infill fill app.py:12            fill the holes of the function around line 12; print it filled
  infill fill app.py --diff        every hole of the file, as a unified diff (apply with `patch -p0`)
  infill fill app.rs:40 --model openai:http://127.0.0.1:8080   the same through a llama.cpp server
"""


def fill_steps(text: str, found: hole_finder.Holes, engine, *, max_tokens: int = 64,
               time_budget_s: float | None = None, ext: str | None = None
               ) -> Generator[None, None, tuple[list[tuple[int, int, str]], object]]:
    """Fill the holes of `found` in `text`: yields between tokens; returns ((start, end, new text) for
    every filled hole, the engine's HolesResult)."""
    from infill.engines import GenerationConfig

    config = GenerationConfig(max_tokens=max_tokens, time_budget_s=time_budget_s)
    result = yield from engine.stream_infill_holes(found.pieces(text), config,
                                                   written=[h.written for h in found.holes], ext=ext)
    return hole_finder.edits(found, result.texts), result


# the command line -----------------------------------------------------------------------------------

def register(sub) -> None:
    """Add `infill fill` (an `infill.commands` entry point)."""
    p = sub.add_parser("fill", help="fill every hole (..., TODO, todo!()) of a function at once",
                       description=__doc__.split("Rules:")[0] + "The hole patterns are listed in docs/lsp.md.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("location", metavar="FILE[:LINE]",
                   help="the file, and a 1-based line inside the function to fill (default: every hole of the file)")
    p.add_argument("--diff", action="store_true", help="print a unified diff instead of the filled code")
    p.add_argument("--model", help="checkpoint directory, Hugging Face model, or openai:URL "
                                   "(default: $INFILL_MODEL, then the built-in model)")
    p.add_argument("--template", help="FIM template of a Hugging Face model or server (default: detected)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens of each hole's fill (default 64)")
    p.set_defaults(func=run)


def _location(spec: str) -> tuple[Path, int | None]:
    from infill.text import UserError

    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        if int(tail) < 1:
            raise UserError(f"LINE is 1-based, got {tail}")
        return Path(head), int(tail)
    return Path(spec), None


def run(args) -> int:
    from infill.engines import CannotFill, load_engine, run_to_end
    from infill.text import UserError, read_source

    path, line = _location(args.location)
    text = read_source(path)
    language = syntax.language_of(path.as_uri() if path.is_absolute() else path.resolve().as_uri())
    if syntax.parser_for(language) is None:
        raise UserError(f"{path}: no grammar for this kind of file ({path.suffix or 'no extension'})")
    if line is not None:
        lines = text.split("\n")
        if line > len(lines):
            raise UserError(f"{path} has {len(lines)} lines, not {line}")
        at = sum(len(x) + 1 for x in lines[:line - 1]) + len(lines[line - 1]) - len(lines[line - 1].lstrip())
        found = hole_finder.find_holes(text, at, language=language)
    else:
        found = hole_finder.find_holes(text, 0, len(text), language=language)
    if found is None:
        where = f"the function or class around line {line}" if line is not None else "the file"
        raise UserError(f"{path}: no holes in {where} (patterns: docs/lsp.md)")
    if args.max_tokens < 1:
        raise UserError("--max-tokens must be at least 1")
    engine = load_engine(args.model, device=args.device, template=args.template)
    started = time.perf_counter()
    try:
        changes, result = run_to_end(fill_steps(text, found, engine, max_tokens=args.max_tokens,
                                                ext=path.suffix or None))
    except CannotFill as exc:
        raise UserError(str(exc)) from None
    new = hole_finder.apply(text, changes)
    print(f"infill: filled {len(changes)} of {len(found.holes)} holes in "
          f"{'`' + found.name + '`' if found.name else path} in {time.perf_counter() - started:.2f} s "
          f"({result.mode})", file=sys.stderr)
    if args.diff:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                                   f"{path}", f"{path}"))
        return 0
    if line is None:
        sys.stdout.write(new)
        return 0
    lo = text.rfind("\n", 0, found.start) + 1
    end = max(found.end, found.holes[-1].end) + sum(len(t) - (e - s) for s, e, t in changes)
    hi = end if new[end - 1:end] == "\n" else new.find("\n", end) + 1 or len(new)
    sys.stdout.write(new[lo:hi])
    return 0
