"""The cache model inside the engines with logits: the same mixture in both, drafting still exact,
tokenized per block, and said to be missing where an engine has no logits."""
from __future__ import annotations

import pytest

from infill import cli
from infill.engines import CacheConfig, CacheSource, GenerationConfig, InfillRequest, load
from infill.engines.mixture import blocks

MEAN = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return t"
REPEAT = ("def area(shape):\n    width = shape.width\n    height = shape.height\n    return width * height\n\n\n"
          "def perimeter(shape):\n    width = shape.width\n    height = shape.")
PROMPTS = [(MEAN, "\n"), (REPEAT, "\n"), ("for i in range(10):\n    print(i", ")\n")]


@pytest.fixture(scope="module")
def default_engine():
    return load.load_engine(None, device="cpu")


def test_drafting_stays_exact_with_the_cache_on(default_engine):
    """Greedy with prompt-lookup drafts equals greedy without them when the cache is mixed in: drafts
    are verified against the mixed distribution."""
    source = CacheSource("thrice.py", 1, REPEAT.replace("shape", "box") * 3)
    for prefix, suffix in PROMPTS:
        for sources in ((), (source,)):
            outs = []
            for lookahead in (0, 8):
                req = InfillRequest(prefix, suffix, GenerationConfig(max_tokens=24, lookahead=lookahead), ext=".py",
                                    cache=CacheConfig(), sources=sources)
                result = default_engine.infill(req)
                assert result.extra["cache"]
                outs.append([(c.text, c.tokens, c.finish_reason) for c in result.candidates])
            assert outs[0] == outs[1], prefix


def test_the_cache_changes_the_completion_and_is_off_without_a_cache_request(default_engine):
    req = InfillRequest(MEAN, "\n", GenerationConfig(max_tokens=8), ext=".py", stop=("\n",))
    alone = default_engine.infill(req)
    mixed = default_engine.infill(InfillRequest(MEAN, "\n", GenerationConfig(max_tokens=8), ext=".py", stop=("\n",),
                                                cache=CacheConfig()))
    assert not alone.extra["cache"] and mixed.extra["cache"]
    assert mixed.text.startswith("otal")  # `total`, three lines up, spelled by the cache


def test_the_transformers_engine_mixes_as_the_local_engine(default_engine, tmp_path, capsys):
    """The hook is one method of both engines with logits: the default model exported to transformers
    gives the local engine's lines with the cache on. (Lines: past a line's end the cache often gives
    two continuations the same probability, and the engines' logits, equal to 1e-3, break the tie.)"""
    from infill.engines.hf import HFEngine

    assert cli.main(["export", "--hf", str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    hf = load.load_engine(str(tmp_path / "hf"), device="cpu")
    assert isinstance(hf, HFEngine) and "cache" in hf.capabilities
    source = CacheSource("other.py", 1, REPEAT.replace("shape", "box"))
    for prefix, suffix in PROMPTS:
        req = InfillRequest(prefix, suffix, GenerationConfig(max_tokens=16), ext=".py", cache=CacheConfig(),
                            sources=(source,), stop=("\n",))
        want, got = default_engine.infill(req), hf.infill(req)
        assert got.extra["cache"] and want.extra["cache"]
        assert [(c.text, c.tokens) for c in got.candidates] == [(c.text, c.tokens) for c in want.candidates], prefix


def test_documents_are_tokenized_per_block_and_kept_per_version(default_engine):
    from infill.engines.mixture import CacheModel

    calls = []

    def encode_batch(texts):
        calls.append(len(texts))
        return default_engine._encode_batch(texts)
    model = CacheModel(default_engine.vocab_size, encode_batch, default_engine._special())
    text = (REPEAT + "\n\n") * 20
    assert "".join(blocks(text)) == text
    first = model.tokenize(text)
    typed = text[:len(text) // 2] + "x = 1" + text[len(text) // 2:]
    calls.clear()
    again = model.tokenize(typed)
    assert sum(calls) == 1  # one block changed: one block tokenized
    fresh = CacheModel(default_engine.vocab_size, default_engine._encode_batch, default_engine._special())
    assert (again == fresh.tokenize(typed)).all() and len(again) > len(first)
    model.ids("doc", 1, text)
    calls.clear()
    model.ids("doc", 1, text)
    assert not calls  # the same version: held, not tokenized


def test_an_engine_without_logits_says_it_has_no_cache():
    from infill.engines.openai import OpenAIEngine

    engine = OpenAIEngine("http://127.0.0.1:9/v1")
    assert "cache" in engine.unavailable and "distribution" in engine.unavailable["cache"]


def test_infill_complete_takes_the_cache(tmp_path, capsys):
    import json

    src = tmp_path / "mean.py"
    src.write_text(MEAN + "\n")
    assert cli.main(["complete", f"{src}:5:13", "--cache", "--json", "--max-tokens", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["middle"].startswith("otal"), out


def test_a_source_the_tokenizer_fails_on_costs_that_source_alone(default_engine):
    from infill.engines.mixture import CacheModel

    calls = []

    def encode_batch(texts):
        calls.append(texts)
        if any("EVIL" in t for t in texts):
            raise ValueError("the tokenizer failed on this text")
        return default_engine._encode_batch(texts)
    model = CacheModel(default_engine.vocab_size, encode_batch, default_engine._special())
    req = InfillRequest(MEAN, "\n", GENERATION, cache=CacheConfig(),
                        sources=(CacheSource("evil.py", 1, "EVIL = 1\n"), CacheSource("ok.py", 1, REPEAT)))
    prompt = default_engine._prompt(req)[0]
    assert model.next_dist(req, prompt) is not None
    assert ("source", "ok.py") in model.ngrams.keys() and ("source", "evil.py") not in model.ngrams.keys()
    calls.clear()
    model.next_dist(req, prompt)
    assert not any("EVIL" in t for texts in calls for t in texts)  # not tried again at that version


GENERATION = GenerationConfig(max_tokens=4)
