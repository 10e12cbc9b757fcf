"""Dedup: what exact and near-duplicate detection compare, set for code (stage 4).

Both run as datatrove's own steps (`pipeline`): `ExactDedupSignature` / `ExactFindDedups` /
`ExactDedupFilter`, then `MinhashDedupSignature` / `MinhashDedupBuckets` / `MinhashDedupCluster` /
`MinhashDedupFilter`. This module holds the settings that make them code-aware, offline and in
input order:
- [dedup.exact] same 64-bit xxhash of the whitespace-normalised text (`exact_content`) as an
  earlier file: re-indented copies are exact duplicates. Of a group, the copy from the earliest
  task is kept (`exact_priority`), and within a task the earliest: the first in input order.
- [dedup.near] MinHash of 5-word shingles (`config.shingle_size`), words being runs of `\\w`
  (`CodeWords`, the words decontamination uses; no NLTK, no download), case, digits and
  punctuation kept; 25 bands of 10 hashes at threshold 0.7 (`lsh_bands`: of the 256 permutations,
  the 250 that datasketch's LSH also used; a pair shares a band with
  probability 1 - (1 - s^10)^25: 0.51 at s = 0.7, 0.94 at s = 0.8, 0.02 at s = 0.5). Pairs
  that share a band are joined into clusters; one file of each cluster is kept, the earliest in
  input order for a pair.

Differences from the one-process pipeline it replaced (bench/pool_ref.py); the report's counts
on the fixture corpus are the same (tests/train/test_data_cli.py), and on the benchmark's slice of
the standard library datatrove drops more codec tables as near duplicates (docs/data.md):
a candidate pair is not re-checked against the estimated Jaccard similarity (a pair at s = 0.6
is dropped with probability 0.14); clusters are transitive (A~B, B~C drops B and C even when
A and C differ), and in a cluster of three or more the kept file is the root of datatrove's
union by size, not always the earliest; exact dedup runs over the whole corpus before near dedup,
so an exact copy of a near duplicate counts as exact; a file of fewer than 5 words has no shingle
and is only deduplicated exactly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig
from datatrove.utils.word_tokenizers import WordTokenizer

from train.data.config import DataConfig
from train.data.words import words

# Exact-dedup priorities are 16-bit and the highest wins: rank r gets MAX_PRIORITY - r.
MAX_PRIORITY = 65535


def normalise_whitespace(text: str) -> str:
    """Every run of whitespace as one space, ends stripped: re-indented copies are exact dups."""
    return " ".join(text.split())


def exact_content(doc: Document) -> str:
    """What exact dedup compares: the whitespace-normalised text."""
    return normalise_whitespace(doc.text)


def exact_priority(doc: Document) -> int:
    """Exact dedup keeps the copy with the highest priority: the one from the earliest task."""
    return MAX_PRIORITY - doc.metadata.get("_rank", 0)


class CodeWords(WordTokenizer):
    """datatrove word tokenizer for code: `words.words` (runs of `\\w`), the words that
    decontamination uses too. datatrove's default is NLTK's English tokenizer, which needs a
    download and splits on punctuation meant for prose."""

    def __init__(self) -> None:
        super().__init__("code")

    def word_tokenize(self, text: str) -> list[str]:
        return list(words(text))

    def sent_tokenize(self, text: str) -> list[str]:
        return text.splitlines()

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError("code has no sentence spans")

    def __eq__(self, other) -> bool:  # one tokenizer: datatrove caches it by argument
        return isinstance(other, CodeWords)

    def __hash__(self) -> int:
        return hash(CodeWords)


@lru_cache(maxsize=8)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= `num_perm` whose collision curve 1 - (1 - s^rows)^bands
    best separates Jaccard similarity s below and above `threshold`: the least sum of the
    false-positive area (below it) and false-negative area (above it), as datasketch's
    `MinHashLSH` chooses them (there a private function, hence this one). 0.7 and 256: (25, 10)."""
    s = np.linspace(0.0, 1.0, 2001)
    below, above = s <= threshold, s >= threshold
    best = (np.inf, 1, 1)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - s**rows) ** bands
            err = np.trapezoid(p[below], s[below]) + np.trapezoid(1 - p[above], s[above])
            if err < best[0]:
                best = (err, bands, rows)
    return best[1], best[2]


def code_minhash_config(config: DataConfig) -> MinhashConfig:
    """datatrove's MinHash settings for code: `config.shingle_size`-word shingles, the bands and
    rows of `lsh_bands(config.near_threshold, config.num_perm)` (25 x 10 = 250 of 256 hashes at
    0.7, as the one-process pipeline's LSH), 64-bit xxhash, `config.seed`. Normalisation keeps
    case, digits and punctuation (they are code) and only joins whitespace; `CodeWords` then keeps
    identifiers, keywords and numbers."""
    bands, rows = lsh_bands(config.near_threshold, config.num_perm)
    norm = TextNormConfig(lowercase=False, norm_whitespace=True, remove_punctuation=False,
                          norm_unicode_diacritics=False, norm_numbers=False)
    return MinhashConfig(n_grams=config.shingle_size, num_buckets=bands, hashes_per_bucket=rows,
                         seed=config.seed, norm_config=norm,
                         hash_config=HashConfig(precision=64, hash_fc="xxhash"))
