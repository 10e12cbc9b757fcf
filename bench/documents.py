"""How long a big didChange takes to apply (lsp/documents.py), against pygls' own, in the same run.

Scenario (issue 28): Replace All of 1,000 matches in a 500 KB one-line file, sent as VS Code sends
it (one didChange, last match first), in UTF-16 and with a non-ASCII replacement; then the same
1,000 ranges top to bottom, 200,000 one-character inserts, and 2,000 inserts in random order (the
slow path: one pass over the document per edit).

Responsiveness (`--server`, on by default; `--no-server` skips it): an infill-lsp process on the tiny
random model of the tests (`--model` for another), a 900 KB non-ASCII Python file open; a code action
there (its parse and scope analysis take seconds) and right after it a rename in a small file.
`rename_during_action_ms` is the rename's round trip; reference, same run: the same rename with
nothing else running, `rename_idle_ms`. Goal: the rename during the action <= 1 s.

Reference, same run: pygls 2.1.1's `TextDocument.apply_change` on the first `--reference-ranges`
ranges of the Replace All (all 1,000 would take minutes), scaled to 1,000 (its cost per range grows
with the column, and the first ranges are the last matches: the scale is a fair estimate, not a
bound). `speedup` = pygls' estimated time for 1,000 / ours. Goal: replace_all_ms <= 100.

    python bench/documents.py [--json] [--repeats 5] [--reference-ranges 10] [--no-server] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

from lsprotocol import types

from lsp.documents import apply_changes

GOALS = {"replace_all_ms": 100.0, "rename_during_action_ms": 1000.0}


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


def _rename_ms(server, msg_id: int, uri: str) -> float:
    started = time.perf_counter()
    server.send(id=msg_id, method="textDocument/rename", params={
        "textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}, "newName": "total"})
    assert server.response(msg_id, timeout=300)["result"]
    return (time.perf_counter() - started) * 1000


def _tiny_checkpoint(where: Path) -> str:
    """The tests' tiny random model (the `test-tiny` preset, a tokenizer trained on the standard library)."""
    import torch

    from infill.checkpoint import save_checkpoint
    from infill.config import ModelConfig
    from infill.model import Transformer
    from infill.tokenizer import CodeTokenizer

    stdlib = Path(os.__file__).parent
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in sorted(stdlib.glob("*.py"))[:40]]
    tokenizer = CodeTokenizer.train(texts, 1024)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("test-tiny", vocab_size=len(tokenizer))).eval()
    return str(save_checkpoint(where / "tiny", model, tokenizer))


def responsiveness(model: str) -> dict:
    """The rename round trip while a code action analyses a 900 KB file, and idle (see the docstring)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from raw_lsp import Raw

    block = "def f{i}(alpha, beta):\n    # café, ünïcode ☕ 😀\n    total = alpha + beta\n    return total\n\n"
    text = "".join(block.format(i=i) for i in range(9500))
    server = Raw("--model", model, "--device", "cpu")
    try:
        server.initialize(options={"context": False})
        small = "file:///small.py"
        for uri, body in (("file:///big.py", text), (small, "value = 1\nprint(value)\n")):
            server.send(method="textDocument/didOpen", params={"textDocument": {
                "uri": uri, "languageId": "python", "version": 1, "text": body}})
        idle = min(_rename_ms(server, 100 + i, small) for i in range(5))
        line = text.count("\n") - 2
        server.send(id=2, method="textDocument/codeAction", params={
            "textDocument": {"uri": "file:///big.py"},
            "range": {"start": {"line": line, "character": 12}, "end": {"line": line, "character": 12}},
            "context": {"diagnostics": [], "triggerKind": 2}})
        started = time.perf_counter()
        server.send(id=3, method="textDocument/rename", params={
            "textDocument": {"uri": small}, "position": {"line": 0, "character": 1}, "newName": "total"})
        answered = {}
        while len(answered) < 2:  # arrival times of the action's and the rename's responses
            msg = server.inbox.get(timeout=300)
            if "method" not in msg and msg.get("id") in (2, 3):
                answered[msg["id"]] = (time.perf_counter() - started) * 1000
        during, action = answered[3], answered[2]
    finally:
        server.close()
    return {"document_900kb_chars": len(text), "code_action_ms": action, "rename_during_action_ms": during,
            "rename_idle_ms": idle, "rename_slowdown": during / idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-ranges", type=int, default=10)
    parser.add_argument("--no-server", dest="server", action="store_false")
    parser.add_argument("--model", help="checkpoint for --server (default: a tiny random one, made here)")
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
    if args.server:
        with tempfile.TemporaryDirectory() as tmp:
            results.update(responsiveness(args.model or _tiny_checkpoint(Path(tmp))))
    results["load_1min_end"] = os.getloadavg()[0]
    results["goals_met"] = {k: results[k] <= v for k, v in GOALS.items() if k in results}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:32} {value:.1f}" if isinstance(value, float) else f"{key:32} {value}")


if __name__ == "__main__":
    main()
