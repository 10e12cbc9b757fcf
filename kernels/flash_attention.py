"""Flash attention in Triton: forward, FlashAttention-2 backward, packed documents and GQA.

Rules this module keeps (the same as `kernels.reference.attention_ref`):
- Layout is token-major: q (B, Tq, Hq, D) and k, v (B, Tk, Hkv, D); or, with `cu_seqlens`, packed
  q (T, Hq, D) and k, v (T, Hkv, D), each document attending only within itself.
- Query head h reads key/value head h // (Hq // Hkv).
- Causal masks are aligned bottom-right: query i sees key j when j <= i + (Tk - Tq). A query that
  sees no key outputs zeros and gets zero gradients.
- Any sequence length works: ragged edges are masked, never asserted.
- The forward stores the log-sum-exp (base 2, fp32); the backward is the FlashAttention-2 scheme
  (preprocess rowsum(dO * O), one dK/dV pass over query blocks, one dQ pass over key blocks). Every
  output element is written by exactly one program and summed in a fixed order (the GQA heads of
  a group are looped over inside the dK/dV program), so there are no atomics and results are
  bit-identical run to run.
- Under TRITON_INTERPRET=1 (CPU tests) launch configs are fixed; on a GPU they are autotuned.
"""
import math
import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from kernels.reference import attention_ref

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LOG2E = 1.4426950408889634
HEAD_DIMS = (16, 32, 64, 128)

# How a program finds its sequence (SEQ_MODE): batched tensors with one length for all, packed
# documents through cu_seqlens, or batched tensors whose key lengths come from a per-batch tensor.
SEQ_BATCHED, SEQ_PACKED, SEQ_KLENS = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _seq_bounds(seq, CU_SEQLENS, K_LENS, T_Q, T_K, SEQ_MODE: tl.constexpr):
    """(q_start, q_len, k_start, k_len) of sequence `seq`, starts in tokens along the T axis."""
    zero = seq * 0
    if SEQ_MODE == 1:
        q_start = tl.load(CU_SEQLENS + seq)
        q_len = tl.load(CU_SEQLENS + seq + 1) - q_start
        k_start = q_start
        k_len = q_len
    elif SEQ_MODE == 2:
        q_start = zero
        q_len = zero + T_Q
        k_start = zero
        k_len = tl.load(K_LENS + seq)
    else:
        q_start = zero
        q_len = zero + T_Q
        k_start = zero
        k_len = zero + T_K
    return q_start, q_len, k_start, k_len


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                    lo, hi, k_len, offset, qk_scale,
                    CAUSAL: tl.constexpr, MASK: tl.constexpr, IN_PRECISION: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kT_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]
        v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]
        if MASK:
            kT = tl.load(kT_ptrs, mask=(offs_n < k_len)[None, :], other=0.0)
        else:
            kT = tl.load(kT_ptrs)
        qk = tl.dot(q, kT, input_precision=IN_PRECISION) * qk_scale
        if MASK:
            keep = (offs_n < k_len)[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None] + offset)
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASK:
            v = tl.load(v_ptrs, mask=(offs_n < k_len)[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=IN_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_SEQLENS, K_LENS,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_lb, stride_lh,
    T_Q, T_K, qk_scale, N_CTX_KEY, Q_CTX_KEY,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, SEQ_MODE: tl.constexpr,
    IN_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start, q_len, k_start, k_len = _seq_bounds(seq, CU_SEQLENS, K_LENS, T_Q, T_K, SEQ_MODE)
    # Last query blocks first: under a causal mask they see the most keys, so they start early.
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    if start_m >= q_len:
        return
    offset = k_len - q_len
    kv_head = head // GROUP
    seq64 = seq.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < q_len

    q_base = Q + seq64 * stride_qb + q_start.to(tl.int64) * stride_qt + head * stride_qh
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=m_mask[:, None], other=0.0)
    k_base = K + seq64 * stride_kb + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh
    v_base = V + seq64 * stride_vb + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh

    # A finite floor keeps exp2(m_i - m_new) defined while a row has seen only masked keys.
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if CAUSAL:
        hi = tl.maximum(tl.minimum(k_len, start_m + BLOCK_M + offset), 0)
        full = tl.maximum(tl.minimum(k_len, start_m + offset + 1), 0)
    else:
        hi = k_len
        full = k_len
    full = (full // BLOCK_N) * BLOCK_N  # key blocks every row of this query block sees in full
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                    offs_m, offs_d, 0, full, k_len, offset, qk_scale,
                                    CAUSAL, False, IN_PRECISION, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                    offs_m, offs_d, full, hi, k_len, offset, qk_scale,
                                    CAUSAL, True, IN_PRECISION, BLOCK_N)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    o_base = O + seq64 * stride_ob + q_start.to(tl.int64) * stride_ot + head * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=m_mask[:, None])
    lse_base = LSE + seq64 * stride_lb + head * stride_lh + q_start
    tl.store(lse_base + offs_m, lse, mask=m_mask)


@triton.jit
def _attn_bwd_preprocess_kernel(
    O, DO, DELTA,
    stride_ob, stride_ot, stride_oh,
    stride_dob, stride_dot, stride_doh,
    stride_db, stride_dh,
    T, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    b = tl.program_id(1).to(tl.int64)
    head = tl.program_id(2)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < T
    o = tl.load(O + b * stride_ob + head * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=m_mask[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + head * stride_doh + offs_m[:, None] * stride_dot
                 + offs_d[None, :], mask=m_mask[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + b * stride_db + head * stride_dh + offs_m, delta, mask=m_mask)


@triton.jit
def _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                         offs_n, offs_d, lo, hi, q_len, offset, qk_scale,
                         CAUSAL: tl.constexpr, MASK: tl.constexpr, IN_PRECISION: tl.constexpr,
                         BLOCK_M: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        qT_ptrs = q_base + offs_m[None, :] * stride_qt + offs_d[:, None]
        do_ptrs = do_base + offs_m[:, None] * stride_dot + offs_d[None, :]
        if MASK:
            m_mask = offs_m < q_len
            qT = tl.load(qT_ptrs, mask=m_mask[None, :], other=0.0)
            do = tl.load(do_ptrs, mask=m_mask[:, None], other=0.0)
            # An infinite log-sum-exp makes the probabilities of out-of-range rows exactly zero.
            lse = tl.load(lse_base + offs_m, mask=m_mask, other=float("inf"))
            delta = tl.load(delta_base + offs_m, mask=m_mask, other=0.0)
        else:
            qT = tl.load(qT_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        qkT = tl.dot(k, qT, input_precision=IN_PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        pT = tl.exp2(qkT - lse[None, :])
        if MASK:
            if CAUSAL:
                pT = tl.where(offs_n[:, None] <= offs_m[None, :] + offset, pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=IN_PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=IN_PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=IN_PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_SEQLENS, K_LENS,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh,
    stride_dkb, stride_dkt, stride_dkh,
    stride_dvb, stride_dvt, stride_dvh,
    stride_lb, stride_lh,
    T_Q, T_K, qk_scale, sm_scale, N_CTX_KEY,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, SEQ_MODE: tl.constexpr,
    IN_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(1)
    kv_head = tl.program_id(2)
    q_start, q_len, k_start, k_len = _seq_bounds(seq, CU_SEQLENS, K_LENS, T_Q, T_K, SEQ_MODE)
    start_n = tl.program_id(0) * BLOCK_N
    if start_n >= k_len:
        return
    offset = k_len - q_len
    seq64 = seq.to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    n_mask = offs_n < k_len

    k_rows = seq64 * stride_kb + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh
    v_rows = seq64 * stride_vb + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh
    k = tl.load(K + k_rows + offs_n[:, None] * stride_kt + offs_d[None, :], mask=n_mask[:, None],
                other=0.0)
    v = tl.load(V + v_rows + offs_n[:, None] * stride_vt + offs_d[None, :], mask=n_mask[:, None],
                other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Query blocks [lo, mid) straddle the causal diagonal, [mid, full_end) need no mask, and
    # [full_end, q_len) is the ragged tail. Non-causal: everything from 0 is visible.
    if CAUSAL:
        lo = (tl.maximum(start_n - offset, 0) // BLOCK_M) * BLOCK_M
        diag_end = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - offset, 0), BLOCK_M) * BLOCK_M
    else:
        lo = start_n * 0
        diag_end = start_n * 0
    full_end = (q_len // BLOCK_M) * BLOCK_M
    mid = tl.maximum(lo, tl.minimum(diag_end, full_end))

    q_rows = seq64 * stride_qb + q_start.to(tl.int64) * stride_qt
    do_rows = seq64 * stride_dob + q_start.to(tl.int64) * stride_dot
    l_rows = seq64 * stride_lb + q_start
    # The heads of a GQA group are summed here, in order, so dK/dV need no atomics.
    for g in range(GROUP):
        head = kv_head * GROUP + g
        q_base = Q + q_rows + head * stride_qh
        do_base = DO + do_rows + head * stride_doh
        lse_base = LSE + l_rows + head * stride_lh
        delta_base = DELTA + l_rows + head * stride_lh
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                      stride_qt, stride_dot, offs_n, offs_d, lo, mid, q_len, offset,
                                      qk_scale, CAUSAL, True, IN_PRECISION, BLOCK_M)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                      stride_qt, stride_dot, offs_n, offs_d, mid, full_end, q_len,
                                      offset, qk_scale, CAUSAL, False, IN_PRECISION, BLOCK_M)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                      stride_qt, stride_dot, offs_n, offs_d, tl.maximum(mid, full_end),
                                      q_len, q_len, offset, qk_scale, CAUSAL, True, IN_PRECISION,
                                      BLOCK_M)

    dk = dk * sm_scale
    dk_base = DK + seq64 * stride_dkb + k_start.to(tl.int64) * stride_dkt + kv_head * stride_dkh
    dv_base = DV + seq64 * stride_dvb + k_start.to(tl.int64) * stride_dvt + kv_head * stride_dvh
    tl.store(dk_base + offs_n[:, None] * stride_dkt + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=n_mask[:, None])
    tl.store(dv_base + offs_n[:, None] * stride_dvt + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=n_mask[:, None])


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d,
                       lo, hi, k_len, offset, qk_scale,
                       CAUSAL: tl.constexpr, MASK: tl.constexpr, IN_PRECISION: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kT_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]
        vT_ptrs = v_base + offs_n[None, :] * stride_vt + offs_d[:, None]
        if MASK:
            n_mask = (offs_n < k_len)[None, :]
            kT = tl.load(kT_ptrs, mask=n_mask, other=0.0)
            vT = tl.load(vT_ptrs, mask=n_mask, other=0.0)
        else:
            kT = tl.load(kT_ptrs)
            vT = tl.load(vT_ptrs)
        qk = tl.dot(q, kT, input_precision=IN_PRECISION) * qk_scale
        p = tl.exp2(qk - lse[:, None])
        if MASK:
            keep = (offs_n < k_len)[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None] + offset)
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, vT, input_precision=IN_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=IN_PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_SEQLENS, K_LENS,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh,
    stride_dqb, stride_dqt, stride_dqh,
    stride_lb, stride_lh,
    T_Q, T_K, qk_scale, sm_scale, N_CTX_KEY,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, SEQ_MODE: tl.constexpr,
    IN_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start, q_len, k_start, k_len = _seq_bounds(seq, CU_SEQLENS, K_LENS, T_Q, T_K, SEQ_MODE)
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    if start_m >= q_len:
        return
    offset = k_len - q_len
    kv_head = head // GROUP
    seq64 = seq.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < q_len

    q_rows = Q + seq64 * stride_qb + q_start.to(tl.int64) * stride_qt + head * stride_qh
    do_rows = DO + seq64 * stride_dob + q_start.to(tl.int64) * stride_dot + head * stride_doh
    q = tl.load(q_rows + offs_m[:, None] * stride_qt + offs_d[None, :], mask=m_mask[:, None],
                other=0.0)
    do = tl.load(do_rows + offs_m[:, None] * stride_dot + offs_d[None, :], mask=m_mask[:, None],
                 other=0.0)
    l_rows = seq64 * stride_lb + head * stride_lh + q_start
    lse = tl.load(LSE + l_rows + offs_m, mask=m_mask, other=float("inf"))
    delta = tl.load(DELTA + l_rows + offs_m, mask=m_mask, other=0.0)
    k_base = K + seq64 * stride_kb + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh
    v_base = V + seq64 * stride_vb + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh

    if CAUSAL:
        hi = tl.maximum(tl.minimum(k_len, start_m + BLOCK_M + offset), 0)
        full = tl.maximum(tl.minimum(k_len, start_m + offset + 1), 0)
    else:
        hi = k_len
        full = k_len
    full = (full // BLOCK_N) * BLOCK_N
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m,
                            offs_d, 0, full, k_len, offset, qk_scale, CAUSAL, False, IN_PRECISION,
                            BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m,
                            offs_d, full, hi, k_len, offset, qk_scale, CAUSAL, True, IN_PRECISION,
                            BLOCK_N)
    dq = dq * sm_scale
    dq_base = DQ + seq64 * stride_dqb + q_start.to(tl.int64) * stride_dqt + head * stride_dqh
    tl.store(dq_base + offs_m[:, None] * stride_dqt + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=m_mask[:, None])


# ---------------------------------------------------------------------------------------------
# Launch configs: fixed when interpreting (autotune needs a driver), autotuned on a GPU.
# ---------------------------------------------------------------------------------------------

_TUNE_KEY = ["N_CTX_KEY", "HEAD_DIM", "GROUP", "CAUSAL", "SEQ_MODE"]
_FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(128, 64, 4, 3), (128, 64, 8, 3), (128, 64, 4, 4), (128, 128, 8, 3),
                         (128, 128, 8, 2), (128, 32, 4, 4), (64, 64, 4, 3), (64, 64, 4, 4),
                         (64, 128, 4, 3)]
]
_DKDV_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(32, 128, 4, 3), (32, 128, 8, 3), (64, 128, 8, 3), (64, 128, 8, 2),
                         (32, 64, 4, 3), (64, 64, 4, 3), (16, 128, 4, 4)]
]
_DQ_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(128, 32, 4, 3), (128, 32, 8, 3), (128, 64, 8, 3), (128, 64, 8, 2),
                         (64, 32, 4, 3), (64, 64, 4, 3), (128, 16, 4, 4)]
]
# Small, unequal blocks under the interpreter: fast on CPU, and unequal sizes catch index mix-ups.
_INTERPRET_META = {"BLOCK_M": 32, "BLOCK_N": 16}
_INTERPRET_DKDV_META = {"BLOCK_M": 16, "BLOCK_N": 32}
_PREPROCESS_BLOCK = 32 if INTERPRET else 128


def _tuned(kernel, configs, key):
    return kernel if INTERPRET else triton.autotune(configs=configs, key=key)(kernel)


# The forward also serves extend (a few queries, long keys), so its key tells the query length too.
_fwd = _tuned(_attn_fwd_kernel, _FWD_CONFIGS, _TUNE_KEY + ["Q_CTX_KEY"])
_dkdv = _tuned(_attn_bwd_dkdv_kernel, _DKDV_CONFIGS, _TUNE_KEY)
_dq = _tuned(_attn_bwd_dq_kernel, _DQ_CONFIGS, _TUNE_KEY)


def launch_meta(interpret_meta: dict) -> dict:
    """Block sizes to pass at launch: fixed under the interpreter, chosen by autotune otherwise."""
    return dict(interpret_meta) if INTERPRET else {}


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------


class Seqs(NamedTuple):
    """Where each sequence lives, for the kernels' SEQ_MODE."""

    mode: int
    count: int  # sequences (documents or batch rows): grid axis 1
    max_q: int
    max_k: int
    t_q: int
    t_k: int
    cu_seqlens: Optional[torch.Tensor] = None
    k_lens: Optional[torch.Tensor] = None


def packed_seqs(cu_seqlens: torch.Tensor, total: int, device) -> Seqs:
    """Validate `cu_seqlens` against a packed length `total` (one host sync) and describe it."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-d with n_docs + 1 >= 2 offsets, got {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}")
    cu = cu_seqlens.to(device=device, dtype=torch.int32).contiguous()
    lens = cu[1:] - cu[:-1]
    first, last, shortest, longest = torch.stack([cu[0], cu[-1], lens.min(), lens.max()]).tolist()
    if first != 0 or last != total or shortest < 0:
        raise ValueError(f"cu_seqlens must rise from 0 to the packed length {total}, "
                         f"got first={first}, last={last}, shortest document={shortest}")
    return Seqs(SEQ_PACKED, cu.numel() - 1, longest, longest, total, total, cu_seqlens=cu)


def _dummy(device) -> torch.Tensor:
    return torch.empty(1, dtype=torch.int32, device=device)


def _precision(dtype) -> str:
    # fp32 inputs would otherwise be rounded to tf32 on the GPU's tensor cores.
    return "ieee" if dtype == torch.float32 else "tf32"


def _ctx_key(n: int) -> int:
    return triton.next_power_of_2(max(n, 16))


def flash_forward(q, k, v, seqs: Seqs, causal: bool, softmax_scale: float):
    """Launch the forward kernel on (B, T, H, D) views; returns (out, lse (B, Hq, Tq) fp32 log2)."""
    batch, t_q, hq, head_dim = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(batch, hq, t_q, dtype=torch.float32, device=q.device)
    if seqs.max_q == 0 or seqs.count == 0:
        return out, lse
    dummy = _dummy(q.device)
    packed = seqs.mode == SEQ_PACKED

    def grid(meta):
        return (triton.cdiv(seqs.max_q, meta["BLOCK_M"]), seqs.count, hq)

    _fwd[grid](
        q, k, v, out, lse,
        seqs.cu_seqlens if seqs.cu_seqlens is not None else dummy,
        seqs.k_lens if seqs.k_lens is not None else dummy,
        0 if packed else q.stride(0), q.stride(1), q.stride(2),
        0 if packed else k.stride(0), k.stride(1), k.stride(2),
        0 if packed else v.stride(0), v.stride(1), v.stride(2),
        0 if packed else out.stride(0), out.stride(1), out.stride(2),
        0 if packed else lse.stride(0), lse.stride(1),
        seqs.t_q, seqs.t_k, softmax_scale * LOG2E, _ctx_key(seqs.max_k), _ctx_key(seqs.max_q),
        GROUP=hq // k.shape[2], HEAD_DIM=head_dim, CAUSAL=causal, SEQ_MODE=seqs.mode,
        IN_PRECISION=_precision(q.dtype), **launch_meta(_INTERPRET_META),
    )
    return out, lse


def flash_backward(q, k, v, out, lse, do, seqs: Seqs, causal: bool, softmax_scale: float):
    """Launch preprocess, dK/dV and dQ kernels on (B, T, H, D) views; returns (dq, dk, dv)."""
    batch, t_q, hq, head_dim = q.shape
    hkv = k.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if seqs.count == 0 or seqs.max_q == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    # Keys outside every sequence's range (only in SEQ_KLENS) get no program; define them as zero.
    if seqs.mode == SEQ_KLENS or seqs.t_k != k.shape[1]:
        dk.zero_()
        dv.zero_()
    delta = torch.empty_like(lse)
    _attn_bwd_preprocess_kernel[(triton.cdiv(t_q, _PREPROCESS_BLOCK), batch, hq)](
        out, do, delta,
        out.stride(0), out.stride(1), out.stride(2),
        do.stride(0), do.stride(1), do.stride(2),
        delta.stride(0), delta.stride(1),
        t_q, HEAD_DIM=head_dim, BLOCK_M=_PREPROCESS_BLOCK,
    )
    dummy = _dummy(q.device)
    packed = seqs.mode == SEQ_PACKED

    def bstride(x):
        return 0 if packed else x.stride(0)

    common = dict(GROUP=hq // hkv, HEAD_DIM=head_dim, CAUSAL=causal, SEQ_MODE=seqs.mode,
                  IN_PRECISION=_precision(q.dtype))
    cu = seqs.cu_seqlens if seqs.cu_seqlens is not None else dummy
    k_lens = seqs.k_lens if seqs.k_lens is not None else dummy
    scalars = (seqs.t_q, seqs.t_k, softmax_scale * LOG2E, softmax_scale, _ctx_key(seqs.max_k))
    strides = (bstride(q), q.stride(1), q.stride(2), bstride(k), k.stride(1), k.stride(2),
               bstride(v), v.stride(1), v.stride(2), bstride(do), do.stride(1), do.stride(2))

    def dkdv_grid(meta):
        return (triton.cdiv(seqs.max_k, meta["BLOCK_N"]), seqs.count, hkv)

    _dkdv[dkdv_grid](
        q, k, v, do, lse, delta, dk, dv, cu, k_lens, *strides,
        bstride(dk), dk.stride(1), dk.stride(2), bstride(dv), dv.stride(1), dv.stride(2),
        bstride(lse), lse.stride(1), *scalars, **common, **launch_meta(_INTERPRET_DKDV_META),
    )

    def dq_grid(meta):
        return (triton.cdiv(seqs.max_q, meta["BLOCK_M"]), seqs.count, hq)

    _dq[dq_grid](
        q, k, v, do, lse, delta, dq, cu, k_lens, *strides,
        bstride(dq), dq.stride(1), dq.stride(2),
        bstride(lse), lse.stride(1), *scalars, **common, **launch_meta(_INTERPRET_META),
    )
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward saves (q, k, v, out, lse); backward runs the FA2 kernels."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, causal, softmax_scale):
        if cu_seqlens is not None:
            seqs = packed_seqs(cu_seqlens, q.shape[0], q.device)
            q4, k4, v4 = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
        else:
            batch, t_q, t_k = q.shape[0], q.shape[1], k.shape[1]
            seqs = Seqs(SEQ_BATCHED, batch, t_q, t_k, t_q, t_k)
            q4, k4, v4 = q, k, v
        out4, lse = flash_forward(q4, k4, v4, seqs, causal, softmax_scale)
        ctx.save_for_backward(q4, k4, v4, out4, lse)
        ctx.seqs, ctx.causal, ctx.softmax_scale = seqs, causal, softmax_scale
        ctx.packed = cu_seqlens is not None
        return out4.squeeze(0) if ctx.packed else out4

    @staticmethod
    def backward(ctx, do):
        q4, k4, v4, out4, lse = ctx.saved_tensors
        do4 = do.unsqueeze(0) if ctx.packed else do
        if do4.stride(-1) != 1:
            do4 = do4.contiguous()
        dq, dk, dv = flash_backward(q4, k4, v4, out4, lse, do4, ctx.seqs, ctx.causal,
                                    ctx.softmax_scale)
        if ctx.packed:
            dq, dk, dv = dq.squeeze(0), dk.squeeze(0), dv.squeeze(0)
        return dq, dk, dv, None, None, None


def check_qkv(q, k, v, packed: bool, name: str = "flash_attention"):
    """Raise ValueError for inputs the kernels do not take."""
    dims = 3 if packed else 4
    layout = "(T, H, D) with cu_seqlens" if packed else "(B, T, H, D)"
    for label, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != dims:
            raise ValueError(f"{name}: {label} must be {layout}, got shape {tuple(x.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16,
                                                              torch.float32):
        raise ValueError(f"{name}: q, k, v must share one of fp16/bf16/fp32, got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{name}: q, k, v are on different devices")
    if k.shape != v.shape:
        raise ValueError(f"{name}: k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    head_dim, hq, hkv = q.shape[-1], q.shape[-2], k.shape[-2]
    if k.shape[-1] != head_dim or head_dim not in HEAD_DIMS:
        raise ValueError(f"{name}: head dim must be one of {HEAD_DIMS} and equal for q and k, "
                         f"got {head_dim} and {k.shape[-1]}")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"{name}: query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if q.shape[:-3] != k.shape[:-3]:
        raise ValueError(f"{name}: batch sizes differ: {tuple(q.shape)} vs {tuple(k.shape)}")
    if packed and q.shape[0] != k.shape[0]:
        raise ValueError(f"{name}: packed q and k must have the same number of tokens")


def last_dim_contiguous(*xs):
    return tuple(x if x.stride(-1) == 1 else x.contiguous() for x in xs)


def flash_attention(q, k, v, *, cu_seqlens=None, causal=True, softmax_scale=None):
    """Softmax attention, differentiable in q, k and v.

    Batched: q (B, Tq, Hq, D), k and v (B, Tk, Hkv, D) -> (B, Tq, Hq, D); when Tq != Tk the causal
    mask is aligned bottom-right (query i sees keys j <= i + Tk - Tq).
    Packed: with `cu_seqlens` (int32, n_docs + 1 offsets from 0 to T), q (T, Hq, D) and k, v
    (T, Hkv, D) -> (T, Hq, D), each document attending only within itself; reading the longest
    document's length costs one host sync.
    Hq must be a multiple of Hkv (GQA); D in 16, 32, 64, 128; fp16, bf16 or fp32 (fp32 math
    inside). `softmax_scale` defaults to 1 / sqrt(D). Runs the Triton kernels on CUDA tensors or
    under TRITON_INTERPRET=1; otherwise falls back to `attention_ref`.
    """
    check_qkv(q, k, v, cu_seqlens is not None)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if q.device.type != "cuda" and not INTERPRET:
        return attention_ref(q, k, v, cu_seqlens=cu_seqlens, causal=causal, softmax_scale=scale)
    q, k, v = last_dim_contiguous(q, k, v)
    if INTERPRET and q.dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong; compute in fp32 there, as the GPU does inside.
        out = FlashAttentionFunction.apply(q.float(), k.float(), v.float(), cu_seqlens, causal, scale)
        return out.to(torch.bfloat16)
    return FlashAttentionFunction.apply(q, k, v, cu_seqlens, causal, scale)
