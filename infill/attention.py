"""Attention for the model: one function, one `backend` argument.

Layout everywhere is (B, T, H, D), the layout the Triton kernels use. Rules every backend keeps:
- keys may be longer than queries (a KV cache): query i sits at absolute position
  `k_len - q_len + i` and sees keys up to and including that position ("bottom-right" causal);
- `doc_ids` (B, T) marks packed documents: a query attends only to keys of its own document;
- grouped-query attention: `Hq` is a multiple of `Hkv`.

Backends: `sdpa` (PyTorch's scaled_dot_product_attention, the CPU default), `ref` (explicit masks in
plain PyTorch, the reference), `triton` (the project's kernels, CUDA) and `flash_attn` (the optional
flash-attn package). `triton` and `flash_attn` need CUDA tensors and fall back to `sdpa` otherwise,
so one config runs on every machine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _mask(q_len: int, k_len: int, doc_ids: torch.Tensor | None, device) -> torch.Tensor | None:
    """Boolean (B or 1, 1, q_len, k_len) mask, True where attention is allowed; None if no mask needed."""
    if doc_ids is None and q_len == 1:
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, Tq, Tk)
    if doc_ids is not None:
        same = doc_ids[:, -q_len:, None] == doc_ids[:, None, :k_len]  # (B, Tq, Tk)
        allowed = allowed & same[:, None]
    return allowed


def cu_seqlens_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """int32 offsets of the runs of equal ids in a (1, T) or (T,) tensor: the packed-kernel format."""
    ids = doc_ids.reshape(-1)
    starts = torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1
    zero = torch.zeros(1, dtype=starts.dtype, device=ids.device)
    end = torch.full((1,), ids.numel(), dtype=starts.dtype, device=ids.device)
    return torch.cat([zero, starts, end]).to(torch.int32)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "sdpa",
              doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of q (B, Tq, Hq, D) over k, v (B, Tk, Hkv, D), Tk >= Tq; returns (B, Tq, Hq, D)."""
    if backend in ("triton", "flash_attn") and not q.is_cuda:
        backend = "sdpa"
    if backend == "triton":
        return _attention_triton(q, k, v, doc_ids)
    if backend == "flash_attn":
        return _attention_flash_attn(q, k, v, doc_ids)
    if backend == "ref":
        return attention_ref(q, k, v, doc_ids=doc_ids)
    if backend != "sdpa":
        raise ValueError(f"unknown attention backend {backend!r}")
    q_len, k_len = q.shape[1], k.shape[1]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
    gqa = q.shape[2] != k.shape[2]
    if doc_ids is None and q_len == k_len:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=gqa)
    else:
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=_mask(q_len, k_len, doc_ids, q.device),
                                             enable_gqa=gqa)
    return out.transpose(1, 2)


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                  doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Plain-PyTorch reference with explicit masks, computed in fp32: the kernels' one reference
    (`kernels.reference.masked_attention`) with this module's mask (bottom-right causal, documents)."""
    from kernels.reference import masked_attention

    q_len, k_len = q.shape[1], k.shape[1]
    mask = _mask(q_len, k_len, doc_ids, q.device)
    if mask is None:
        mask = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=q.device)
    return masked_attention(q, k, v, mask, q.shape[-1] ** -0.5)


def _attention_triton(q, k, v, doc_ids):
    import kernels

    q_len, k_len = q.shape[1], k.shape[1]
    if q_len != k_len:  # a KV cache: Δ new queries against k_len cached keys
        if doc_ids is not None:
            raise ValueError("packed documents are not supported together with a KV cache")
        return kernels.extend_attention(q, k, v, k_len)
    if doc_ids is None:
        return kernels.flash_attention(q, k, v, causal=True)
    if q.shape[0] != 1:
        raise ValueError("packed documents need batch size 1 (pack rows into one sequence)")
    cu = cu_seqlens_from_doc_ids(doc_ids)
    return kernels.flash_attention(q[0], k[0], v[0], cu_seqlens=cu, causal=True)[None]


def _attention_flash_attn(q, k, v, doc_ids):
    import flash_attn  # the optional extra; ImportError names the package

    if doc_ids is None:
        return flash_attn.flash_attn_func(q, k, v, causal=True)
    if q.shape[0] != 1 or q.shape[1] != k.shape[1]:
        raise ValueError("flash_attn backend: packed documents need batch size 1 and no KV cache")
    cu = cu_seqlens_from_doc_ids(doc_ids)
    max_len = int((cu[1:] - cu[:-1]).max())
    out = flash_attn.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, max_len, max_len, causal=True)
    return out[None]
