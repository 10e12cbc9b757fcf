"""Dedup settings for datatrove: whitespace-blind exact content, code words, LSH bands for 0.7."""
import random

from datatrove.data import Document
from datatrove.pipeline.dedup import MinhashDedupSignature

from train.data.config import DataConfig
from train.data.dedup import (CodeWords, code_minhash_config, exact_content, exact_priority,
                              lsh_bands)

CFG = DataConfig()


def _program(seed: int, n_funcs: int = 40) -> str:
    rng = random.Random(seed)
    names = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
    lines = []
    for i in range(n_funcs):
        a, b = rng.sample(names, 2)
        lines.append(f"def {a}_{i}({b}, {a}):\n    return {b} * {rng.randint(0, 999)} + {a}\n")
    return "\n".join(lines)


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = CodeWords().word_tokenize(text)
    return set(zip(*(w[i:] for i in range(5))))


def _jaccard(x: str, y: str) -> float:
    a, b = _shingles(x), _shingles(y)
    return len(a & b) / len(a | b)


def _bands(step: MinhashDedupSignature, text: str) -> list[tuple[int, ...]]:
    return [tuple(b) for b in step.get_signature(step.get_shingles(text))]


def test_exact_content_ignores_whitespace_only_and_earlier_tasks_win():
    doc = lambda text, rank=0: Document(text=text, id="x", metadata={"_rank": rank})  # noqa: E731
    assert exact_content(doc("def f():\n    return 1\n")) == exact_content(doc("def f():\n\treturn   1"))
    assert exact_content(doc("def f(): return 1")) != exact_content(doc("def f(): return 2"))
    assert exact_priority(doc("", 0)) > exact_priority(doc("", 1)) > exact_priority(doc("", 7)) >= 1


def test_lsh_bands_are_datasketchs_choice():
    from datasketch import MinHashLSH

    for threshold in (0.5, 0.7, 0.85):
        lsh = MinHashLSH(threshold=threshold, num_perm=256)
        assert lsh_bands(threshold, 256) == (lsh.b, lsh.r)
    assert lsh_bands(0.7, 256) == (25, 10)


def test_code_words_keep_identifiers_case_and_numbers():
    assert CodeWords().word_tokenize("x_1 = Foo(bar, 42)  # ok") == ["x_1", "Foo", "bar", "42", "ok"]


def test_near_duplicates_share_a_band_and_distinct_files_do_not(tmp_path):
    config = code_minhash_config(CFG)
    assert (config.n_grams, config.num_buckets, config.hashes_per_bucket) == (5, 25, 10)
    step = MinhashDedupSignature(str(tmp_path), config=config, language=CodeWords())
    base = _program(0)
    edited = base.replace("alpha_0(", "renamed_0(", 1).replace("return beta", "return  BETA", 2)
    distinct = _program(7)
    assert _jaccard(base, edited) > 0.8 and _jaccard(base, distinct) < 0.3
    a, b, c = _bands(step, base), _bands(step, edited), _bands(step, distinct)
    assert len(a) == 25 and all(len(band) == 10 for band in a)
    assert sum(x == y for x, y in zip(a, b)) >= 1
    assert sum(x == y for x, y in zip(a, c)) == 0
    # Case is code: an upper-cased copy is not the same file to MinHash (exact dedup neither).
    assert _bands(step, base) != _bands(step, base.upper())
