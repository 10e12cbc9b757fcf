"""The model's `triton` backend wiring, run through the Triton interpreter on CPU."""
import pytest
import torch

from infill.attention import _attention_triton, attention, attention_ref


@pytest.mark.parametrize("case", ["causal", "packed", "cache"])
def test_triton_backend_matches_reference(case):
    torch.manual_seed(0)
    q_len = 3 if case == "cache" else 24
    q = torch.randn(1, q_len, 4, 32)
    k, v = torch.randn(1, 24, 2, 32), torch.randn(1, 24, 2, 32)
    doc_ids = torch.tensor([[0] * 5 + [1] * 19]) if case == "packed" else None
    out = _attention_triton(q, k, v, doc_ids)
    assert torch.allclose(out, attention_ref(q, k, v, doc_ids=doc_ids), atol=1e-4)


def test_gpu_backends_fall_back_to_sdpa_on_cpu():
    q, k, v = torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 16)
    for backend in ("triton", "flash_attn"):
        assert torch.allclose(attention(q, k, v, backend=backend), attention_ref(q, k, v), atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, backend="magic")


@pytest.mark.gpu
def test_model_trains_with_triton_backend_on_gpu(tiny_tokenizer):
    from infill.config import ModelConfig
    from infill.model import Transformer

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("test-tiny", vocab_size=len(tiny_tokenizer))
    tokens = torch.randint(0, len(tiny_tokenizer), (2, 64), device="cuda")
    losses = {}
    for backend in ("sdpa", "triton"):
        torch.manual_seed(0)
        model = Transformer(ModelConfig(**{**cfg.to_dict(), "attention_backend": backend})).cuda()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        losses[backend] = loss.item()
    assert losses["sdpa"] == pytest.approx(losses["triton"], abs=1e-4)
