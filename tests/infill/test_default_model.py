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
