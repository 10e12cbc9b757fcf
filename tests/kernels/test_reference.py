"""The references themselves, against torch's SDPA run one document at a time."""
import torch
import torch.nn.functional as F

from kernels import attention_ref, extend_attention_ref


def _sdpa(q, k, v, causal):
    # (T, H, D) one document -> SDPA's (1, H, T, D), GQA by repeating key/value heads.
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                         v.transpose(0, 1)[None], is_causal=causal)
    return out[0].transpose(0, 1)


def test_packed_reference_matches_per_document_sdpa():
    torch.manual_seed(0)
    lens = [3, 1, 9, 0, 6]
    cu = torch.tensor([0, 3, 4, 13, 13, 19], dtype=torch.int32)
    q, k, v = torch.randn(19, 4, 8), torch.randn(19, 2, 8), torch.randn(19, 2, 8)
    for causal in (True, False):
        out = attention_ref(q, k, v, cu_seqlens=cu, causal=causal)
        start = 0
        for n in lens:
            if n:
                sl = slice(start, start + n)
                want = _sdpa(q[sl], k[sl], v[sl], causal)
                torch.testing.assert_close(out[sl], want, atol=1e-5, rtol=1e-5)
            start += n


def test_batched_bottom_right_alignment():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 1, 4), torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)
    out = attention_ref(q, k, v, causal=True)
    # Query 0 sees keys 0..1, query 1 sees keys 0..2.
    torch.testing.assert_close(out[:, :1], _sdpa(q[0, :1], k[0, :2], v[0, :2], False)[None])
    torch.testing.assert_close(out[:, 1:], _sdpa(q[0, 1:], k[0], v[0], False)[None])
    # More queries than keys: the first query sees nothing and outputs zeros.
    out = attention_ref(k, q, q, causal=True)
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))


def test_extend_reference_is_the_tail_of_full_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 12, 4, 8), torch.randn(2, 12, 2, 8), torch.randn(2, 12, 2, 8)
    full = attention_ref(q, k, v, causal=True)
    cache_k = torch.cat([k, torch.randn(2, 5, 2, 8)], dim=1)  # junk past cache_len
    cache_v = torch.cat([v, torch.randn(2, 5, 2, 8)], dim=1)
    out = extend_attention_ref(q[:, 9:], cache_k, cache_v, 12)
    torch.testing.assert_close(out, full[:, 9:])
    out = extend_attention_ref(q[:, 9:], cache_k, cache_v, torch.tensor([12, 12]))
    torch.testing.assert_close(out, full[:, 9:])
