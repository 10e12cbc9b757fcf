"""Attention of a few new queries against a pre-allocated KV cache (prefill-extend and decode).

Rules this module keeps (the same as `kernels.reference.extend_attention_ref`):
- q_new (B, Δ, Hq, D); k_cache, v_cache (B, Lmax, Hkv, D), owned by the caller. The first
  cache_len positions are valid and already hold the Δ new keys at cache_len - Δ .. cache_len - 1,
  so query i sees keys 0 .. cache_len - Δ + i (bottom-right causal alignment).
- Δ > 1, or a short cache: the flash forward kernel with per-batch key lengths.
- Δ = 1 on a long cache: flash-decoding. The keys are cut into splits, one program per
  (split, batch, kv head) computes all query heads of its GQA group against its split, and a second
  kernel merges the partial results by their log-sum-exps. Deterministic: fixed split boundaries,
  merged in order.
- Inference only: no autograd.
"""
import math

import torch
import triton
import triton.language as tl

from kernels.flash_attention import (INTERPRET, LOG2E, SEQ_BATCHED, SEQ_KLENS, Seqs, check_qkv,
                                     flash_forward, last_dim_contiguous)
from kernels.reference import extend_attention_ref

# Key block of the decode kernel; every split covers a whole number of them.
DECODE_BLOCK_N = 16 if INTERPRET else 64
MAX_SPLITS = 128


@triton.jit
def _decode_split_kernel(
    Q, K, V, O_PART, LSE_PART, K_LENS,
    stride_qb, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_oh, stride_os,
    stride_lb, stride_lh,
    T_K, split_len, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_K_LENS: tl.constexpr,
    IN_PRECISION: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
):
    split = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    kv_head = tl.program_id(2)
    if HAS_K_LENS:
        k_len = tl.load(K_LENS + b)
    else:
        k_len = T_K
    lo = split * split_len
    hi = tl.minimum(lo + split_len, k_len)

    # The GQA group's query heads are the rows of one tile, so each key block is read once.
    offs_h = tl.arange(0, BLOCK_H)
    h_mask = offs_h < GROUP
    heads = kv_head * GROUP + offs_h
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=h_mask[:, None], other=0.0)
    k_base = K + b * stride_kb + kv_head * stride_kh
    v_base = V + b * stride_vb + kv_head * stride_vh

    m_i = tl.zeros([BLOCK_H], dtype=tl.float32) - 1.0e30
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
        kT = tl.load(k_base + offs_n[None, :] * stride_kt + offs_d[:, None], mask=n_mask[None, :],
                     other=0.0)
        qk = tl.dot(q, kT, input_precision=IN_PRECISION) * qk_scale
        qk = tl.where(n_mask[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=n_mask[:, None],
                    other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=IN_PRECISION)
        m_i = m_new

    # An empty split (past this row's cache length) gets weight zero in the merge.
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log2(l_safe))
    o_ptrs = O_PART + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out, mask=h_mask[:, None])
    tl.store(LSE_PART + b * stride_lb + heads * stride_lh + split, lse, mask=h_mask)


@triton.jit
def _decode_merge_kernel(
    O_PART, LSE_PART, OUT,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ob, stride_oh,
    n_splits,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    s_mask = offs_s < n_splits
    lse = tl.load(LSE_PART + b * stride_lb + head * stride_lh + offs_s, mask=s_mask,
                  other=float("-inf"))
    m = tl.max(lse, 0)
    m = tl.where(m == float("-inf"), 0.0, m)  # no key at all: every weight is zero, output zeros
    w = tl.exp2(lse - m)
    parts = tl.load(O_PART + b * stride_pb + head * stride_ph + offs_s[:, None] * stride_ps
                    + offs_d[None, :], mask=s_mask[:, None], other=0.0)
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(OUT + b * stride_ob + head * stride_oh + offs_d, out.to(OUT.dtype.element_ty))


def decode_num_splits(batch: int, kv_heads: int, kv_len: int, device) -> int:
    """How many key splits a Δ = 1 decode uses: enough programs to fill the GPU twice over, each
    split at least two key blocks long. 1 means the plain forward kernel is used."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        sms = 132  # the interpreter has no device; plan as for an H100
    by_len = triton.cdiv(max(kv_len, 1), 2 * DECODE_BLOCK_N)
    by_occupancy = triton.cdiv(2 * sms, max(batch * kv_heads, 1))
    return max(1, min(by_len, by_occupancy, MAX_SPLITS))


def decode_split_kv(q_new, k_cache, v_cache, k_lens, kv_len: int, softmax_scale: float,
                    num_splits: int):
    """Flash-decoding for Δ = 1. `k_lens` is a (B,) int32 tensor of cache lengths or None, in which
    case every row's length is `kv_len`; otherwise `kv_len` bounds them all."""
    batch, _, hq, head_dim = q_new.shape
    hkv = k_cache.shape[2]
    group = hq // hkv
    split_len = triton.cdiv(triton.cdiv(max(kv_len, 1), num_splits), DECODE_BLOCK_N) * DECODE_BLOCK_N
    n_splits = triton.cdiv(max(kv_len, 1), split_len)
    o_part = torch.empty(batch, hq, n_splits, head_dim, dtype=torch.float32, device=q_new.device)
    lse_part = torch.empty(batch, hq, n_splits, dtype=torch.float32, device=q_new.device)
    out = torch.empty_like(q_new)
    precision = "ieee" if q_new.dtype == torch.float32 else "tf32"
    _decode_split_kernel[(n_splits, batch, hkv)](
        q_new, k_cache, v_cache, o_part, lse_part,
        k_lens if k_lens is not None else torch.empty(1, dtype=torch.int32, device=q_new.device),
        q_new.stride(0), q_new.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        kv_len, split_len, softmax_scale * LOG2E,
        GROUP=group, HEAD_DIM=head_dim, HAS_K_LENS=k_lens is not None, IN_PRECISION=precision,
        BLOCK_H=max(16, triton.next_power_of_2(group)), BLOCK_N=DECODE_BLOCK_N,
    )
    _decode_merge_kernel[(batch, hq)](
        o_part, lse_part, out,
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        out.stride(0), out.stride(2),
        n_splits, HEAD_DIM=head_dim, BLOCK_S=max(2, triton.next_power_of_2(n_splits)),
    )
    return out


def _cache_lengths(cache_len, batch: int, delta: int, lmax: int, device):
    """(python int or None, (B,) int32 tensor or None) from the caller's cache_len."""
    if isinstance(cache_len, torch.Tensor):
        if cache_len.dim() > 1 or cache_len.numel() not in (1, batch):
            raise ValueError(f"extend_attention: cache_len tensor must be 0-d or ({batch},), "
                             f"got shape {tuple(cache_len.shape)}")
        if cache_len.dtype.is_floating_point or cache_len.dtype == torch.bool:
            raise ValueError(f"extend_attention: cache_len must be an integer, got {cache_len.dtype}")
        # Values are not checked here: that would cost a host sync on every decode step.
        lens = cache_len.to(device=device, dtype=torch.int32).reshape(-1).expand(batch).contiguous()
        return None, lens
    cache_len = int(cache_len)
    if not delta <= cache_len <= lmax:
        raise ValueError(f"extend_attention: cache_len must lie in [Δ, Lmax] = [{delta}, {lmax}] "
                         f"(the cache already holds the new keys), got {cache_len}")
    return cache_len, None


def extend_attention(q_new, k_cache, v_cache, cache_len, *, softmax_scale=None):
    """Attention of Δ new queries against a KV cache that already holds their keys.

    q_new (B, Δ, Hq, D); k_cache, v_cache (B, Lmax, Hkv, D); cache_len a Python int, or a 0-d or
    (B,) integer tensor, counting valid cache positions including the Δ new ones. Query i sees keys
    0 .. cache_len - Δ + i. Returns (B, Δ, Hq, D). No autograd. Runs the Triton kernels on CUDA or
    under TRITON_INTERPRET=1; otherwise falls back to `extend_attention_ref`.
    """
    check_qkv(q_new, k_cache, v_cache, packed=False, name="extend_attention")
    batch, delta = q_new.shape[0], q_new.shape[1]
    lmax = k_cache.shape[1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q_new.shape[-1])
    known_len, k_lens = _cache_lengths(cache_len, batch, delta, lmax, q_new.device)
    if q_new.device.type != "cuda" and not INTERPRET:
        return extend_attention_ref(q_new, k_cache, v_cache, cache_len, softmax_scale=scale)
    if INTERPRET and q_new.dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong; compute in fp32 there, as the GPU does inside.
        out = extend_attention(q_new.float(), k_cache.float(), v_cache.float(), cache_len,
                               softmax_scale=scale)
        return out.to(torch.bfloat16)
    q_new, k_cache, v_cache = last_dim_contiguous(q_new, k_cache, v_cache)
    kv_len = known_len if known_len is not None else lmax
    with torch.no_grad():
        if delta == 1:
            splits = decode_num_splits(batch, k_cache.shape[2], kv_len, q_new.device)
            if splits > 1:
                return decode_split_kv(q_new, k_cache, v_cache, k_lens, kv_len, scale, splits)
        if k_lens is None:
            seqs = Seqs(SEQ_BATCHED, batch, delta, kv_len, delta, kv_len)
        else:
            seqs = Seqs(SEQ_KLENS, batch, delta, lmax, delta, lmax, k_lens=k_lens)
        out, _ = flash_forward(q_new, k_cache, v_cache, seqs, True, scale)
    return out
