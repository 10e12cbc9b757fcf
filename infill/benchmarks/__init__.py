"""Evaluation benchmarks shipped with the package.

HumanEval-infilling (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the
Middle"), MIT license (`humaneval_infilling/LICENSE`, copyright OpenAI). Each task is a dict with
`task_id`, `entry_point`, `prompt` (the prefix), `suffix`, `canonical_solution` (the middle) and
`test`. The data pipeline decontaminates its corpus against these files; the evaluation harness
scores models on them.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

DATA_DIR = Path(__file__).parent / "humaneval_infilling"

SPLITS: dict[str, str] = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random-span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-span-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}


def split_path(split: str) -> Path:
    """Path of a split's .jsonl.gz file. Raises `ValueError` for an unknown split name."""
    if split not in SPLITS:
        raise ValueError(f"unknown HumanEval-infilling split {split!r}; choose from {sorted(SPLITS)}")
    return DATA_DIR / SPLITS[split]


def load_humaneval_infilling(split: str) -> list[dict]:
    """Every task of one split, in file order (single-line: 1,033 tasks; multi-line: 5,815;
    random-span: 1,640; random-span-light: 164)."""
    with gzip.open(split_path(split), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
