"""Decontamination against the shipped HumanEval-infilling splits and held-out files."""
import gzip
import json

import pytest

from infill.benchmarks import SPLITS, load_humaneval_infilling
from train.data.config import DataConfig
from train.data.decontaminate import decontaminate


def test_benchmarks_ship_all_splits():
    sizes = {split: len(load_humaneval_infilling(split)) for split in SPLITS}
    assert sizes == {"single-line": 1033, "multi-line": 5815, "random-span": 1640,
                     "random-span-light": 164}
    task = load_humaneval_infilling("single-line")[0]
    assert {"task_id", "prompt", "suffix", "canonical_solution", "test"} <= set(task)
    with pytest.raises(ValueError):
        load_humaneval_infilling("nope")


def _run(texts, config=None):
    records = [{"text": t, "bytes": len(t), "language": "python", "path": f"{i}.py"}
               for i, t in enumerate(texts)]
    return [r.get("removed") for r in decontaminate(records, config or DataConfig())]


def test_benchmark_copies_are_dropped_clean_code_kept():
    task = load_humaneval_infilling("single-line")[0]
    solution = task["prompt"] + task["canonical_solution"] + task["suffix"]
    reindented = "class Wrapper:\n" + "".join("    " + line + "\n" for line in solution.splitlines())
    clean = "import os\n\ndef listing(path):\n    return sorted(os.listdir(path))\n"
    numbers = "TABLE = [" + ", ".join(str(i) for i in range(50)) + "]\n"
    assert _run([solution, reindented, clean, numbers]) == [
        "decontaminate.benchmark", "decontaminate.benchmark", None, None]
    assert _run([solution], DataConfig(benchmarks=False)) == [None]


def test_held_out_split(tmp_path):
    held = ("def secret_eval_function(alpha, beta, gamma):\n"
            "    total = alpha * beta - gamma / alpha + beta\n    return total + gamma\n")
    path = tmp_path / "held.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"text": held}) + "\n")
    config = DataConfig(benchmarks=False, held_out=(str(path),))
    assert _run(["# copy\n" + held, "x = 1\n"], config) == ["decontaminate.benchmark", None]
