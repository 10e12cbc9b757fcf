"""Plain-PyTorch references for the attention kernels.

Each reference builds its mask explicitly, so a reader can check it against the rule written here,
and computes in fp32 before casting back to the input dtype. They are what the tests compare the
Triton kernels against, and the fallback when a kernel cannot run (CPU without the interpreter).

Rules shared with the kernels:
- Shapes are token-major: (B, T, H, D) batched, or (T, H, D) packed with `cu_seqlens`.
- Grouped-query attention: query head h reads key/value head h // (Hq // Hkv).
- Causal masks are aligned bottom-right: with Tq queries and Tk keys, query i sees key j when
  j <= i + (Tk - Tq). A query that sees no key (only possible when Tq > Tk) outputs zeros.
- Packed inputs: document d owns tokens cu_seqlens[d] .. cu_seqlens[d + 1] - 1 and attends only within
  itself.
"""
import math

import torch


def causal_mask(q_len: int, k_len: int, device=None) -> torch.Tensor:
    """Bottom-right aligned causal mask, (q_len, k_len) bool, True where attention is allowed."""
    i = torch.arange(q_len, device=device)[:, None]
    j = torch.arange(k_len, device=device)[None, :]
    return j <= i + (k_len - q_len)


def document_mask(cu_seqlens: torch.Tensor, causal: bool) -> torch.Tensor:
    """Block-diagonal mask for a packed batch, (T, T) bool, True where attention is allowed."""
    cu = cu_seqlens.to(torch.int64)
    total = int(cu[-1])
    pos = torch.arange(total, device=cu.device)
    doc = torch.bucketize(pos, cu[1:], right=True)  # (T,) index of each token's document
    mask = doc[:, None] == doc[None, :]
    if causal:
        mask &= pos[None, :] <= pos[:, None]
    return mask


def masked_attention(q, k, v, mask, softmax_scale, *, upcast=True):
    """Softmax attention with an explicit boolean mask.

    q (B, Tq, Hq, D), k and v (B, Tk, Hkv, D), mask broadcastable to (B, Hq, Tq, Tk), True = keep.
    With `upcast` the math runs in fp32 and the result is cast back; without it, the math runs in
    the input dtype (the low-precision reference of the FlashAttention error rule).
    """
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * softmax_scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # Rows with no allowed key are NaN after softmax; they output zeros by rule.
    probs = probs.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    return out.to(dtype)


def attention_ref(q, k, v, *, cu_seqlens=None, causal=True, softmax_scale=None):
    """Reference for `kernels.flash_attention` (same signature and rules)."""
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if cu_seqlens is None:
        tq, tk = q.shape[1], k.shape[1]
        if causal:
            mask = causal_mask(tq, tk, q.device)
        else:
            mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device)
        return masked_attention(q, k, v, mask, scale)
    mask = document_mask(cu_seqlens, causal)
    out = masked_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), mask, scale)
    return out.squeeze(0)


def extend_attention_ref(q_new, k_cache, v_cache, cache_len, *, softmax_scale=None):
    """Reference for `kernels.extend_attention` (same signature and rules).

    q_new (B, Δ, Hq, D); the first cache_len[b] positions of k_cache/v_cache (B, Lmax, Hkv, D) are
    valid and end with the Δ new keys, so query i sees keys 0 .. cache_len[b] - Δ + i.
    """
    batch, delta = q_new.shape[0], q_new.shape[1]
    lmax = k_cache.shape[1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q_new.shape[-1])
    lens = torch.as_tensor(cache_len, device=q_new.device).reshape(-1).to(torch.int64)
    lens = lens.expand(batch)
    i = torch.arange(delta, device=q_new.device)[None, :, None]
    j = torch.arange(lmax, device=q_new.device)[None, None, :]
    last = lens[:, None, None] - delta + i  # (B, Δ, 1) last key each query sees
    mask = (j <= last) & (j < lens[:, None, None])  # (B, Δ, Lmax)
    return masked_attention(q_new, k_cache, v_cache, mask[:, None], scale)
