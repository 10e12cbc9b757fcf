import pytest

from infill import formats

from support import STDLIB

DOC = STDLIB.joinpath("bisect.py").read_text()


def _cut(doc, *points):
    return [doc[a:b] for a, b in zip((0,) + points, points + (len(doc),))]


@pytest.mark.parametrize("fmt", ["psm", "spm"])
@pytest.mark.parametrize("ext", [None, ".py"])
def test_fim_round_trip(tiny_tokenizer, fmt, ext):
    prefix, middle, suffix = _cut(DOC, 500, 731)
    enc = formats.encode_fim(tiny_tokenizer, fmt, prefix, suffix, middle, ext=ext)
    p, m, s = formats.decode_fim(tiny_tokenizer, fmt, enc.ids)
    assert p + m + s == DOC
    if fmt == "psm":
        assert (p, m, s) == (prefix, middle, suffix)
    assert len(enc.ids) == len(enc.loss)
    prompt = formats.encode_fim(tiny_tokenizer, fmt, prefix, suffix, ext=ext)
    assert enc.ids[:len(prompt.ids)] == prompt.ids  # the prompt is the example up to the middle
    assert enc.ids[-1] == tiny_tokenizer.eom_id and enc.loss[-1]


@pytest.mark.parametrize("n_spans", [1, 2, 5])
def test_incoder_round_trip_and_loss(tiny_tokenizer, n_spans):
    points = [100 * (i + 1) + 7 * i for i in range(2 * n_spans)]
    pieces = _cut(DOC[:2000], *points)
    kept, masked = pieces[0::2], pieces[1::2]
    enc = formats.encode_incoder(tiny_tokenizer, kept, masked, ext=".py")
    assert formats.decode_incoder(tiny_tokenizer, enc.ids) == DOC[:2000]
    masks = {tiny_tokenizer.mask_id(j) for j in range(tiny_tokenizer.n_masks)}
    for i, has_loss in zip(enc.ids, enc.loss):
        assert has_loss == (i not in masks and i != tiny_tokenizer.file_meta_id)
    assert enc.ids.count(tiny_tokenizer.eom_id) == n_spans
    # the layout of the issue: A <M0> C <M1> E <M2> <M0> B <EOM> <M1> D <EOM>
    m = tiny_tokenizer.mask_id
    seq = [i for i in enc.ids if i in masks or i == tiny_tokenizer.eom_id]
    expected = [m(j) for j in range(n_spans + 1)] + sum(([m(j), tiny_tokenizer.eom_id] for j in range(n_spans)), [])
    assert seq == expected


def test_incoder_inference_prompt(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = formats.infill_prompt(tok, "incoder", "left", "right")
    assert ids == tok.encode("left") + [tok.mask_id(0)] + tok.encode("right") + [tok.mask_id(1), tok.mask_id(0)]
    full = formats.encode_incoder(tok, ["left", "right"], ["MID"])
    assert full.ids[:len(ids)] == ids
    with pytest.raises(ValueError, match="must be None"):
        formats.encode_incoder(tok, ["a", "b", "c"], [None, "x"])
    with pytest.raises(ValueError, match="kept pieces"):
        formats.encode_incoder(tok, ["a"], ["x"])
    with pytest.raises(ValueError, match="mask tokens"):
        formats.encode_incoder(tok, ["a"] * 33, ["x"] * 32)


def test_spm_typing_only_appends(tiny_tokenizer):
    """Typing at the cursor changes only the end of an SPM prompt (what the session cache needs)."""
    prefix, suffix = DOC[:900], DOC[900:1500]
    before = formats.infill_prompt(tiny_tokenizer, "spm", prefix, suffix)
    after = formats.infill_prompt(tiny_tokenizer, "spm", prefix + "ret", suffix)
    common = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b) if before != after[:len(before)] else len(before)
    assert common >= len(before) - 1
    psm_before = formats.infill_prompt(tiny_tokenizer, "psm", prefix, suffix)
    psm_after = formats.infill_prompt(tiny_tokenizer, "psm", prefix + "ret", suffix)
    assert psm_after[:len(psm_before)] != psm_before  # PSM puts the suffix after the cursor


def test_l2r(tiny_tokenizer):
    enc = formats.encode_l2r(tiny_tokenizer, DOC[:300])
    assert tiny_tokenizer.decode(enc.ids[:-1]) == DOC[:300] and enc.ids[-1] == tiny_tokenizer.eos_id
    assert formats.stop_ids(tiny_tokenizer, "l2r") == {tiny_tokenizer.eos_id}
    with pytest.raises(ValueError):
        formats.encode_fim(tiny_tokenizer, "pms", "a", "b")
