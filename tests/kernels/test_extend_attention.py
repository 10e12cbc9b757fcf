"""extend_attention (prefill-extend and split-KV decode) against the plain-PyTorch reference."""
import pytest
import torch

from kernels import extend_attention, extend_attention_ref, flash_attention
from kernels.extend_attention import decode_num_splits, decode_split_kv

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
L_MAX = 300


def _cache(batch, delta, hq, hkv, head_dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, delta, hq, head_dim, generator=gen).to(DEVICE, dtype)
    k = torch.randn(batch, L_MAX, hkv, head_dim, generator=gen).to(DEVICE, dtype)
    v = torch.randn(batch, L_MAX, hkv, head_dim, generator=gen).to(DEVICE, dtype)
    return q, k, v


def _max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("delta", [1, 5, 33])
@pytest.mark.parametrize("cache_len", [37, 237, L_MAX])
@pytest.mark.parametrize("head_dim", [32, 64])
def test_extend_matches_reference(delta, cache_len, head_dim):
    q, k, v = _cache(2, delta, 4, 2, head_dim)
    out = extend_attention(q, k, v, cache_len)
    assert out.shape == q.shape
    assert _max_err(out, extend_attention_ref(q, k, v, cache_len)) <= 1e-4


@pytest.mark.parametrize("delta", [1, 5])
def test_per_batch_cache_lengths(delta):
    q, k, v = _cache(3, delta, 4, 1, 32)
    lens = torch.tensor([237, delta, 150], device=DEVICE)
    out = extend_attention(q, k, v, lens)
    assert _max_err(out, extend_attention_ref(q, k, v, lens)) <= 1e-4
    scalar = torch.tensor(150, device=DEVICE)
    out = extend_attention(q, k, v, scalar)
    assert _max_err(out, extend_attention_ref(q, k, v, 150)) <= 1e-4


def test_decode_on_a_long_cache_takes_the_split_path():
    # Guards the test below: at this size the public entry point really splits the cache.
    assert decode_num_splits(2, 2, 237, torch.device(DEVICE)) > 1


@pytest.mark.parametrize("num_splits", [1, 3, 7])
@pytest.mark.parametrize("cache_len", [237, L_MAX])
def test_split_kv_decode(num_splits, cache_len):
    q, k, v = _cache(2, 1, 8, 2, 64)
    out = decode_split_kv(q, k, v, None, cache_len, 64 ** -0.5, num_splits)
    assert _max_err(out, extend_attention_ref(q, k, v, cache_len)) <= 1e-4


def test_split_kv_decode_with_per_batch_lengths():
    q, k, v = _cache(3, 1, 4, 4, 32)
    lens = torch.tensor([1, 237, 64], dtype=torch.int32, device=DEVICE)
    out = decode_split_kv(q, k, v, lens, L_MAX, 32 ** -0.5, 5)
    assert _max_err(out, extend_attention_ref(q, k, v, lens)) <= 1e-4


def test_fp16_extend_and_decode():
    for delta in (1, 7):
        q, k, v = _cache(2, delta, 4, 2, 64, dtype=torch.float16)
        out = extend_attention(q, k, v, 237)
        assert out.dtype == torch.float16
        want = extend_attention_ref(q.float(), k.float(), v.float(), 237)
        assert _max_err(out, want) <= 2e-3


def test_extend_equals_the_tail_of_flash_attention():
    # Two kernels, two code paths: prefill then extend must agree with one causal pass.
    q, k, v = _cache(2, 40, 4, 2, 32)
    full = flash_attention(q, k[:, :40], v[:, :40], causal=True)
    assert _max_err(extend_attention(q[:, 32:], k, v, 40), full[:, 32:]) <= 1e-4
    assert _max_err(extend_attention(q[:, 39:], k, v, 40), full[:, 39:]) <= 1e-4


def test_bad_cache_len_raises():
    q, k, v = _cache(1, 4, 2, 2, 32)
    with pytest.raises(ValueError, match="cache_len"):
        extend_attention(q, k, v, 3)
    with pytest.raises(ValueError, match="cache_len"):
        extend_attention(q, k, v, L_MAX + 1)
    with pytest.raises(ValueError, match="cache_len"):
        extend_attention(q, k, v, torch.tensor([4, 5, 6]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_long_cache_decode(dtype):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(4, 1, 32, 128, generator=gen).to("cuda", dtype)
    k = torch.randn(4, 16384, 8, 128, generator=gen).to("cuda", dtype)
    v = torch.randn(4, 16384, 8, 128, generator=gen).to("cuda", dtype)
    lens = torch.tensor([16384, 9000, 1, 12345], device="cuda")
    out = extend_attention(q, k, v, lens)
    want = extend_attention_ref(q.float(), k.float(), v.float(), lens)
    assert _max_err(out, want) <= 1e-2
