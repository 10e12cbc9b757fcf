"""Dedup: exact (whitespace-normalised) and near (MinHash LSH) duplicates, first one kept."""
import random

import numpy as np

from train.data.config import DataConfig
from train.data.dedup import deduplicate, exact_hash, fingerprint, minhash, shingle_hashes

CFG = DataConfig()


def _program(seed: int, n_funcs: int = 40) -> str:
    rng = random.Random(seed)
    names = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
    lines = []
    for i in range(n_funcs):
        a, b = rng.sample(names, 2)
        lines.append(f"def {a}_{i}({b}, {a}):\n    return {b} * {rng.randint(0, 999)} + {a}\n")
    return "\n".join(lines)


def _true_jaccard(x: str, y: str) -> float:
    a, b = set(shingle_hashes(x, 5).tolist()), set(shingle_hashes(y, 5).tolist())
    return len(a & b) / len(a | b)


def test_exact_hash_ignores_whitespace_only():
    assert exact_hash("def f():\n    return 1\n") == exact_hash("def f():\n\treturn   1")
    assert exact_hash("def f(): return 1") != exact_hash("def f(): return 2")


def test_minhash_estimates_jaccard():
    base = _program(0)
    lines = base.splitlines()
    for keep in (0.95, 0.8, 0.5):
        cut = int(len(lines) * keep)
        other = "\n".join(lines[:cut]) + "\n" + _program(1)[: len(base) - len("\n".join(lines[:cut]))]
        est = np.mean(minhash(base, CFG) == minhash(other, CFG))
        assert abs(est - _true_jaccard(base, other)) < 0.1


def _run(texts):
    records = [{"text": t, "bytes": len(t), "language": "python", "path": f"f{i}.py"}
               for i, t in enumerate(texts)]
    return [r.get("removed") for r in deduplicate(fingerprint(records, CFG), CFG)]


def test_exact_near_and_distinct_files():
    base = _program(0)
    reindented = base.replace("    return", "        return")
    edited = base.replace("alpha_0(", "renamed_0(", 1).replace("return beta", "return  BETA", 2)
    distinct = _program(7)
    assert _true_jaccard(base, edited) > 0.8
    assert _true_jaccard(base, distinct) < 0.3
    assert _run([base, reindented, edited, distinct, base]) == [
        None, "dedup.exact", "dedup.near", None, "dedup.exact"]


def test_threshold_is_respected():
    base = _program(0)
    half = "\n".join(base.splitlines()[:60]) + "\n" + _program(3)[:1500]
    j = _true_jaccard(base, half)
    assert 0.2 < j < 0.7
    assert _run([base, half]) == [None, None]
    strict = DataConfig(near_threshold=max(0.05, j - 0.15))
    records = [{"text": t, "bytes": 1, "language": "python", "path": "x"} for t in (base, half)]
    assert [r.get("removed") for r in deduplicate(records, strict)] == [None, "dedup.near"]


def test_tombstones_pass_through_and_work_without_fingerprints():
    tomb = {"text": "", "bytes": 1, "language": "c", "path": "x.c", "removed": "filter.empty"}
    out = list(deduplicate([tomb, {"text": "int x;", "bytes": 6, "language": "c", "path": "y.c"}], CFG))
    assert out[0] is tomb and "removed" not in out[1]
