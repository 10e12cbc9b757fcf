"""Model directories are someone else's files: a damaged or hostile one is refused with one line.

Each case is a finding of the second review (issue 28): a malformed config.json (a number that
overflows to infinity, nesting 100,000 deep) gave a traceback; a Hugging Face directory with
`auto_map` asked "run the custom code? [y/N]" and ran it on `y`; a pickle-only `.bin` gave a torch
traceback; a tokenizer.json regex that backtracks (`(a+)+b`) ran on user text.
"""
import json
import shutil

import pytest

from infill import cli
from infill.engines import load

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(autouse=True)
def no_default_model(monkeypatch, tmp_path):
    monkeypatch.delenv("INFILL_MODEL", raising=False)
    monkeypatch.setattr(load, "DEFAULT_MODEL_DIR", tmp_path / "no-default")


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "demo.py"
    path.write_text("def add(a, b):\n    return \n")
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint exported as a Hugging Face Llama directory (read-only: copy to damage)."""
    from infill.checkpoint import export_hf

    return export_hf(tiny_checkpoint, tmp_path_factory.mktemp("hf") / "tiny")


def _one_line_error(capsys, args, *needles):
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("infill: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _damaged(src, dst, edit):
    shutil.copytree(src, dst)
    text = (dst / "config.json").read_text()
    (dst / "config.json").write_text(edit(text))
    return dst


def _number(key, value):
    """An edit of config.json's text that sets `key` to the literal `value` (JSON allows 1e999999)."""
    def edit(text):
        data = json.loads(text)
        inner = data["model"] if "model" in data else data
        inner[key] = "@@"
        return json.dumps(data).replace('"@@"', value)
    return edit


INFILL_CASES = {
    "dim_overflows": _number("dim", "1e999999"),
    "rope_theta_overflows": _number("rope_theta", "1e999999"),
    "norm_eps_overflows": _number("norm_eps", "1e999999"),
    "rope_theta_nan": _number("rope_theta", "NaN"),
    "tie_embeddings_number": _number("tie_embeddings", "1e999999"),
    "nested_100k_deep": lambda text: text[:-1] + ', "x": ' + DEEP + "}",
    "model_nested_100k_deep": lambda text: '{"model": ' + DEEP + "}",
}


@pytest.mark.parametrize("case", INFILL_CASES)
def test_malformed_infill_config_is_a_one_line_error(case, tmp_path, tiny_checkpoint, source, capsys):
    d = _damaged(tiny_checkpoint, tmp_path / "ckpt", INFILL_CASES[case])
    _one_line_error(capsys, ["complete", f"{source}:2:12", "--model", str(d)], "config.json")


HF_CASES = {
    "hidden_size_overflows": _number("hidden_size", "1e999999"),
    "rope_theta_overflows": _number("rope_theta", "1e999999"),
    "max_position_embeddings_overflows": _number("max_position_embeddings", "1e999999"),
    "rms_norm_eps_infinity": _number("rms_norm_eps", "-Infinity"),
    "nested_100k_deep": lambda text: text.rstrip()[:-1] + ', "x": ' + DEEP + "}",
}


@pytest.mark.parametrize("case", HF_CASES)
def test_malformed_hf_config_is_a_one_line_error(case, tmp_path, hf_dir, source, capsys):
    d = _damaged(hf_dir, tmp_path / "hf", HF_CASES[case])
    _one_line_error(capsys, ["complete", f"{source}:2:12", "--model", str(d)], "config.json")


EVIL = """import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
class EvilConfig(LlamaConfig):
    model_type = "evil"
class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_custom_code_in_a_hf_directory_is_refused_and_never_runs(where, tmp_path, hf_dir, source, capsys,
                                                                  monkeypatch):
    """The review answered transformers' "run the custom code? [y/N]" with `y`, and the code ran."""
    d = shutil.copytree(hf_dir, tmp_path / "hf")
    marker = tmp_path / "ran"
    (d / "evil.py").write_text(EVIL.format(marker=str(marker)))
    data = json.loads((d / where).read_text())
    if where == "config.json":
        data.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig",
                                                 "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    else:
        data.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "evil.EvilTokenizer"]})
    (d / where).write_text(json.dumps(data))
    monkeypatch.setattr("builtins.input", lambda *a: "y")  # a user who says yes to the prompt
    _one_line_error(capsys, ["complete", f"{source}:2:12", "--model", str(d)], "custom code", where)
    assert not marker.exists()


def test_pickle_only_weights_are_refused(tmp_path, hf_dir, source, capsys):
    """A directory with `pytorch_model.bin` and no safetensors: one line, no unpickling."""
    import torch
    from safetensors.torch import load_file

    d = shutil.copytree(hf_dir, tmp_path / "hf")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    _one_line_error(capsys, ["complete", f"{source}:2:12", "--model", str(d)], "pytorch_model.bin", "safetensors")


def _backtracking(split):
    """A tokenizer.json edit: a regex that backtracks exponentially (`(a+)+b`) where infill's own
    pre-split was, or in a normalizer before it."""
    def edit(text):
        data = json.loads(text)
        evil = {"type": "Split", "pattern": {"Regex": "(a+)+b"}, "behavior": "Isolated", "invert": False}
        if split:
            data["pre_tokenizer"]["pretokenizers"][0] = evil
        else:
            data["normalizer"] = {"type": "Replace", "pattern": {"Regex": "(a+)+b"}, "content": "b"}
        return json.dumps(data)
    return edit


@pytest.mark.parametrize("where", ["pre_tokenizer", "normalizer"])
def test_an_infill_checkpoint_runs_only_infills_own_pre_split(where, tmp_path, tiny_checkpoint, source, capsys):
    """A checkpoint's tokenizer.json is refused unless it splits text with one of infill's own
    pre-tokenizers (`infill.tokenizer.PRE_SPLITS`) and normalizes nothing: its regexes run on user text."""
    d = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    path = d / "tokenizer.json"
    path.write_text(_backtracking(where == "pre_tokenizer")(path.read_text()))
    source.write_text("a" * 40 + "\n")
    _one_line_error(capsys, ["complete", f"{source}:1:41", "--model", str(d), "--max-tokens", "2"],
                    "tokenizer.json", where.replace("_", "-"))


@pytest.fixture(scope="module")
def backtracking_hf_dir(tmp_path_factory):
    """A Hugging Face directory whose tokenizer splits with `(a+)+b` before its byte-level step."""
    from tests.hf_models import build

    d = build(tmp_path_factory.mktemp("hf-regex") / "m", "starcoder")
    data = json.loads((d / "tokenizer.json").read_text())
    evil = {"type": "Split", "pattern": {"Regex": "(a+)+b"}, "behavior": "Isolated", "invert": False}
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [evil, data["pre_tokenizer"]]}
    (d / "tokenizer.json").write_text(json.dumps(data))
    return d


def test_a_brought_tokenizer_that_panics_costs_one_request_and_one_line(backtracking_hf_dir):
    """25 `a`s pass onig's retry limit: tokenizers panics (a BaseException) and the request fails
    with one ValueError line; the next request is served."""
    from infill.engines import GenerationConfig, InfillRequest
    from infill.engines.hf import HFEngine

    engine = HFEngine.from_pretrained(str(backtracking_hf_dir))
    with pytest.raises(ValueError, match="tokenizer failed on this text") as info:
        engine.infill(InfillRequest("x = '" + "a" * 25, "'\n", GenerationConfig(max_tokens=2)))
    assert "\n" not in str(info.value)
    assert engine.infill(InfillRequest("def f(x):\n    return ", "\n", GenerationConfig(max_tokens=2))).candidates


def test_a_brought_tokenizer_that_backtracks_for_long_is_cut_off_at_its_budget(backtracking_hf_dir):
    """Runs of 19 `a`s stay under the retry limit but take ~20 ms each: 400 of them hold the regex
    engine for seconds. The request gets a one-line timeout at the budget; the next one is served
    while the slow call finishes on its own thread."""
    from infill.engines import GenerationConfig, InfillRequest
    from infill.engines.budget import TokenizerTimeout
    from infill.engines.hf import HFEngine

    engine = HFEngine.from_pretrained(str(backtracking_hf_dir))
    engine.tokenizer.budget_s = 1.0
    with pytest.raises(TokenizerTimeout, match="took over 1 s"):
        engine.infill(InfillRequest(("a" * 19 + " ") * 400, "\n", GenerationConfig(max_tokens=2)))
    engine.tokenizer.budget_s = 60.0  # a roomy budget for the ordinary request on a loaded machine
    assert engine.infill(InfillRequest("def f(x):\n    return ", "\n", GenerationConfig(max_tokens=2))).candidates


def test_calls_left_behind_are_bounded_and_counted_down():
    """Two calls past their budget still running: the next fails at once (no third thread); once
    they finish, calls run again."""
    import threading

    from infill.engines.budget import MAX_LEFT_BEHIND, TimedTokenizer, TokenizerTimeout

    release = threading.Event()

    class Stuck:
        def __call__(self, text, **kw):
            if text == "stuck":
                release.wait(60)
            return {"input_ids": [len(text)]}

        def __len__(self):
            return 7

    tok = TimedTokenizer(Stuck(), budget_s=0.05)
    for _ in range(MAX_LEFT_BEHIND):
        with pytest.raises(TokenizerTimeout, match="took over"):
            tok("stuck")
    assert tok.left_behind == MAX_LEFT_BEHIND and len(tok) == 7
    with pytest.raises(TokenizerTimeout, match="still busy"):
        tok("fine")
    release.set()
    tok.budget_s = 60.0
    for _ in range(600):
        if tok.left_behind == 0:
            break
        threading.Event().wait(0.05)
    assert tok.left_behind == 0 and tok("fine") == {"input_ids": [4]}
