"""The causal-masking objective: spans non-overlapping, documents reconstructible, no loss on sentinels."""
import math
import random
from collections import Counter

import pytest

from infill.formats import decode_incoder
from support import stdlib_texts
from train.config import ObjectiveConfig
from train.masking import chunk_document, cut, document_examples, make_example
from train.spans import choose_random_spans, piece_boundaries, truncated_poisson

CAUSAL = ObjectiveConfig(causal_rate=1.0, spm_rate=0.0, psm_rate=0.0, l2r_rate=0.0, header_rate=0.0)


def _docs():
    return [t[:3000] for t in stdlib_texts(12) if t.strip()]


def _sentinel_ids(tok):
    return {tok.mask_id(j) for j in range(tok.n_masks)} | {tok.file_meta_id}


@pytest.mark.parametrize("syntax_rate", [0.0, 1.0])
def test_causal_masking_reconstructs_the_document_and_masks_no_sentinel_loss(tiny_tokenizer, syntax_rate):
    tok = tiny_tokenizer
    config = ObjectiveConfig(**{**CAUSAL.__dict__, "syntax_rate": syntax_rate, "header_rate": 0.5})
    n_spans = Counter()
    for d, text in enumerate(_docs()):
        for seed in range(6):
            ex = make_example(tok, text, random.Random(f"{d}:{seed}"), config, ext=".py", language="python")
            assert len(ex.ids) == len(ex.loss)
            # the document comes back exactly from the example
            assert decode_incoder(tok, ex.ids) == text
            masks = [i for i in ex.ids if i in {tok.mask_id(j) for j in range(tok.n_masks)}]
            n = (len(masks) - 1) // 2  # each span: <Mj> in place and <Mj> before its answer; plus the end mask
            assert n >= 1 and len(masks) == 2 * n + 1
            assert ex.ids.count(tok.eom_id) == n
            n_spans[n] += 1
            for i, flag in zip(ex.ids, ex.loss):
                # no loss on mask sentinels or the header sentinel; loss on everything else
                assert flag == (i not in _sentinel_ids(tok)), (tok.decode([i]), flag)
    assert n_spans[1] > 0


def test_random_spans_are_sorted_non_overlapping_and_on_piece_boundaries():
    text = _docs()[0]
    bounds = piece_boundaries(text)
    assert bounds[0] == 0 and bounds[-1] == len(text)
    for seed in range(200):
        rng = random.Random(seed)
        spans = choose_random_spans(rng, bounds, truncated_poisson(rng, 8))
        assert spans == sorted(spans)
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert e0 <= s1
        for s, e in spans:
            assert s < e and s in bounds and e in bounds
        kept, masked = cut(text, spans)
        assert "".join(k + m for k, m in zip(kept, masked + [""])) == text


def test_truncated_poisson_stays_in_range_with_poisson_shape():
    rng = random.Random(0)
    draws = Counter(truncated_poisson(rng, 4) for _ in range(20000))
    assert set(draws) <= {1, 2, 3, 4}
    # Poisson(1) conditioned on [1, 4]: P(k) proportional to 1/k!
    z = 1 + 1 / 2 + 1 / 6 + 1 / 24
    for k in (1, 2, 3, 4):
        assert abs(draws[k] / 20000 - 1 / math.factorial(k) / z) < 0.012, k


def test_fim_and_l2r_examples(tiny_tokenizer):
    tok = tiny_tokenizer
    text = _docs()[1]
    for fmt in ("spm", "psm"):
        rates = {"causal_rate": 0.0, "spm_rate": 0.0, "psm_rate": 0.0, "l2r_rate": 0.0, f"{fmt}_rate": 1.0}
        config = ObjectiveConfig(**rates, header_rate=0.0)
        for seed in range(10):
            ex = make_example(tok, text, random.Random(seed), config, language="python")
            ids = ex.ids
            assert ids[0] == tok.fim_prefix_id and ids[-1] == tok.eom_id
            if fmt == "psm":
                suf, mid = ids.index(tok.fim_suffix_id), ids.index(tok.fim_middle_id)
                prefix, suffix, middle = tok.decode(ids[1:suf]), tok.decode(ids[suf + 1:mid]), tok.decode(ids[mid + 1:-1])
            else:
                assert ids[1] == tok.fim_suffix_id
                mid = ids.index(tok.fim_middle_id)
                suffix, prefix_middle = tok.decode(ids[2:mid]), tok.decode(ids[mid + 1:-1])
                prefix, middle = prefix_middle, ""
            assert prefix + middle + suffix == text
            assert all(ex.loss)
    l2r = ObjectiveConfig(causal_rate=0.0, spm_rate=0.0, psm_rate=0.0, l2r_rate=1.0, header_rate=1.0)
    ex = make_example(tok, text, random.Random(0), l2r, ext=".py")
    assert ex.ids[0] == tok.file_meta_id and not ex.loss[0] and ex.ids[-1] == tok.eos_id
    assert tok.decode(ex.ids).endswith(text + "<|endoftext|>")


def test_objective_rates_are_respected(tiny_tokenizer):
    tok = tiny_tokenizer
    config = ObjectiveConfig(causal_rate=0.5, spm_rate=0.0, psm_rate=0.0, l2r_rate=0.5, header_rate=0.0)
    kinds = Counter()
    for seed in range(400):
        ex = make_example(tok, "x = 1\ny = 2\n", random.Random(seed), config)
        kinds["l2r" if ex.ids[-1] == tok.eos_id else "causal"] += 1
    assert 150 < kinds["l2r"] < 250


def test_new_spans_every_epoch_and_the_same_spans_for_the_same_key(tiny_tokenizer):
    record = {"text": _docs()[2], "path": "m.py", "language": "python"}
    run = lambda epoch: document_examples(tiny_tokenizer, record, CAUSAL, seed=1, epoch=epoch, key="0:3",  # noqa: E731
                                          budget=10_000)
    assert [e.ids for e in run(0)] == [e.ids for e in run(0)]
    assert [e.ids for e in run(0)] != [e.ids for e in run(1)]


def test_long_documents_are_chunked_at_line_breaks_within_the_budget(tiny_tokenizer):
    text = stdlib_texts(3)[2]
    chunks = chunk_document(tiny_tokenizer, text, 200)
    assert "".join(chunks) == text and len(chunks) > 3
    for chunk in chunks:
        assert chunk.endswith("\n") or chunk is chunks[-1]
        n = len(tiny_tokenizer.encode(chunk))
        assert n <= 200 or chunk.count("\n") <= 1
