"""HFEngine on tiny random transformers models, one per FIM template family; nothing is downloaded."""
import json
import math

import pytest
import torch

from infill import cli
from infill.engines import CannotScore, Engine, GenerationConfig, InfillRequest, load
from infill.engines import templates as fim
from infill.engines.local import LocalEngine
from infill.engines.hf import HFEngine

from hf_models import FAMILIES, build


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
    req = InfillRequest(f"x = 1{t.pre}{t.suf}\n", f"y = 2{t.mid or t.pre}\n", GenerationConfig(max_tokens=4))
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
    req = InfillRequest("def add(a, b):\n    return ", "\n", GenerationConfig(max_tokens=12))
    prompt = engine.build_prompt(req)
    ref = greedy_ref(engine.model, prompt, engine.stop_ids, 12)
    result = engine.infill(req)
    expected = engine.tokenizer.decode(ref, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert result.text == expected and result.candidates[0].tokens == len(ref)


@torch.inference_mode()
def logprob_ref(model, prompt, cont):
    """Log-probability of `cont` after `prompt` by one plain forward pass."""
    lp = torch.log_softmax(model(input_ids=torch.tensor([prompt + cont])).logits[0].float(), -1)
    return sum(float(lp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))


def test_scores_match_a_plain_forward(family_dir):
    family, directory = family_dir
    engine = HFEngine.from_pretrained(str(directory), device="cpu")
    assert {"infill", "score", "sampled_logprobs", "text_score"} <= engine.capabilities
    prompt = engine.build_prompt(InfillRequest("def f(", "):\n"))
    middle = engine.tokenizer("a, b", add_special_tokens=False)["input_ids"]
    end = engine.tokenizer.convert_tokens_to_ids(engine.template.stops[0])
    assert math.isclose(engine.score("def f(", "):\n", "a, b"), logprob_ref(engine.model, prompt, middle + [end]),
                        rel_tol=1e-4)
    assert math.isclose(engine.score("def f(", "):\n", "a, b", end=False), logprob_ref(engine.model, prompt, middle),
                        rel_tol=1e-4)
    text = "for i in range(10):\n    print(i)\n"
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    start = engine.tokenizer.bos_token_id if engine.tokenizer.bos_token_id is not None else engine.tokenizer.eos_token_id
    logprob, n = engine.score_text(text)
    assert n == len(ids) and math.isclose(logprob, logprob_ref(engine.model, [start], ids), rel_tol=1e-4)
    pieces, fills = ["x = ", " + ", "\n"], [["a", "a"], ["b", "b"]]
    if family != "incoder":
        assert "multi_hole_score" not in engine.capabilities and engine.unavailable["multi_hole_score"]
        with pytest.raises(CannotScore):
            engine.score_holes(pieces, fills)
        return
    assert "multi_hole_score" in engine.capabilities and engine.max_holes == 1
    got = engine.score_holes(pieces[1:], [f[:1] for f in fills])
    tok = engine.tokenizer
    m0, m1, eom = (tok.convert_tokens_to_ids(t) for t in ("<|mask:0|>", "<|mask:1|>", "<|endofmask|>"))
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = enc(" + ") + [m0] + enc("\n") + [m1, m0]
    for value, fill in zip(got, ["a", "b"]):
        assert math.isclose(value, logprob_ref(engine.model, prompt, enc(fill) + [eom]), rel_tol=1e-4)
    with pytest.raises(CannotScore):
        engine.score_holes(pieces, fills)  # two holes need three mask tokens


def test_session_reuse_and_cancel(tmp_path):
    engine = HFEngine.from_pretrained(str(build(tmp_path / "m", "starcoder")), device="cpu")
    base = InfillRequest("def add(a, b):\n    return a", "\n", GenerationConfig(max_tokens=6))
    first = engine.infill(InfillRequest(**{**base.__dict__, "session": "doc"}))
    longer = InfillRequest(**{**base.__dict__, "prefix": base.prefix + " +", "session": "doc"})
    second = engine.infill(longer)
    assert first.cached_tokens == 0 and second.cached_tokens > 0
    fresh = engine.infill(InfillRequest(**{**longer.__dict__, "session": None}))
    assert second.text == fresh.text  # reuse changes nothing but the work done
    gen = engine.stream_infill(InfillRequest("x = ", config=GenerationConfig(max_tokens=50), session="doc"))
    next(gen)
    gen.close()  # cancelled after one token: the session still answers correctly
    again = engine.infill(InfillRequest(**{**longer.__dict__}))
    assert again.text == fresh.text
    engine.drop_session("doc")
    assert "doc" not in engine.sessions


def test_stop_strings_and_sampling(tmp_path):
    engine = HFEngine.from_pretrained(str(build(tmp_path / "m", "qwen")), device="cpu")
    req = InfillRequest("for i in", "", GenerationConfig(max_tokens=20, temperature=1.0, seed=3, n=3))
    a, b = engine.infill(req), engine.infill(req)
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]  # seeded
    stopped = engine.infill(InfillRequest("x", config=GenerationConfig(max_tokens=30, temperature=1.0, seed=0),
                                          stop=(" ",)))
    assert " " not in stopped.text


def test_infill_export_loads_as_hf_and_agrees_with_local(tmp_path, tiny_checkpoint, capsys):
    assert cli.main(["export", "--hf", str(tmp_path / "hf"), "--model", str(tiny_checkpoint)]) == 0
    hf = load.load_engine(str(tmp_path / "hf"), device="cpu")
    assert isinstance(hf, HFEngine) and hf.template.name == "infill-spm"
    local = load.load_engine(str(tiny_checkpoint), device="cpu")
    assert isinstance(local, LocalEngine) and isinstance(local, Engine)
    req = InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", GenerationConfig(max_tokens=10),
                        heal=False)
    assert hf.build_prompt(req) == local.build_prompt(req)[0]
    assert hf.infill(req).text == local.infill(req).text
    # with the file header and token healing at the cursor, greedy and sampled, as the editor asks
    for config in (GenerationConfig(max_tokens=10), GenerationConfig(max_tokens=6, temperature=0.8, seed=3, n=4)):
        req = InfillRequest("def add(a, b):\n    return a", "\n", config, ext=".py")
        assert hf.healed_prompt(req)[0] == local.build_prompt(req)[0]
        blank = InfillRequest("def add(a, b):\n    if a:\n        ", "\n", config, ext=".py")  # indentation
        assert hf.healed_prompt(blank) == (local.build_prompt(blank)[0], " ")
        assert hf.healed_prompt(req)[1].encode() == local.build_prompt(req)[1] != b""
        got, want = hf.infill(req), local.infill(req)
        assert [c.text for c in got.candidates] == [c.text for c in want.candidates]
        assert all(math.isclose(g.logprob, w.logprob, rel_tol=1e-3, abs_tol=1e-4)
                   for g, w in zip(got.candidates, want.candidates))
    # the same weights score the same: one hole, several holes (InCoder), a whole document
    assert hf.capabilities == local.capabilities and hf.max_holes == local.max_holes > 1
    assert math.isclose(hf.score("def f(", "):\n", "a, b"), local.score("def f(", "):\n", "a, b"), rel_tol=1e-4)
    pieces, fills = ["x = ", " + ", "\n"], [["a", "a"], ["bb", "bb"]]
    for h, lo in zip(hf.score_holes(pieces, fills), local.score_holes(pieces, fills)):
        assert math.isclose(h, lo, rel_tol=1e-4)
    assert math.isclose(hf.score_text("x = 1\n")[0], local.score_text("x = 1\n")[0], rel_tol=1e-4)


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


ANNOTATED = '''\
def mean(values: list[float], start: int = 0) -> float:
    total = start
    for value in values:
        total += value
    return total / len(values)


def label(count: int, word: str) -> str:
    suffix = "" if count == 1 else "s"
    return f"{count} {word}{suffix}"
'''


def test_eval_types_names_and_middle_bpb_on_the_hf_engine(tmp_path, tiny_checkpoint, capsys):
    """The evaluations that score run on a transformers model too: the export of the tiny checkpoint
    gives the local engine's figures (same weights, greedy)."""
    assert cli.main(["export", "--hf", str(tmp_path / "hf"), "--model", str(tiny_checkpoint)]) == 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.py").write_text(ANNOTATED)
    figures = {}
    for model in (str(tiny_checkpoint), str(tmp_path / "hf")):
        for name, extra in (("types", ["--data", str(tmp_path / "d"), "--limit", "6"]),
                            ("names", ["--data", str(tmp_path / "d"), "--limit", "3"]),
                            ("middle-bpb", ["--limit", "2"])):
            out = tmp_path / f"{name}-{len(figures)}"
            assert cli.main(["eval", name, "--model", model, *extra, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
            summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            rows = (out / ("tasks.jsonl" if name == "middle-bpb" else "items.jsonl")).read_text().splitlines()
            figures[model, name] = (summary, [json.loads(r) for r in rows])
    hf, local = str(tmp_path / "hf"), str(tiny_checkpoint)
    assert figures[hf, "types"][0]["engine"] == "HFEngine" and figures[hf, "middle-bpb"][0]["engine"] == "HFEngine"
    for name in ("types", "names"):
        assert [r["middle"] for r in figures[hf, name][1]] == [r["middle"] for r in figures[local, name][1]]
        assert figures[hf, name][0]["exact"] == figures[local, name][0]["exact"]
        assert figures[hf, name][0]["items"] == (6 if name == "types" else 2)
    for h, lo in zip(figures[hf, "middle-bpb"][1], figures[local, "middle-bpb"][1]):
        assert math.isclose(h["bits"], lo["bits"], rel_tol=1e-3)
