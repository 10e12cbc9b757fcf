import json
import shutil

import pytest
import torch

from infill.checkpoint import CheckpointError, export_hf, load_checkpoint, save_checkpoint
from infill.config import ModelConfig
from infill.model import Transformer


def test_save_load_round_trip(tiny_checkpoint, tiny_model):
    model, tok = load_checkpoint(tiny_checkpoint)
    tokens = torch.randint(0, len(tok), (1, 20))
    with torch.no_grad():
        assert torch.equal(model(tokens), tiny_model(tokens))
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tying survives loading


@pytest.mark.parametrize("tie", [True, False])
def test_hf_export_parity(tmp_path, tiny_tokenizer, tie):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(5)
    model = Transformer(ModelConfig.from_preset("test-tiny", vocab_size=len(tiny_tokenizer), tie_embeddings=tie,
                                                n_kv_head=1)).eval()
    with torch.no_grad():  # non-trivial norm weights, so a misnamed norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "ckpt", model, tiny_tokenizer)
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    text = "def add(a, b):\n    return a + b\n" * 8
    tokens = torch.tensor([tiny_tokenizer.encode(text)])
    with torch.no_grad():
        diff = (hf(tokens).logits - model(tokens)).abs().max().item()
    assert diff <= 1e-4
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.encode(text) == tiny_tokenizer.encode(text)
    assert hf_tok.convert_tokens_to_ids("<|mask:0|>") == tiny_tokenizer.mask_id(0)
    assert hf_tok.convert_tokens_to_ids("<|fim_middle|>") == tiny_tokenizer.fim_middle_id
    assert hf_tok.eos_token == "<|endoftext|>"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_and_malformed_files_name_the_file(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nope")
    for name, damage, message in [
        ("config.json", None, "config.json: missing"),
        ("config.json", "{", "config.json: not an infill model config"),
        ("config.json", json.dumps({"model": {"dim": 3}}), "config.json: not an infill model config"),
        ("model.safetensors", None, "model.safetensors: missing"),
        ("model.safetensors", "garbage", "model.safetensors: unreadable"),
        ("tokenizer.json", None, "tokenizer.json: tokenizer file not found"),
        ("tokenizer.json", "[]", "tokenizer.json: not a valid"),
    ]:
        d = _copy(tiny_checkpoint, tmp_path / f"{name}-{damage is None}-{len(damage or '')}")
        if damage is None:
            (d / name).unlink()
        else:
            (d / name).write_text(damage)
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(d)
        assert "\n" not in str(info.value)


def test_weights_that_do_not_match_the_config(tmp_path, tiny_checkpoint):
    d = _copy(tiny_checkpoint, tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["n_layer"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_checkpoint(d)
    cfg["model"]["n_layer"], cfg["model"]["dim"] = 2, 128
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(d)


def test_copy_checkpoint_in_bfloat16_halves_the_weights_and_keeps_the_model(tmp_path, tiny_checkpoint, tiny_model):
    from infill.checkpoint import WEIGHTS_FILE, copy_checkpoint

    out = copy_checkpoint(tiny_checkpoint, tmp_path / "bf16", dtype="bfloat16")
    size, full = (out / WEIGHTS_FILE).stat().st_size, (tiny_checkpoint / WEIGHTS_FILE).stat().st_size
    assert size < 0.55 * full
    model, tok = load_checkpoint(out)  # loaded back as float32
    assert model.lm_head.weight.dtype == torch.float32
    assert (out / "tokenizer.json").read_text() == (tiny_checkpoint / "tokenizer.json").read_text()
    assert json.loads((out / "config.json").read_text())["infill"]["weights_dtype"] == "bfloat16"
    tokens = torch.randint(0, len(tok), (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = tiny_model(tokens), model(tokens)
    assert not torch.equal(ref, got)  # the weights really were rounded
    assert (ref - got).abs().max() < 0.05 * ref.abs().max()
    with pytest.raises(CheckpointError, match="source checkpoint"):
        copy_checkpoint(out, out, dtype="float32")
    with pytest.raises(CheckpointError, match="floating-point"):
        copy_checkpoint(tiny_checkpoint, tmp_path / "x", dtype="int8")
