"""What the cache model costs a completion, against the model's own per-token time measured in the same run.

The set: a ~100 KB Python document made of the held-out package's files (detect_secrets, joined
until it passes `--kb`), the other files of its package as sources (the workspace-open case), and
`--requests` completions of the default model through `lsp.completion.complete` with the server's
defaults (cache on, greedy, drafts on), each after the user typed one more character at a line of
the document chosen by a seeded generator (a new document version per request, as in an editor).

Measured, by wrapping the engine's seams (nothing else changes):
- `cache_token_ms`: each call of the cache's hook (`next_dist`: the cache's distribution and the
  mixture), p50 and p95;
- `cache_setup_ms`: per request, the hook's set-up (tokenizing what changed, the layers), p50 and p95;
- `cache_request_ms`: per request, the set-up plus all the hook's calls, p50 and p95 (a request that
  generates 64 tokens pays 64 calls);
- `model_token_ms`: each one-token forward of the model (a decode step) in the same run, p50, and
  `cache_token_ratio` = cache_token_ms p50 / model_token_ms p50.

Times are the CPU time of the thread that runs them (`time.thread_time`), so a machine loaded by
other work does not inflate them; the model's time is measured the same way.

Goals (issue 24): cache_token_ms p50 <= 1 ms, cache_request_ms p95 <= 10 ms on the 100 KB document.

    python bench/cache_cost.py [--json] [--kb 100] [--requests 40] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

GOALS = {"cache_token_p50_ms": 1.0, "cache_request_p95_ms": 10.0}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def document(kb: int) -> tuple[str, list[tuple[str, object, str]]]:
    """(a document of at least `kb` KB from the held-out package, the package's other files as sources)."""
    from infill.evaluate.documents import iter_documents
    from lsp.rest_of_line import package_dir

    root, _ = package_dir(None)
    files = [(d.path, d.text) for d in iter_documents(root, {"python"})]
    files.sort(key=lambda f: -len(f[1]))
    doc, used = "", 0
    while len(doc) < kb * 1000 and used < len(files):
        doc += files[used][1] + "\n\n"
        used += 1
    while len(doc) < kb * 1000:  # a small package: repeat it
        doc += doc
    return doc, [(path, 1, text) for path, text in files[used:]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=int, default=100)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    from infill.engines import load_engine
    from infill.engines import mixture
    from lsp.completion import complete
    from lsp.options import ServerOptions

    torch.set_num_threads(1)
    engine = load_engine(None, device="cpu")
    text, sources = document(args.kb)
    options = ServerOptions(time_budget_ms=60_000)
    token_ms: list[float] = []
    model_ms: list[float] = []
    request_ms: list[float] = []
    setup_ms: list[float] = []
    current: list[float] = []

    real_next_dist = mixture.CacheModel.next_dist

    def timed_next_dist(self, req, prompt, first_allowed=None):
        start = time.thread_time()
        hook = real_next_dist(self, req, prompt, first_allowed)
        current.append((time.thread_time() - start) * 1000)
        setup_ms.append(current[-1])
        if hook is None:
            return None

        def timed(generated, logprobs):
            t = time.thread_time()
            out = hook(generated, logprobs)
            ms = (time.thread_time() - t) * 1000
            token_ms.append(ms)
            current.append(ms)
            return out
        return timed
    mixture.CacheModel.next_dist = timed_next_dist

    real_forward = engine._forward

    def timed_forward(cache, need):
        fwd = real_forward(cache, need)
        call = fwd.__call__

        class Timed(type(fwd)):
            def __call__(self, ids, start_pos):
                t = time.thread_time()
                out = call(ids, start_pos)
                if ids.shape[1] == 1:
                    model_ms.append((time.thread_time() - t) * 1000)
                return out
        fwd.__class__ = Timed
        return fwd
    engine._forward = timed_forward

    rng = random.Random(args.seed)
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if ln.strip() and len(ln) - len(ln.lstrip()) >= 4]
    doc = text
    complete(doc, len(doc) // 2, engine, options, language="python", ext=".py", version=0, sources=tuple(sources),
             session="bench")  # first: every block tokenized once (the index reading the files)
    token_ms.clear(), model_ms.clear(), setup_ms.clear()
    for k in range(args.requests):
        row = rng.choice(starts)
        line = lines[row]
        col = len(line) - len(line.lstrip()) + 1
        offset = sum(len(ln) + 1 for ln in lines[:row]) + col
        current.clear()
        complete(doc, offset, engine, options, language="python", ext=".py", version=k + 1, sources=tuple(sources),
                 session="bench")
        request_ms.append(sum(current))
    result = {
        "document_kb": round(len(text) / 1000, 1), "sources": len(sources), "requests": args.requests,
        "cache_token_p50_ms": round(statistics.median(token_ms), 3),
        "cache_token_p95_ms": round(percentile(token_ms, 0.95), 3),
        "cache_setup_p50_ms": round(statistics.median(setup_ms), 2),
        "cache_setup_p95_ms": round(percentile(setup_ms, 0.95), 2),
        "cache_request_p50_ms": round(statistics.median(request_ms), 2),
        "cache_request_p95_ms": round(percentile(request_ms, 0.95), 2),
        "model_token_p50_ms": round(statistics.median(model_ms), 3),
        "cache_token_ratio": round(statistics.median(token_ms) / statistics.median(model_ms), 3),
        "tokens": len(token_ms),
    }
    result["goals_met"] = {"cache_token_p50_ms": result["cache_token_p50_ms"] <= GOALS["cache_token_p50_ms"],
                           "cache_request_p95_ms": result["cache_request_p95_ms"] <= GOALS["cache_request_p95_ms"]}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
