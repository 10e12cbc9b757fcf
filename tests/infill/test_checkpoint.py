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
        ("config.json", "{", "config.json: not valid JSON"),
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


# --- a model directory is untrusted: its sizes and their memory are checked before loading -------------

def _with_config(tmp_path, tiny_checkpoint, name, **changes):
    d = _copy(tiny_checkpoint, tmp_path / name)
    data = json.loads((d / "config.json").read_text())
    data["model"].update(changes)
    (d / "config.json").write_text(json.dumps(data))
    (d / "model.safetensors").unlink()  # the check must come before any weight is read
    return d


def test_an_oversized_context_is_refused_before_loading(tmp_path, tiny_checkpoint):
    d = _with_config(tmp_path, tiny_checkpoint, "long", max_seq_len=2**22)  # 0.5 -> 4.1 GB before the fix
    with pytest.raises(CheckpointError, match=r"config.json: .*max_seq_len must be an integer in 1\.\.1048576, "
                                              r"got 4194304") as info:
        load_checkpoint(d)
    assert "\n" not in str(info.value)


def test_a_model_larger_than_the_machine_is_refused_before_loading(tmp_path, tiny_checkpoint):
    # Within every bound, but 1024 layers of width 65536: about 200 TB of weights.
    d = _with_config(tmp_path, tiny_checkpoint, "huge", dim=65536, n_head=512, n_kv_head=512, n_layer=1024,
                     intermediate_size=2**18)
    with pytest.raises(CheckpointError, match=r"config.json: the model needs about \d+\.\d GiB .* but only "
                                              r"\d+\.\d GiB is available") as info:
        load_checkpoint(d)
    assert "\n" not in str(info.value)


def test_load_bytes_counts_what_loading_and_a_full_context_allocate():
    from infill.config import ROPE_PEAK
    from infill.model import KVCache, rope_table

    config = ModelConfig.from_preset("test-tiny")
    model = Transformer(config)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights counted once
    cos, sin = rope_table(config.max_seq_len, config.head_dim, config.rope_theta, "cpu", torch.float32)
    cache = KVCache(config, 1, config.max_seq_len)
    kv = sum(t.numel() * t.element_size() for t in (cache.k, cache.v))
    rope = ROPE_PEAK / 2 * (cos.numel() + sin.numel()) * 4
    assert config.load_bytes(4) == weights + rope + kv


def test_check_fits():
    from infill.config import check_fits

    check_fits(2**30, 2**31, "m")
    check_fits(2**40, None, "m")  # unknown memory: no check
    with pytest.raises(ValueError, match="m needs about 2.0 GiB .* but only 1.0 GiB is available"):
        check_fits(2**31, 2**30, "m")


def test_hugging_face_directories_are_checked_too(tmp_path):
    from infill.config import hf_load_bytes
    from infill.engines import load_engine

    llama = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
             "max_position_embeddings": 512, "tie_word_embeddings": False}
    config = ModelConfig(vocab_size=1000, dim=64, n_layer=2, n_head=4, n_kv_head=2, intermediate_size=160,
                         max_seq_len=512)
    rope = int(3.5 * 512 * 16 * 4)  # infill builds RoPE tables, transformers computes them per call
    norms = 2 * 2 * 64 + 64
    assert hf_load_bytes(llama) == config.load_bytes(4) - rope - 4 * norms
    for changes, message in [({"max_position_embeddings": 2**22}, "max_position_embeddings must be an integer"),
                             ({"hidden_size": 65536, "num_hidden_layers": 1024, "intermediate_size": 2**18},
                              "the model needs about")]:
        d = tmp_path / next(iter(changes))
        d.mkdir()
        (d / "config.json").write_text(json.dumps({**llama, **changes}))
        with pytest.raises(CheckpointError, match=message) as info:
            load_engine(str(d), device="cpu")
        assert "\n" not in str(info.value) and str(d) in str(info.value)
