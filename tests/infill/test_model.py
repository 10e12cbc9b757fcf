import pytest
import torch

from infill.attention import attention, attention_ref, cu_seqlens_from_doc_ids
from infill.config import PRESETS, ModelConfig
from infill.model import KVCache, Transformer


def test_preset_sizes():
    sizes = {name: ModelConfig.from_preset(name).num_params() for name in PRESETS}
    assert sizes["test-tiny"] < 1_000_000
    assert 15e6 <= sizes["small"] <= 20e6
    assert 110e6 <= sizes["base"] <= 140e6
    big = ModelConfig.from_preset("opencoder-1.5b")
    assert (big.n_layer, big.dim, big.n_head) == (24, 2240, 14)
    big = ModelConfig.from_preset("polycoder-2.7b")
    assert (big.n_layer, big.dim, big.n_head) == (32, 2560, 32)
    with torch.device("meta"):
        model = Transformer(ModelConfig.from_preset("small"))
    counted = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
    assert counted == sizes["small"]


@pytest.mark.parametrize("bad", [dict(dim=65), dict(n_kv_head=3), dict(attention_backend="cuda"),
                                 dict(prompt_format="fim"), dict(n_layer=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ModelConfig.from_preset("test-tiny", **bad)


def test_config_round_trip():
    cfg = ModelConfig.from_preset("test-tiny")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_layers": 3})


def test_cached_decoding_equals_full_forward(tiny_model):
    torch.manual_seed(1)
    tokens = torch.randint(0, 1024, (2, 40))
    with torch.no_grad():
        full = tiny_model(tokens)
        cache = KVCache(tiny_model.config, 2, 64)
        parts = [tiny_model(tokens[:, :25], cache=cache, start_pos=0)]
        parts.append(tiny_model(tokens[:, 25:28], cache=cache, start_pos=25))  # a few new tokens
        for p in range(28, 40):
            parts.append(tiny_model(tokens[:, p:p + 1], cache=cache, start_pos=p))  # one at a time
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


@pytest.mark.parametrize("q_len", [1, 5, 32])
def test_sdpa_matches_reference(q_len):
    torch.manual_seed(2)
    q = torch.randn(2, q_len, 8, 16)
    k, v = torch.randn(2, 32, 2, 16), torch.randn(2, 32, 2, 16)
    doc_ids = torch.tensor([[0] * 10 + [1] * 22, [0] * 32])
    for ids in (None, doc_ids):
        out = attention(q, k, v, backend="sdpa", doc_ids=ids)
        ref = attention_ref(q, k, v, doc_ids=ids)
        assert torch.allclose(out, ref, atol=1e-5)
    # the reference itself against a hand loop for one query row
    last = attention_ref(q[:1, -1:], k[:1], v[:1])
    weights = torch.softmax(q[0, -1, 0] @ k[0, :, 0].T / 4.0, dim=-1)
    assert torch.allclose(last[0, 0, 0], weights @ v[0, :, 0], atol=1e-5)


def test_packed_documents_equal_separate_forwards(tiny_model):
    """Block-diagonal attention plus restarted RoPE positions == each document run alone."""
    torch.manual_seed(3)
    lengths = [7, 1, 20]
    docs = [torch.randint(0, 1024, (1, n)) for n in lengths]
    packed = torch.cat(docs, 1)
    doc_ids = torch.cat([torch.full((1, n), i) for i, n in enumerate(lengths)], 1)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        out = tiny_model(packed, positions=positions, doc_ids=doc_ids)
        alone = torch.cat([tiny_model(d) for d in docs], 1)
    assert torch.allclose(out, alone, atol=1e-5)
    assert cu_seqlens_from_doc_ids(doc_ids).tolist() == [0, 7, 8, 28]


def test_ref_backend_matches_sdpa(tiny_model):
    tokens = torch.randint(0, 1024, (1, 30))
    with torch.no_grad():
        a = tiny_model(tokens)
        tiny_model.set_attention_backend("ref")
        try:
            b = tiny_model(tokens)
        finally:
            tiny_model.set_attention_backend("sdpa")
    assert torch.allclose(a, b, atol=1e-5)


def test_cache_overflow_is_an_error(tiny_model):
    cache = KVCache(tiny_model.config, 1, 4)
    with pytest.raises(ValueError, match="holds 4 tokens"):
        tiny_model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
