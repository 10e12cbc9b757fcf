"""HFEngine on tiny random transformers models, one per FIM template family; nothing is downloaded."""
import pytest
import torch

from infill import cli, load
from infill.engine import InfillRequest, LocalEngine
from infill.engines import Engine
from infill.engines import templates as fim
from infill.engines.hf import HFEngine

FAMILIES = {
    # family: (special tokens, bos, eos)
    "starcoder": (["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"], "<|endoftext|>", "<|endoftext|>"),
    "santacoder": (["<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"], "<|endoftext|>", "<|endoftext|>"),
    "deepseek": (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], "<｜begin▁of▁sentence｜>",
                 "<｜end▁of▁sentence｜>"),
    "qwen": (["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|file_sep|>"], None,
             "<|endoftext|>"),
    "codellama": (["<PRE>", "<SUF>", "<MID>", "<EOT>"], "<s>", "</s>"),
    "incoder": (["<|mask:0|>", "<|mask:1|>", "<|endofmask|>"], "<|endoftext|>", "<|endoftext|>"),
}
TEXTS = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n", "x = [1, 2, 3]\n"] * 5


def build(directory, family, seed=0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    extra, bos, eos = FAMILIES[family]
    specials = [t for t in dict.fromkeys([eos, bos, *extra]) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                     additional_special_tokens=extra)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    hf_tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    return request.param, build(tmp_path_factory.mktemp(request.param), request.param)


@torch.inference_mode()
def greedy_ref(model, prompt, stop_ids, max_tokens):
    """Greedy decoding with a full forward pass per token: no cache, nothing shared with the engine."""
    ids, out = list(prompt), []
    for _ in range(max_tokens):
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if nxt in stop_ids:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def test_template_detected_and_prompt_built(family_dir):
    family, directory = family_dir
    engine = load.load_engine(str(directory), device="cpu")
    assert isinstance(engine, HFEngine) and isinstance(engine, Engine)
    assert engine.template.name == family
    t = engine.template
    req = InfillRequest(prefix=f"x = 1{t.pre}{t.suf}\n", suffix=f"y = 2{t.mid or t.pre}\n", max_tokens=4)
    prompt = engine.build_prompt(req)
    ids = {s: engine.tokenizer.convert_tokens_to_ids(s) for s in (t.pre, t.suf, t.mid) if s}
    # the user's sentinel strings are gone: each template sentinel appears exactly where the template puts it
    expected = {"incoder": {t.pre: 2, t.suf: 1}}.get(family, {t.pre: 1, t.suf: 1, t.mid: 1})
    assert {s: prompt.count(i) for s, i in ids.items()} == expected
    text = engine.tokenizer.decode(prompt)
    assert "x = 1" in text and "y = 2" in text
    if t.bos:
        assert prompt[0] == engine.tokenizer.bos_token_id


def test_greedy_matches_a_cacheless_reference(family_dir):
    _, directory = family_dir
    engine = HFEngine.from_pretrained(str(directory), device="cpu")
    req = InfillRequest(prefix="def add(a, b):\n    return ", suffix="\n", max_tokens=12)
    prompt = engine.build_prompt(req)
    ref = greedy_ref(engine.model, prompt, engine.stop_ids, 12)
    result = engine.infill(req)
    expected = engine.tokenizer.decode(ref, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert result.text == expected and result.candidates[0].tokens == len(ref)


def test_session_reuse_and_cancel(tmp_path):
    engine = HFEngine.from_pretrained(str(build(tmp_path / "m", "starcoder")), device="cpu")
    base = InfillRequest(prefix="def add(a, b):\n    return a", suffix="\n", max_tokens=6)
    first = engine.infill(InfillRequest(**{**base.__dict__, "session": "doc"}))
    longer = InfillRequest(**{**base.__dict__, "prefix": base.prefix + " +", "session": "doc"})
    second = engine.infill(longer)
    assert first.cached_tokens == 0 and second.cached_tokens > 0
    fresh = engine.infill(InfillRequest(**{**longer.__dict__, "session": None}))
    assert second.text == fresh.text  # reuse changes nothing but the work done
    gen = engine.stream_infill(InfillRequest(prefix="x = ", max_tokens=50, session="doc"))
    next(gen)
    gen.close()  # cancelled after one token: the session still answers correctly
    again = engine.infill(InfillRequest(**{**longer.__dict__}))
    assert again.text == fresh.text
    engine.drop_session("doc")
    assert "doc" not in engine.sessions


def test_stop_strings_and_sampling(tmp_path):
    engine = HFEngine.from_pretrained(str(build(tmp_path / "m", "qwen")), device="cpu")
    req = InfillRequest(prefix="for i in", suffix="", max_tokens=20, temperature=1.0, seed=3, n=3)
    a, b = engine.infill(req), engine.infill(req)
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]  # seeded
    stopped = engine.infill(InfillRequest(prefix="x", max_tokens=30, temperature=1.0, seed=0, stop=(" ",)))
    assert " " not in stopped.text


def test_infill_export_loads_as_hf_and_agrees_with_local(tmp_path, tiny_checkpoint, capsys):
    assert cli.main(["export", "--hf", str(tmp_path / "hf"), "--model", str(tiny_checkpoint)]) == 0
    hf = load.load_engine(str(tmp_path / "hf"), device="cpu")
    assert isinstance(hf, HFEngine) and hf.template.name == "infill-spm"
    local = load.load_engine(str(tiny_checkpoint), device="cpu")
    assert isinstance(local, LocalEngine) and isinstance(local, Engine)
    req = InfillRequest(prefix="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", max_tokens=10,
                        heal=False)
    assert hf.build_prompt(req) == local.build_prompt(req)[0]
    assert hf.infill(req).text == local.infill(req).text


def test_templates_and_errors(tmp_path):
    assert fim.get("codellama-spm").render("P", "S") == "<PRE> <SUF>S <MID> P"
    assert fim.get("codellama").render("P", "S") == "<PRE> P <SUF>S <MID>"
    assert fim.get("starcoder-spm").render("P", "S") == "<fim_prefix><fim_suffix>S<fim_middle>P"
    assert fim.get("incoder").render("P", "S") == "P<|mask:0|>S<|mask:1|><|mask:0|>"
    assert fim.clean("a<fim_pre<fim_prefix>fix>b", ["<fim_prefix>"]) == "ab"
    with pytest.raises(ValueError, match="--template"):
        fim.detect({"a": 0})
    with pytest.raises(ValueError, match="unknown FIM template"):
        fim.get("nope")
    with pytest.raises(ValueError, match="no downloads") as err:
        load.load_engine("someone/not-cached-model-xyz", device="cpu")
    assert "\n" not in str(err.value)
    directory = build(tmp_path / "m", "starcoder")
    with pytest.raises(ValueError, match="tokenizer lacks"):
        HFEngine.from_pretrained(str(directory), device="cpu", template="deepseek")
