"""flash_attention against the plain-PyTorch reference: forward and all three gradients.

On CPU the kernels run under TRITON_INTERPRET=1 (set by tests/conftest.py), so sizes stay small.
fp32 must match to 1e-4; fp16 follows the FlashAttention rule: the kernel's error against an fp32
reference is at most twice the error of an fp16 PyTorch reference, plus a small epsilon.
"""
import math

import pytest
import torch

from kernels import attention_ref, flash_attention
from kernels.reference import causal_mask, document_mask, masked_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RAGGED = [1, 17, 64, 200]
FP16_EPS = 1e-4


def _cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32,
                        device=DEVICE)


def _inputs(shape_q, shape_kv, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(s, generator=gen).to(DEVICE, dtype).requires_grad_()
               for s in (shape_q, shape_kv, shape_kv))
    do = torch.randn(shape_q, generator=gen).to(DEVICE, dtype)
    return q, k, v, do


def _fwd_bwd(fn, q, k, v, do, **kw):
    out = fn(q, k, v, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do)
    return (out, *grads)


def _lowp_ref(q, k, v, *, cu_seqlens=None, causal=True):
    """The same math as attention_ref, but computed in the input dtype."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    if cu_seqlens is None:
        mask = causal_mask(q.shape[1], k.shape[1], q.device) if causal else torch.ones(
            q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
        return masked_attention(q, k, v, mask, scale, upcast=False)
    mask = document_mask(cu_seqlens, causal)
    return masked_attention(q[None], k[None], v[None], mask, scale, upcast=False)[0]


def _check(q, k, v, do, **kw):
    got = _fwd_bwd(flash_attention, q, k, v, do, **kw)
    if q.dtype == torch.float32:
        want = _fwd_bwd(attention_ref, q, k, v, do, **kw)
        for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
            err = (g - w).abs().max().item()
            assert err <= 1e-4, f"{name}: max abs error {err:.2e} > 1e-4"
        return
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    want = _fwd_bwd(attention_ref, q32, k32, v32, do.float(), **kw)
    lowp = _fwd_bwd(_lowp_ref, q, k, v, do, **kw)
    for name, g, w, r in zip(("out", "dq", "dk", "dv"), got, want, lowp):
        err = (g.float() - w).abs().max().item()
        ref_err = (r.float() - w).abs().max().item()
        assert err <= 2 * ref_err + FP16_EPS, (
            f"{name}: kernel error {err:.2e} > 2 x reference error {ref_err:.2e} + {FP16_EPS}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("head_dim,hq,hkv", [(32, 4, 2), (64, 2, 1)])
def test_packed_ragged(dtype, causal, head_dim, hq, hkv):
    total = sum(RAGGED)
    q, k, v, do = _inputs((total, hq, head_dim), (total, hkv, head_dim), dtype)
    _check(q, k, v, do, cu_seqlens=_cu(RAGGED), causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
def test_batched(dtype, causal):
    q, k, v, do = _inputs((2, 50, 4, 32), (2, 50, 2, 32), dtype)
    _check(q, k, v, do, causal=causal)


@pytest.mark.parametrize("t_q,t_k", [(20, 45), (45, 20)])
def test_batched_unequal_lengths_bottom_right(t_q, t_k):
    q, k, v, do = _inputs((2, t_q, 2, 32), (2, t_k, 2, 32), torch.float32)
    _check(q, k, v, do, causal=True)


def test_empty_documents_and_custom_scale():
    lens = [5, 0, 40, 0]
    q, k, v, do = _inputs((45, 2, 32), (45, 1, 32), torch.float32)
    _check(q, k, v, do, cu_seqlens=_cu(lens), softmax_scale=0.3)


def test_strided_views_of_fused_qkv():
    # The model may slice q, k, v out of one projection: non-contiguous along T and H.
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 33, 4 + 2 + 2, 32, generator=gen).to(DEVICE).requires_grad_()
    q, k, v = qkv.split([4, 2, 2], dim=2)
    do = torch.randn(2, 33, 4, 32, generator=gen).to(DEVICE)
    got = torch.autograd.grad(flash_attention(q, k, v), qkv, do)[0]
    want = torch.autograd.grad(attention_ref(q, k, v), qkv, do)[0]
    assert (got - want).abs().max().item() <= 1e-4


def test_bf16_runs_and_matches():
    q, k, v, do = _inputs((2, 24, 2, 32), (2, 24, 2, 32), torch.bfloat16)
    out = flash_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    want = attention_ref(q, k, v)
    assert (out.float() - want.float()).abs().max().item() <= 2e-2


def test_backward_is_deterministic():
    total = sum(RAGGED)
    q, k, v, do = _inputs((total, 2, 32), (total, 1, 32), torch.float16, seed=3)
    first = _fwd_bwd(flash_attention, q, k, v, do, cu_seqlens=_cu(RAGGED))
    second = _fwd_bwd(flash_attention, q, k, v, do, cu_seqlens=_cu(RAGGED))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_bad_inputs_raise():
    q = torch.randn(10, 3, 32, device=DEVICE)
    kv = torch.randn(10, 2, 32, device=DEVICE)
    with pytest.raises(ValueError, match="multiple"):
        flash_attention(q, kv, kv, cu_seqlens=_cu([10]))
    q = torch.randn(10, 2, 32, device=DEVICE)
    with pytest.raises(ValueError, match="packed length"):
        flash_attention(q, kv, kv, cu_seqlens=_cu([4, 5]))
    with pytest.raises(ValueError, match=r"\(B, T, H, D\)"):
        flash_attention(q, kv, kv)
    with pytest.raises(ValueError, match="head dim"):
        flash_attention(q[..., :24], kv[..., :24], kv[..., :24], cu_seqlens=_cu([10]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_gpu_long_packed(dtype, head_dim):
    lens = [1, 300, 1024, 77, 2000, 4]
    total = sum(lens)
    q, k, v, do = _inputs((total, 8, head_dim), (total, 2, head_dim), dtype)
    _check(q, k, v, do, cu_seqlens=_cu(lens))


@pytest.mark.gpu
def test_gpu_backward_is_deterministic():
    q, k, v, do = _inputs((2, 2048, 16, 128), (2, 2048, 4, 128), torch.bfloat16, seed=5)
    first = _fwd_bwd(flash_attention, q, k, v, do)
    second = _fwd_bwd(flash_attention, q, k, v, do)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
