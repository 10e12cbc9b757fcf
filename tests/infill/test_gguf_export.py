"""`infill export --gguf`: what gguf's own reader finds in the file, against the safetensors checkpoint."""
import json

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from infill import cli
from infill.gguf_export import export_gguf
from infill.tokenizer import CodeTokenizer

from support import stdlib_texts


def _read(path):
    reader = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {}
    for t in reader.tensors:
        data = np.asarray(t.data)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, t.tensor_type)
        tensors[t.name] = (t.tensor_type, data.astype(np.float32).reshape([int(x) for x in reversed(t.shape)]))
    return meta, tensors


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("gguf")
    files = {t: export_gguf(tiny_checkpoint, out / f"m-{t}.gguf", type=t)[0] for t in ("f32", "f16", "q8_0")}
    return files, load_file(str(tiny_checkpoint / "model.safetensors"))


def _rope_interleaved(x, pos, theta):
    """llama.cpp's `llama` RoPE (GGML's normal mode): adjacent pairs (2i, 2i+1) rotated by freq i."""
    d = x.shape[-1]
    freq = theta ** (-np.arange(0, d, 2) / d) * pos
    c, s = np.cos(freq), np.sin(freq)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out


def _rope_halves(x, pos, theta):
    """Hugging Face Llama's RoPE: pairs (i, i + D/2)."""
    d = x.shape[-1]
    freq = theta ** (-np.arange(0, d, 2) / d) * pos
    c, s = np.cos(np.concatenate([freq, freq])), np.sin(np.concatenate([freq, freq]))
    rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * c + rot * s


def test_metadata(exported, tiny_checkpoint, tiny_tokenizer):
    files, _ = exported
    meta, _ = _read(files["f32"])
    config = json.loads((tiny_checkpoint / "config.json").read_text())["model"]
    assert meta["general.architecture"] == "llama"
    expect = {"llama.context_length": config["max_seq_len"], "llama.embedding_length": config["dim"],
              "llama.block_count": config["n_layer"], "llama.feed_forward_length": config["intermediate_size"],
              "llama.attention.head_count": config["n_head"], "llama.attention.head_count_kv": config["n_kv_head"],
              "llama.rope.dimension_count": config["dim"] // config["n_head"], "llama.vocab_size": config["vocab_size"]}
    assert {k: meta[k] for k in expect} == expect
    assert meta["llama.rope.freq_base"] == pytest.approx(config["rope_theta"])
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config["norm_eps"])
    # the tokenizer, against tokenizer.json itself
    saved = json.loads((tiny_checkpoint / "tokenizer.json").read_text())
    by_id = {i: t for t, i in saved["model"]["vocab"].items()} | {a["id"]: a["content"] for a in saved["added_tokens"]}
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "deepseek-coder"
    assert meta["tokenizer.ggml.tokens"] == [by_id[i] for i in range(len(by_id))]
    assert meta["tokenizer.ggml.merges"] == [" ".join(m) for m in saved["model"]["merges"]]
    types = meta["tokenizer.ggml.token_type"]
    specials = {a["id"] for a in saved["added_tokens"]}
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == specials
    assert set(types) == {gguf.TokenType.CONTROL, gguf.TokenType.NORMAL}
    ids = {a["content"]: a["id"] for a in saved["added_tokens"]}
    assert meta["tokenizer.ggml.fim_pre_token_id"] == ids["<|fim_prefix|>"]
    assert meta["tokenizer.ggml.fim_suf_token_id"] == ids["<|fim_suffix|>"]
    assert meta["tokenizer.ggml.fim_mid_token_id"] == ids["<|fim_middle|>"]
    assert meta["tokenizer.ggml.eot_token_id"] == ids["<|endofmask|>"]
    assert meta["tokenizer.ggml.eos_token_id"] == ids["<|endoftext|>"]
    assert meta["tokenizer.ggml.add_bos_token"] is False


def test_f32_tensors_are_exact_and_attention_is_unchanged(exported, tiny_checkpoint):
    files, state = exported
    _, tensors = _read(files["f32"])
    assert "output.weight" not in tensors  # tied: llama.cpp uses the embedding, as we do
    assert np.array_equal(tensors["token_embd.weight"][1], state["model.embed_tokens.weight"])
    assert np.array_equal(tensors["output_norm.weight"][1], state["model.norm.weight"])
    for mine, theirs in [("mlp.down_proj", "ffn_down"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                         ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                         ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")]:
        for layer in range(2):
            assert np.array_equal(tensors[f"blk.{layer}.{theirs}.weight"][1],
                                  state[f"model.layers.{layer}.{mine}.weight"]), (mine, layer)
    # q and k are reordered for llama.cpp's RoPE: the attention scores must come out the same
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())["model"]
    d, hq, hkv = cfg["dim"] // cfg["n_head"], cfg["n_head"], cfg["n_kv_head"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, cfg["dim"])).astype(np.float64)
    for layer in range(2):
        wq, wk = (state[f"model.layers.{layer}.self_attn.{n}_proj.weight"].astype(np.float64) for n in "qk")
        gq, gk = (tensors[f"blk.{layer}.attn_{n}.weight"][1].astype(np.float64) for n in "qk")
        assert not np.array_equal(wq, gq)
        for pq, pk in [(3, 1), (17, 5)]:
            ours = [_rope_halves((x[0] @ wq.T).reshape(hq, d)[h], pq, cfg["rope_theta"])
                    @ _rope_halves((x[1] @ wk.T).reshape(hkv, d)[h * hkv // hq], pk, cfg["rope_theta"])
                    for h in range(hq)]
            llama = [_rope_interleaved((x[0] @ gq.T).reshape(hq, d)[h], pq, cfg["rope_theta"])
                     @ _rope_interleaved((x[1] @ gk.T).reshape(hkv, d)[h * hkv // hq], pk, cfg["rope_theta"])
                     for h in range(hq)]
            np.testing.assert_allclose(llama, ours, rtol=1e-9, atol=1e-12)


def test_f16_within_rounding_and_q8_0_within_quantisation_error(exported):
    files, _ = exported
    _, f32 = _read(files["f32"])
    _, f16 = _read(files["f16"])
    _, q8 = _read(files["q8_0"])
    assert f16.keys() == q8.keys() == f32.keys()
    for name, (kind, ref) in f32.items():
        if ref.ndim == 1:  # norms stay f32 in every type
            assert f16[name][0] == q8[name][0] == gguf.GGMLQuantizationType.F32
            assert np.array_equal(f16[name][1], ref) and np.array_equal(q8[name][1], ref)
            continue
        assert f16[name][0] == gguf.GGMLQuantizationType.F16
        assert q8[name][0] == gguf.GGMLQuantizationType.Q8_0
        err16 = np.abs(f16[name][1] - ref)
        assert (err16 <= np.abs(ref) * 2.0 ** -11 + 2.0 ** -24).all(), name
        assert err16.max() > 0  # really rounded
        blocks = ref.reshape(-1, 32)
        step = np.abs(blocks).max(1, keepdims=True) / 127  # one q8_0 step in each block of 32
        err8 = np.abs(q8[name][1].reshape(-1, 32) - blocks)
        assert (err8 <= 0.6 * step + 1e-12).all(), name
        assert err8.max() > 0.1 * step.max()
    sizes = {t: files[t].stat().st_size for t in files}
    assert sizes["q8_0"] < sizes["f16"] < sizes["f32"]


def test_a_version_1_tokenizer_is_exported_with_a_warning(tmp_path, tiny_model):
    from infill.checkpoint import save_checkpoint

    old = CodeTokenizer.train(stdlib_texts(), 1024, version=1)
    assert old.version == 1
    save_checkpoint(tmp_path / "old", tiny_model, old)
    _, warnings = export_gguf(tmp_path / "old", tmp_path / "old.gguf")
    assert len(warnings) == 1 and "version 1" in warnings[0]
    meta, _ = _read(tmp_path / "old.gguf")
    assert meta["infill.tokenizer_version"] == 1


def test_cli(tmp_path, tiny_checkpoint, capsys):
    assert cli.main(["export", "--gguf", str(tmp_path / "a.gguf"), "--type", "q8_0",
                     "--model", str(tiny_checkpoint)]) == 0
    assert (tmp_path / "a.gguf").stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp"))
    for argv, says in [(["--hf", str(tmp_path / "h"), "--type", "f16"], "--type applies to --gguf"),
                       (["--gguf", str(tmp_path), "--type", "f16"], "is a directory"),
                       (["--gguf", str(tmp_path / "b.gguf"), "--hf", str(tmp_path / "h")], "give one of")]:
        capsys.readouterr()
        assert cli.main(["export", *argv, "--model", str(tiny_checkpoint)]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
