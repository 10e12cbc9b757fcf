"""The cache model (`infill.cache`): a proper distribution, scored before updated, bounded, incremental."""
from collections import Counter

import numpy as np
import pytest
import torch

from infill.cache import CacheConfig, Layer, NgramCache, mix

V = 50


def _reference(history, sources, V, order, far_weight=1.0):
    """Interpolated Witten-Bell by dictionaries, the textbook way (an independent reference)."""
    ctx = list(history[-(order - 1):]) if order > 1 else []
    weights = [1.0] + [far_weight] * (len(sources) - 1)
    p = [1.0 / V] * V
    uni = Counter()
    for w, seqs in zip(weights, sources):
        for s in seqs:
            for t in s:
                uni[t] += w
    levels = [uni]
    for k in range(1, len(ctx) + 1):
        c = Counter()
        for w, seqs in zip(weights, sources):
            for s in seqs:
                for i in range(k - 1, len(s) - 1):
                    if list(s[i - k + 1:i + 1]) == ctx[-k:]:
                        c[s[i + 1]] += w
        if not c:
            break
        levels.append(c)
    for c in levels:
        n, t = sum(c.values()), len(c)
        if n:
            p = [(c[w] + t * p[w]) / (n + t) for w in range(V)]
    return np.array(p)


def _seq(rng, n, V=V, alphabet=8):
    return rng.integers(0, min(alphabet, V), size=n).astype(np.int32)


def test_distribution_matches_a_textbook_witten_bell_and_sums_to_one():
    rng = np.random.default_rng(0)
    for trial in range(20):
        doc = [_seq(rng, 60), _seq(rng, 20)]
        project = [_seq(rng, 80)]
        history = list(_seq(rng, 10))
        cache = NgramCache(V, config=CacheConfig(order=4, far_weight=0.5))
        for i, s in enumerate(doc + project):
            cache.update(i, 0, s)
        pred = cache.predictor([cache.layer([0, 1]), cache.layer([2])])
        p, matched = pred.distribution(history)
        ref = _reference(history, [doc, project], V, 4, far_weight=0.5)
        np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-12)
        assert abs(p.sum() - 1) < 1e-6 and p.min() > 0
        assert 0 <= matched <= 3


def test_mixed_is_a_proper_distribution_never_zero():
    rng = np.random.default_rng(1)
    cache = NgramCache(V)
    cache.update("doc", 1, _seq(rng, 200, alphabet=3))  # a peaked cache: most tokens never seen
    pred = cache.predictor([cache.layer(["doc"])])
    p, matched = pred.distribution(list(_seq(rng, 9, alphabet=3)))
    assert matched >= 2
    logits = torch.randn(V) * 8
    logits[7] = -1e4  # the model all but rules a token out
    mixed = mix(torch.log_softmax(logits, -1), p, pred.weight(matched))
    probs = mixed.double().exp()
    assert abs(float(probs.sum()) - 1) < 1e-6
    assert float(probs.min()) > 0 and torch.isfinite(mixed).all()
    assert mix(torch.log_softmax(logits, -1), p, 0.0).equal(torch.log_softmax(logits, -1))


def test_an_empty_cache_is_uniform():
    cache = NgramCache(V)
    p, matched = cache.predictor([cache.layer([])]).distribution([1, 2, 3])
    np.testing.assert_allclose(p, np.full(V, 1 / V))
    assert matched == 0


def test_scored_before_updated_live_tokens_count_only_after_they_are_predicted():
    cache = NgramCache(V, config=CacheConfig(order=3))
    pred = cache.predictor([cache.layer([])])
    seq = [1, 2, 3, 1, 2, 3, 1, 2, 9]
    for i in range(1, len(seq)):
        p_live, _ = pred.distribution(seq[:i], live_from=0)
        # the same as a layer built from exactly the tokens before position i
        p_ref, _ = cache.predictor([Layer([np.array(seq[:i])], V)]).distribution(seq[:i])
        np.testing.assert_allclose(p_live, p_ref)
    first9, _ = pred.distribution(seq[:-1], live_from=0)  # 9 never occurred before it is predicted
    assert first9[9] == pytest.approx(first9[4])  # no more than any other unseen token
    after, _ = pred.distribution(seq, live_from=0)
    assert after[9] > first9[9]
    # a prompt's tail (before live_from) is not counted again: the layers hold it
    p_tail, _ = pred.distribution(seq, live_from=len(seq))
    np.testing.assert_allclose(p_tail, np.full(V, 1 / V))


def test_memory_is_bounded_and_the_least_recent_source_goes_first():
    cache = NgramCache(V, limit_mb=1000 * 4 / 2**20)  # room for 1,000 ids
    for key in "abcd":
        cache.update(key, 0, np.zeros(300, dtype=np.int32))
    assert cache.keys() == ["b", "c", "d"] and cache.nbytes() <= 1000 * 4
    assert cache.held("b", 0) is not None  # b is now the most recent
    cache.update("e", 0, np.zeros(300, dtype=np.int32))
    assert cache.keys() == ["d", "b", "e"]
    assert cache.held("b", 1) is None  # another version is not held
    cache.update("big", 0, np.zeros(5000, dtype=np.int32))
    assert cache.keys() == ["big"]  # the newest always stays


def test_incremental_updates_equal_from_scratch():
    rng = np.random.default_rng(2)
    text = list(_seq(rng, 500, alphabet=V))
    cache = NgramCache(V)
    cache.update("doc", 0, text)
    for version in range(1, 40):
        op = rng.integers(0, 3)
        at = int(rng.integers(0, len(text) + 1))
        if op == 0:
            text = text[:at] + list(_seq(rng, 3, alphabet=V)) + text[at:]  # typing
        elif op == 1:
            text = text[:at] + text[at + 5:]  # deleting
        else:
            text = text + list(_seq(rng, 2, alphabet=V))  # appending
        held = cache.update("doc", version, text)
        fresh = NgramCache(V)
        np.testing.assert_array_equal(held, fresh.update("doc", version, text))
        history = text[-7:]
        a, _ = cache.predictor([cache.layer(["doc"])]).distribution(history)
        b, _ = fresh.predictor([fresh.layer(["doc"])]).distribution(history)
        np.testing.assert_array_equal(a, b)


def test_bad_ids_and_settings_are_one_line_errors():
    cache = NgramCache(V)
    with pytest.raises(ValueError, match="ids must be in"):
        cache.update("x", 0, [V])
    with pytest.raises(ValueError, match="weight"):
        CacheConfig(weight=2)
    with pytest.raises(ValueError, match="mode"):
        CacheConfig(mode="both")
    with pytest.raises(ValueError, match="tokens"):
        mix(torch.zeros(V + 1), np.full(V, 1 / V), 0.5)


def test_a_large_layer_searched_by_its_index_gives_the_same_distribution(monkeypatch):
    import infill.cache as cache_module

    rng = np.random.default_rng(3)
    seqs = [_seq(rng, 400, alphabet=6) for _ in range(3)]
    history = list(_seq(rng, 9, alphabet=6))
    scanned = NgramCache(V).predictor([Layer(seqs, V)]).distribution(history)
    monkeypatch.setattr(cache_module, "INDEX_FROM", 10)
    indexed = NgramCache(V).predictor([Layer(seqs, V)]).distribution(history)
    np.testing.assert_array_equal(scanned[0], indexed[0])
    assert scanned[1] == indexed[1] >= 2
    p, matched = NgramCache(V).predictor([Layer(seqs, V)]).distribution(history, skip_below=matched_plus(indexed))
    assert p is None and matched == indexed[1]


def matched_plus(result):
    return result[1] + 1
