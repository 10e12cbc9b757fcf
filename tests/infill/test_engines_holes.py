"""Several holes at once (`Engine.stream_infill_holes`): the local engine's joint pass in InCoder's
multi-mask format, the one-at-a-time fall-back, and the limits."""
import pytest

from infill import formats
from infill.engines import (CannotFill, Completion, CompletionResult, GenerationConfig, HolesResult,
                            run_to_end, sequential_holes)
from infill.engines.local import LocalEngine
from doubles import Scripted

PIECES = ["def mean(xs):\n", "    for x in xs:\n", "    return total / len(xs)\n"]
FILLS = ["    total = 0\n", "        total += x\n"]


def scripted_engine(tiny_model, tok, fills, ext=".py"):
    script = formats.encode_incoder(tok, PIECES, fills, ext=ext).ids
    return LocalEngine(Scripted(tiny_model.config, script, tok.eos_id), tok), script


@pytest.mark.parametrize("lookahead", [0, 8])
def test_the_joint_pass_feeds_exactly_the_multi_mask_sequence(tiny_model, tiny_tokenizer, lookahead):
    engine, script = scripted_engine(tiny_model, tiny_tokenizer, FILLS)
    assert "multi_hole" in engine.capabilities and engine.max_holes == tiny_tokenizer.n_masks - 1
    result = engine.infill_holes(PIECES, GenerationConfig(max_tokens=32, lookahead=lookahead), ext=".py")
    assert isinstance(result, HolesResult) and result.mode == "joint"
    assert result.texts == FILLS
    assert [f.finish_reason for f in result.fills] == ["stop", "stop"]  # each ended by <EOM>
    # K0 <M0> K1 <M1> K2 <M2> <M0> F0 <EOM> <M1> F1 <EOM>: what causal masking trains on
    assert result.extra["ids"] == script
    assert engine.model.seen == script[:-1]  # everything but the final <EOM> went through the model


def test_the_fill_of_a_stop_rule_is_cut_and_enters_the_sequence_cut(tiny_model, tiny_tokenizer):
    engine, _ = scripted_engine(tiny_model, tiny_tokenizer, ["    total = 0\n    junk\n", FILLS[1]])
    stop_at = lambda text: text.index("\n") + 1 if "\n" in text else None  # noqa: E731 (one line per hole)
    result = engine.infill_holes(PIECES, GenerationConfig(max_tokens=32), ext=".py", stop_at=stop_at)
    assert result.texts[0] == "    total = 0\n" and result.fills[0].finish_reason == "stop_rule"
    # the second fill saw the cut first fill, off the script: the model said EOS at once
    assert result.texts[1] == ""
    assert result.extra["ids"][-3:] == [tiny_tokenizer.eom_id, tiny_tokenizer.mask_id(1), tiny_tokenizer.eom_id]


def test_a_mask_sentinel_ends_a_fill_and_never_enters_its_text(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    script = formats.encode_incoder(tok, PIECES, FILLS, ext=".py").ids
    first_eom = script.index(tok.eom_id)
    script[first_eom] = tok.mask_id(2)  # the model closes fill 0 with a mask sentinel instead of <EOM>
    engine = LocalEngine(Scripted(tiny_model.config, script, tok.eos_id), tok)
    result = engine.infill_holes(PIECES, GenerationConfig(max_tokens=32), ext=".py")
    assert result.texts[0] == FILLS[0] and result.fills[0].finish_reason == "stop"
    assert "<|mask" not in "".join(result.texts)


class Recorder:
    """A single-hole engine that records each request and answers F<j>."""

    context = 4096

    def __init__(self):
        self.requests = []

    def stream_infill(self, req):
        self.requests.append(req)
        yield
        return CompletionResult([Completion(f"F{len(self.requests) - 1}", 1, 0.0, "stop")], 1.0, 7)


def test_sequential_filling_keeps_the_later_holes_unfilled_in_the_suffix():
    engine = Recorder()
    pieces, written = ["A", "B", "C", "D"], ["<h0>", "<h1>", "<h2>"]
    result = run_to_end(sequential_holes(engine, pieces, GenerationConfig(max_tokens=8), written=written))
    assert result.mode == "sequential" and result.texts == ["F0", "F1", "F2"]
    got = [(r.prefix, r.suffix) for r in engine.requests]
    assert got == [("A", "B<h1>C<h2>D"), ("AF0B", "C<h2>D"), ("AF0BF1C", "D")]


def test_without_mask_tokens_the_local_engine_fills_one_at_a_time(tiny_model, tiny_tokenizer, monkeypatch):
    engine = LocalEngine(tiny_model, tiny_tokenizer)
    monkeypatch.setattr(engine, "max_holes", 0)
    engine.capabilities = engine.capabilities - {"multi_hole"}
    seen = []
    monkeypatch.setattr(engine, "stream_infill", lambda req: (seen.append(req.suffix), (yield),
                                                              CompletionResult([], 1.0, 1))[-1])
    result = engine.infill_holes(PIECES, GenerationConfig(max_tokens=4), written=["    ...\n", "    ...\n"])
    assert result.mode == "sequential" and seen == [PIECES[1] + "    ...\n" + PIECES[2], PIECES[2]]


def test_the_hf_engine_says_it_fills_one_at_a_time(tmp_path):
    from hf_models import build

    from infill.engines.hf import HFEngine

    engine = HFEngine.from_pretrained(str(build(tmp_path / "m", "starcoder")), device="cpu")
    assert "multi_hole" not in engine.capabilities and "one at a time" in engine.unavailable["multi_hole"]
    result = engine.infill_holes(PIECES, GenerationConfig(max_tokens=3))
    assert result.mode == "sequential" and len(result.fills) == 2


def test_limits_are_clear_errors(tiny_model, tiny_tokenizer):
    engine = LocalEngine(tiny_model, tiny_tokenizer)
    too_many = ["x\n"] * (engine.max_holes + 2)
    with pytest.raises(CannotFill, match=rf"{engine.max_holes + 1} holes: this engine fills at most {engine.max_holes}"):
        engine.infill_holes(too_many, GenerationConfig(max_tokens=2))
    with pytest.raises(CannotFill, match="over the budget"):
        engine.infill_holes(PIECES, GenerationConfig(max_tokens=engine.context))
    with pytest.raises(CannotFill, match="no holes"):
        engine.infill_holes(["only text"], GenerationConfig(max_tokens=2))
    with pytest.raises(CannotFill, match="between the first and the last hole"):
        engine.infill_holes(["a", "x = 1\n" * 2000, "b"], GenerationConfig(max_tokens=8))


def test_a_transformers_model_with_incoder_masks_fills_jointly(tmp_path):
    from hf_models import build

    from infill.engines.hf import HFEngine

    engine = HFEngine.from_pretrained(str(build(tmp_path / "m", "incoder")), device="cpu")
    assert "multi_hole" in engine.capabilities and engine.max_holes == 1  # <|mask:0|>, <|mask:1|>
    result = engine.infill_holes(["def f(x):\n", "    return y\n"], GenerationConfig(max_tokens=4))
    assert result.mode == "joint" and len(result.fills) == 1
    prompt = engine._holes_prompt(["def f(x):\n", "    return y\n"], None)
    assert result.extra["ids"][:len(prompt)] == prompt and result.extra["ids"][-1] == engine.eom_id
    with pytest.raises(CannotFill, match="at most 1"):
        engine.infill_holes(PIECES, GenerationConfig(max_tokens=4))
