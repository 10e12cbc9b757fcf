"""Multi-hole HumanEval: k = 2 and 3 blanked body lines per problem, filled jointly, one at a time, and
independently; pass@1 (sandboxed) and exact match per hole; and the latency of a 3-hole fill.

The problems: HumanEval (MIT, the copy `infill.benchmarks` ships: each problem's program is the
single-line split's prompt + canonical middle + suffix). From the body of the problem's function (the
lines after its docstring) k non-adjacent, non-blank whole lines are blanked, drawn with
`random.Random(f"{seed}:{task}:{k}")`; a problem with too few body lines for k is left out of that k.
A blanked line is removed with its line break: the hole is the whole line, indentation included.

Modes (each fill ends after its first line break, the single-line rule of `infill eval`):
- joint: `engine.infill_holes` in InCoder's multi-mask format (engines with "multi_hole" only);
- sequential: `infill.engines.sequential_holes`, left to right, each hole in the engine's single-hole
  format, later holes absent from the suffix (blanked);
- independent: each hole alone, every other hole's canonical line in place: the single-hole upper bound.

Scores: pass@1 of the whole filled program (`infill.evaluate.humaneval.score`: the sandbox, or
nothing: no program runs outside it), and exact match per hole (the fill equals the canonical line,
trailing whitespace aside). Models: the default model, and a tiny random transformers model of a PSM
family (StarCoder's tokens, built as the tests build theirs: `tests/hf_models.py`), which has no mask
tokens and so measures the one-at-a-time path (its figures are those of random weights).

Latency: the 3-hole joint fill of the problems whose program is closest to 40 lines, against a
single-hole fill of the same function in the same run (p50 of each, and the ratio).

    python bench/multi_hole.py [--limit N] [--seed 0] [--modes joint,sequential,independent] [--json] [--out DIR]
"""
from __future__ import annotations

import argparse
import ast
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("joint", "sequential", "independent")


def problems() -> list[dict]:
    """One program per HumanEval problem: {task_id, code, test, entry_point}."""
    from infill.benchmarks import load_humaneval_infilling

    out: dict[str, dict] = {}
    for t in load_humaneval_infilling("single-line"):
        task = t["task_id"].split("/", 1)[1].rsplit("/", 1)[0]  # SingleLineInfilling/HumanEval/0/L3 -> HumanEval/0
        out.setdefault(task, {"task_id": task, "code": t["prompt"] + t["canonical_solution"] + t["suffix"],
                              "test": t["test"], "entry_point": t["entry_point"]})
    return list(out.values())


def body_lines(code: str, entry_point: str) -> list[int]:
    """0-based numbers of the non-blank lines of `entry_point`'s body after its docstring."""
    tree = ast.parse(code)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return []
    lines = code.split("\n")
    return [i for i in range(body[0].lineno - 1, fn.end_lineno) if lines[i].strip()]


def blank(problem: dict, k: int, seed: int) -> dict | None:
    """The problem with k non-adjacent body lines blanked: pieces, canonical lines; None when it cannot."""
    lines = problem["code"].splitlines(keepends=True)
    pool = body_lines(problem["code"], problem["entry_point"])
    rng = random.Random(f"{seed}:{problem['task_id']}:{k}")
    for _ in range(200):
        if len(pool) < k:
            return None
        pick = sorted(rng.sample(pool, k))
        if all(b - a > 1 for a, b in zip(pick, pick[1:])):
            break
    else:
        return None
    pieces, at = [], 0
    for i in pick:
        pieces.append("".join(lines[at:i]))
        at = i + 1
    pieces.append("".join(lines[at:]))
    return {**problem, "k": k, "lines": pick, "pieces": pieces, "canonical": [lines[i] for i in pick]}


def one_line(text: str) -> int | None:
    """The stop rule of every mode: a fill ends after its first line break."""
    return text.index("\n") + 1 if "\n" in text else None


def as_line(fill: str) -> str:
    from infill.evaluate.humaneval import postprocess

    return postprocess("single-line", fill)


def fill(engine, item: dict, mode: str, max_tokens: int) -> list[str]:
    from infill.engines import GenerationConfig, InfillRequest, run_to_end, sequential_holes

    config = GenerationConfig(max_tokens=max_tokens)
    pieces = item["pieces"]
    if mode == "joint":
        return [as_line(t) for t in engine.infill_holes(pieces, config, ext=".py", stop_at=one_line).texts]
    if mode == "sequential":
        return [as_line(t) for t in run_to_end(sequential_holes(engine, pieces, config, ext=".py",
                                                                stop_at=one_line)).texts]
    out = []
    for j in range(len(pieces) - 1):
        canon = item["canonical"]
        prefix = "".join(p + c for p, c in zip(pieces[:j], canon[:j])) + pieces[j]
        suffix = pieces[j + 1] + "".join(c + p for c, p in zip(canon[j + 1:], pieces[j + 2:]))
        out.append(as_line(engine.infill(InfillRequest(prefix, suffix, config, stop_at=one_line, ext=".py")).text))
    return out


def run_model(engine, items: list[dict], modes: list[str], max_tokens: int, label: str, on_row=None) -> dict:
    """{(k, mode): {"pass@1", "exact", "holes", "problems"}} for one engine; programs run in the sandbox."""
    from tqdm import tqdm

    from infill.engines import CannotFill
    from infill.evaluate.humaneval import score

    rows: dict = {}
    for k in sorted({it["k"] for it in items}):
        for mode in modes:
            pairs, exact, holes = [], 0, 0
            refused = 0
            for it in tqdm([i for i in items if i["k"] == k], desc=f"{label} k={k} {mode}", file=sys.stderr,
                           dynamic_ncols=True):
                try:
                    fills = fill(engine, it, mode, max_tokens)
                except CannotFill:  # over the engine's limits: scored as blank fills, and counted
                    fills, refused = [""] * k, refused + 1
                exact += sum(f.rstrip() == c.rstrip() for f, c in zip(fills, it["canonical"]))
                holes += len(fills)
                program = it["pieces"][0] + "".join(f + p for f, p in zip(fills, it["pieces"][1:]))
                pairs.append(({"task_id": f"{it['task_id']}/k{k}/{mode}", "prompt": program, "suffix": "",
                               "test": it["test"], "entry_point": it["entry_point"]}, [""]))
            summary = score(pairs, None, workers=2, progress=False)
            rows[(k, mode)] = {"pass@1": summary["pass@1"], "exact": exact / max(holes, 1), "holes": holes,
                               "problems": len(pairs), "refused": refused, "sandbox": summary["sandbox"]["mode"]}
            if on_row is not None:
                on_row(k, mode, rows[(k, mode)])
    return rows


def latency(engine, items: list[dict], repeats: int, max_tokens: int) -> dict:
    """p50 seconds of a 3-hole joint fill of the functions closest to 40 lines, and of a single-hole
    fill of the same functions (the reference, same run), with their ratio."""
    from infill.engines import GenerationConfig, InfillRequest

    three = sorted((it for it in items if it["k"] == 3), key=lambda it: abs(it["code"].count("\n") - 40))[:5]
    config = GenerationConfig(max_tokens=max_tokens)
    joint, single = [], []
    for it in three:
        pieces = it["pieces"]
        for _ in range(repeats):
            t = time.perf_counter()
            engine.infill_holes(pieces, config, ext=".py", stop_at=one_line)
            joint.append(time.perf_counter() - t)
            prefix, suffix = pieces[0], "".join(c + p for c, p in zip(it["canonical"][1:], pieces[2:]))
            suffix = pieces[1] + suffix
            t = time.perf_counter()
            engine.infill(InfillRequest(prefix, suffix, config, stop_at=one_line, ext=".py"))
            single.append(time.perf_counter() - t)
    j, s = statistics.median(joint), statistics.median(single)
    return {"functions": len(three), "lines": [it["code"].count("\n") for it in three], "repeats": repeats,
            "p50_3hole_s": round(j, 3), "p50_1hole_s": round(s, 3), "ratio": round(j / s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N problems (default: all 164)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the blanked lines (default 0)")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per hole (default 48)")
    parser.add_argument("--repeats", type=int, default=3, help="latency repeats per function (default 3)")
    parser.add_argument("--skip-tiny", action="store_true", help="the default model only")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", type=Path, help="also write results.json here")
    args = parser.parse_args()

    import torch

    from infill.engines import load_engine
    from infill.evaluate.sandbox import SandboxUnavailable, protections

    if protections()["mode"] != "sandbox":
        print(f"bench/multi_hole.py: no sandbox here ({protections()['reason']}); nothing is scored outside it",
              file=sys.stderr)
        return 2
    torch.manual_seed(0)
    chosen = problems()[:args.limit]
    items = [b for k in (2, 3) for p in chosen if (b := blank(p, k, args.seed)) is not None]
    results: dict = {"problems": len(chosen), "items": {k: sum(it["k"] == k for it in items) for k in (2, 3)},
                     "seed": args.seed, "max_tokens": args.max_tokens, "models": {}}
    default = load_engine(None, device="cpu")
    models = [("default", default)]
    if not args.skip_tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from hf_models import build

        from infill.engines.hf import HFEngine

        tmp = tempfile.TemporaryDirectory()
        models.append(("tiny-psm (random)", HFEngine.from_pretrained(str(build(Path(tmp.name) / "m", "starcoder")),
                                                                   device="cpu")))
    def save() -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    try:
        for label, engine in models:
            wanted = args.modes.split(",")
            modes = [m for m in MODES if m in wanted and (m != "joint" or "multi_hole" in engine.capabilities)]
            got = results["models"].setdefault(label, {})
            run_model(engine, items, modes, args.max_tokens, label,
                      on_row=lambda k, mode, row: (got.__setitem__(f"k={k} {mode}", row), save()))
        if "joint" in args.modes.split(","):
            results["latency"] = latency(default, items, args.repeats, args.max_tokens)
    except SandboxUnavailable as exc:
        print(f"bench/multi_hole.py: {exc}", file=sys.stderr)
        return 2
    save()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"multi-hole HumanEval: {results['problems']} problems, {results['items'][2]} with k=2 and "
          f"{results['items'][3]} with k=3 (seed {args.seed}), sandboxed pass@1 and exact match per hole")
    print("| model | k | mode | pass@1 | exact/hole | holes | over the limits |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, rows in results["models"].items():
        for key, row in rows.items():
            k, mode = key.split(" ")
            print(f"| {label} | {k[2:]} | {mode} | {row['pass@1']:.3f} | {row['exact']:.3f} | {row['holes']} | "
                  f"{row['refused']} |")
    lat = results.get("latency")
    if lat is None:
        return 0
    print(f"3-hole joint fill, {lat['functions']} functions of {lat['lines']} lines, p50 {lat['p50_3hole_s']} s; "
          f"single-hole fill of the same functions (reference, same run) p50 {lat['p50_1hole_s']} s; "
          f"ratio {lat['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
