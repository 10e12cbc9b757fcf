"""The built-in default model (`infill/default_model/`): shipped, small enough, loads, exports to transformers.

It is trained by scripts/default_model.sh (MODEL_CARD.md); these tests fail if it goes missing."""
import json

import torch

from infill import cli
from infill.engines import load
from infill.checkpoint import load_checkpoint

MAX_BYTES = 50 * 2**20


def test_default_model_is_shipped_and_found_without_a_name(monkeypatch):
    monkeypatch.delenv(load.ENV_VAR, raising=False)
    directory = load.DEFAULT_MODEL_DIR
    assert (directory / "config.json").is_file(), "infill/default_model/ is missing: see MODEL_CARD.md"
    assert load.resolve_model(None) == str(directory)
    assert sum(p.stat().st_size for p in directory.iterdir()) <= MAX_BYTES
    config = json.loads((directory / "config.json").read_text())
    assert config["model"]["n_layer"] >= 1 and config["infill"]["weights_dtype"] == "bfloat16"


def test_default_model_loads_in_transformers_with_the_same_logits(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert cli.main(["export", "--hf", str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    model, tok = load_checkpoint(load.DEFAULT_MODEL_DIR)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def mean(xs):\n    return sum(xs) / len(xs)\n"
    ids = tok.encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    tokens = torch.tensor([ids])
    with torch.no_grad():
        diff = (model(tokens) - hf(tokens).logits).abs().max().item()
    assert diff <= 1e-3


MEAN = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return t"
PROMPTS = [  # (prefix, suffix): ends in a word, in a space after `return` and `= `, on a blank indented line
    (MEAN, "\n"),
    ("def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return ", "\n"),
    ("import os\n\n\ndef home():\n    path = ", "\n    return path\n"),
    ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        ", "\n"),
    ("for i in range(10):\n    print(i", ")\n"),
]


def test_transformers_engine_decodes_as_the_local_engine(tmp_path, capsys):
    """The one decode loop: the default model exported with `infill export --hf` and run by the
    transformers engine gives the local engine's completions token for token (greedy, drafts on, with
    healing), its seeded samples (n > 1), and the same through a session whose prefix is reused."""
    from infill.engines import GenerationConfig, InfillRequest
    from infill.engines.hf import HFEngine
    from infill.engines.local import LocalEngine

    assert cli.main(["export", "--hf", str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    local, hf = load.load_engine(None, device="cpu"), load.load_engine(str(tmp_path / "hf"), device="cpu")
    assert isinstance(local, LocalEngine) and isinstance(hf, HFEngine)
    configs = (GenerationConfig(max_tokens=16), GenerationConfig(max_tokens=6, temperature=0.8, seed=5, n=3))
    for prefix, suffix in PROMPTS:
        for config in configs:
            req = InfillRequest(prefix, suffix, config, ext=".py")
            want, got = local.infill(req), hf.infill(req)
            assert hf.healed_prompt(req)[0] == local.build_prompt(req)[0]
            assert [(c.text, c.tokens, c.finish_reason) for c in got.candidates] == \
                [(c.text, c.tokens, c.finish_reason) for c in want.candidates], (prefix, config)
    # typing through a session: each engine reuses its cache and still gives the fresh answer
    typed = [PROMPTS[1][0] + tail for tail in ("", "t", "tot", "tota ")]
    for n, config in ((1, configs[0]), (3, configs[1])):
        for i, prefix in enumerate(typed):
            req = InfillRequest(prefix, "\n", config, ext=".py", session=f"doc{n}")
            fresh = local.infill(InfillRequest(prefix, "\n", config, ext=".py"))
            want, got = local.infill(req), hf.infill(req)
            assert [c.text for c in got.candidates] == [c.text for c in want.candidates] \
                == [c.text for c in fresh.candidates], prefix
            assert got.cached_tokens == want.cached_tokens and (i == 0 or want.cached_tokens > 0)
