"""Decontaminate: drop files that share a long n-gram with an evaluation set (stage 6).

The reference texts are the complete programs of the four HumanEval-infilling splits shipped in
`infill.benchmarks` (prefix + canonical middle + suffix) and any held-out files the user names.
Text is cut into words (identifiers, keywords, numbers; punctuation and whitespace ignored, so
re-indenting or re-spacing does not hide a copy); a file that contains any n consecutive words
(default 13, as GPT-3's decontamination; about two lines of code) of a reference text is dropped.
A reference n-gram is used only when it is
made of names: at least two thirds of its words are non-numeric and two characters or longer, and
at least `MIN_NAMES` of those are distinct. Enumerations (`one 1 two 2 three 3 ...`, `1 2 ... 9 A
B C D`) and loop idioms over one-letter variables (`for i in range len l for j in range i 1 len`)
are shared by unrelated code. With these settings no file of the Python standard library or of
the site-packages here is flagged by accident.
"""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from functools import lru_cache

import numpy as np

from train.data.config import DataConfig
from train.data.records import Record, drop
from train.data.words import words

MIN_NAMES = 4


def ngrams(tokens: tuple[str, ...], n: int) -> Iterator[tuple[str, ...]]:
    """Every run of n consecutive tokens (none when there are fewer than n)."""
    return zip(*(tokens[i:] for i in range(n)))


def benchmark_texts() -> list[str]:
    """The distinct complete programs of every HumanEval-infilling split."""
    from infill.benchmarks import SPLITS, load_humaneval_infilling

    texts = {}
    for split in SPLITS:
        for task in load_humaneval_infilling(split):
            text = task["prompt"] + task["canonical_solution"] + task["suffix"]
            texts.setdefault(text, None)
    return list(texts)


def _jsonl_texts(path: str) -> Iterator[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "text" in row:
                yield row["text"]
            elif "prompt" in row:
                yield row["prompt"] + row.get("canonical_solution", "") + row.get("suffix", "")
            else:
                yield "\n".join(v for v in row.values() if isinstance(v, str))


def held_out_texts(paths: Iterable[str]) -> Iterator[str]:
    """Texts of held-out files: .jsonl(.gz) rows (`text`, or HumanEval fields), other files whole,
    directories walked. Raises `ValueError` for a path that does not exist."""
    for path in paths:
        if not os.path.exists(path):
            raise ValueError(f"held-out path {path!r} does not exist")
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
        for file in files:
            if file.endswith((".jsonl", ".jsonl.gz")):
                yield from _jsonl_texts(file)
            else:
                with open(file, encoding="utf-8", errors="replace") as f:
                    yield f.read()


def _informative(gram: tuple[str, ...]) -> bool:
    names = [t for t in gram if len(t) >= 2 and not t.isdigit()]
    return 3 * len(names) >= 2 * len(gram) and len(set(names)) >= MIN_NAMES


@lru_cache(maxsize=4)
def reference_ngrams(n: int, benchmarks: bool, held_out: tuple[str, ...]) -> frozenset:
    """All n-grams of the reference texts; built once per process."""
    texts = list(benchmark_texts()) if benchmarks else []
    texts.extend(held_out_texts(held_out))
    grams = set()
    for text in texts:
        grams.update(g for g in ngrams(words(text), n) if _informative(g))
    return frozenset(grams)


@lru_cache(maxsize=4)
def reference_vocabulary(n: int, benchmarks: bool, held_out: tuple[str, ...]) -> frozenset:
    """Every word of `reference_ngrams`; built once per process."""
    return frozenset(w for g in reference_ngrams(n, benchmarks, held_out) for w in g)


def shares_ngram(text: str, grams: frozenset, vocabulary: frozenset, n: int) -> bool:
    """Whether `text` contains one of `grams`. Only runs of at least n consecutive words that all
    occur in the reference vocabulary can match, so only those runs are cut into n-grams."""
    tokens = words(text)
    if len(tokens) < n:
        return False
    mask = np.fromiter((t in vocabulary for t in tokens), dtype=bool, count=len(tokens))
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if end - start >= n and not grams.isdisjoint(ngrams(tokens[start:end], n)):
            return True
    return False


def decontaminate(records: Iterable[Record], config: DataConfig) -> Iterator[Record]:
    """Drop files sharing a `config.decontam_ngram`-word n-gram with a benchmark or held-out
    text (stage 6) [decontaminate.benchmark]."""
    grams = reference_ngrams(config.decontam_ngram, config.benchmarks, config.held_out)
    vocabulary = reference_vocabulary(config.decontam_ngram, config.benchmarks, config.held_out)
    for record in records:
        if "removed" in record or not grams:
            yield record
        elif shares_ngram(record["text"], grams, vocabulary, config.decontam_ngram):
            yield drop(record, "decontaminate.benchmark")
        else:
            yield record
