"""How long a big didChange takes to apply (lsp/documents.py), against pygls' own, in the same run.

Scenario (issue 28): Replace All of 1,000 matches in a 500 KB one-line file, sent as VS Code sends
it (one didChange, last match first), in UTF-16 and with a non-ASCII replacement; then the same
1,000 ranges top to bottom, 200,000 one-character inserts, and 2,000 inserts in random order (the
slow path: one pass over the document per edit).

Reference, same run: pygls 2.1.1's `TextDocument.apply_change` on the first `--reference-ranges`
ranges of the Replace All (all 1,000 would take minutes), scaled to 1,000 (its cost per range grows
with the column, and the first ranges are the last matches: the scale is a fair estimate, not a
bound). `speedup` = pygls' estimated time for 1,000 / ours. Goal: replace_all_ms <= 100.

    python bench/documents.py [--json] [--repeats 5] [--reference-ranges 10]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import time

from lsprotocol import types

from lsp.documents import apply_changes

GOALS = {"replace_all_ms": 100.0}


def _change(line: int, start: int, end: int, text: str) -> types.TextDocumentContentChangePartial:
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(line, start), types.Position(line, end)), text=text)


def _best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-ranges", type=int, default=10)
    args = parser.parse_args()
    from pygls.workspace.text_document import TextDocument

    line = "data = [" + ", ".join(["abc"] * 100_000) + "]; data"
    starts = [m.start() for m in re.finditer("abc", line)][::100]
    down = [_change(0, s, s + 3, "value_é") for s in reversed(starts)]
    up = [_change(0, s + k * 4, s + k * 4 + 3, "value_é") for k, s in enumerate(starts)]
    assert apply_changes(line, down) == apply_changes(line, up)
    inserts = [_change(0, c, c, " ") for c in reversed(range(9, 9 + 400_000, 2))]
    rng = random.Random(0)
    scattered = [_change(0, p, p, "y") for p in (rng.randint(0, len(line)) for _ in range(2000))]

    results = {
        "load_1min_start": os.getloadavg()[0],
        "document_kb": len(line) // 1000,
        "replace_all_ms": _best_ms(lambda: apply_changes(line, down), args.repeats),
        "replace_all_top_down_ms": _best_ms(lambda: apply_changes(line, up), args.repeats),
        "inserts_200k_ms": _best_ms(lambda: apply_changes(line, inserts), 1),
        "random_2000_ms": _best_ms(lambda: apply_changes(line, scattered), 1),
    }
    k = args.reference_ranges
    doc = TextDocument("file:///bench.py", line)
    started = time.perf_counter()
    for c in down[:k]:
        doc.apply_change(c)
    per_range = (time.perf_counter() - started) * 1000 / k
    results["pygls_ms_per_range"] = per_range
    results["pygls_replace_all_ms_estimated"] = per_range * len(down)
    results["speedup"] = results["pygls_replace_all_ms_estimated"] / results["replace_all_ms"]
    results["load_1min_end"] = os.getloadavg()[0]
    results["goals_met"] = {k: results[k] <= v for k, v in GOALS.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:32} {value:.1f}" if isinstance(value, float) else f"{key:32} {value}")


if __name__ == "__main__":
    main()
