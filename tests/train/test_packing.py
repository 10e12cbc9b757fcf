"""Packing: row boundaries, targets, RoPE restarts, and packed attention equal to an explicit block-diagonal mask."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infill.attention import attention_ref, cu_seqlens_from_doc_ids
from infill.config import ModelConfig
from infill.model import Transformer
from train.packing import IGNORE, collate, pack


def _examples(lengths, loss_every=1):
    out, base = [], 0
    for n, length in enumerate(lengths):
        ids = list(range(base, base + length))
        loss = [i % loss_every == 0 for i in range(length)]
        out.append(({"doc": n}, ids, loss))
        base += 1000
    return out


def test_rows_are_full_and_examples_continue_as_new_segments():
    rows = list(pack(_examples([5, 9, 3, 7]), 8))
    assert len(rows) == 3  # 24 tokens -> 3 full rows
    assert rows[0].tokens.tolist() == [0, 1, 2, 3, 4, 1000, 1001, 1002]
    assert rows[0].segment.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert rows[1].tokens.tolist() == [1003, 1004, 1005, 1006, 1007, 1008, 2000, 2001]
    assert rows[1].segment.tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert rows[0].after == {"doc": 1, "offset": 3} and rows[2].after == {"doc": 3, "offset": 7}
    # starting at a position gives the same rest of the stream
    resumed = list(pack([({**k, "offset": rows[0].after["offset"]} if k["doc"] == 1 else k, i, l)
                         for k, i, l in _examples([5, 9, 3, 7])[1:]], 8))
    assert [r.tokens.tolist() for r in resumed] == [r.tokens.tolist() for r in rows[1:]]


def test_targets_positions_and_doc_ids():
    rows = list(pack(_examples([5, 9, 3, 7], loss_every=2), 8))
    batch = collate(rows)
    # row 1 = [1003..1008 | 2000 2001]: positions restart at the new segment
    assert batch.positions[1].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert batch.positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    t0 = batch.targets[0].tolist()
    # doc 0 = ids 0..4, loss on even indices: 1 and 3 are not targets, 2 and 4 are; no target across docs
    assert t0[:5] == [IGNORE, 2, IGNORE, 4, IGNORE]
    assert t0[5:] == [IGNORE, 1002, IGNORE]  # 1001 has loss False (index 1), 1002 loss True; last column never
    assert (batch.targets[:, -1] == IGNORE).all()
    # doc ids are unique over the batch, so rows can be laid end to end for the packed kernels
    flat = batch.flatten().doc_ids[0]
    assert len(torch.unique_consecutive(flat)) == len(torch.unique(flat))
    cu = cu_seqlens_from_doc_ids(flat)
    assert cu.tolist() == [0, 5, 8, 14, 16, 17, 24]  # row 2 = [2002 | 3000..3006]


def _lm_loss(model, batch):
    logits = model(batch.tokens, positions=batch.positions, doc_ids=batch.doc_ids)
    return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)


def test_packed_loss_equals_each_document_alone():
    """RoPE restarts + block-diagonal attention: a packed row is the documents run one by one."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("test-tiny", vocab_size=4096)).eval()
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 4096, n).tolist() for n in (40, 17, 60, 11)]
    rows = list(pack([({}, d, [True] * len(d)) for d in docs], 64))
    batch = collate(rows)
    with torch.no_grad():
        logits = model(batch.tokens, positions=batch.positions, doc_ids=batch.doc_ids)
        seg_starts = [(r, np.flatnonzero(np.diff(np.r_[-1, row.segment]))) for r, row in enumerate(rows)]
        for r, starts in seg_starts:
            ends = list(starts[1:]) + [64]
            for s, e in zip(starts, ends):
                alone = model(batch.tokens[r:r + 1, s:e])
                torch.testing.assert_close(logits[r:r + 1, s:e], alone, atol=2e-5, rtol=1e-4)


def test_training_loss_sdpa_equals_ref_block_diagonal_and_flattened():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("test-tiny", vocab_size=512))
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 512, n).tolist() for n in rng.integers(5, 90, 12)]
    batch = collate(list(pack([({}, d, [True] * len(d)) for d in docs], 96)))
    model.set_attention_backend("sdpa")
    loss_sdpa = _lm_loss(model, batch)
    grad_sdpa = torch.autograd.grad(loss_sdpa, model.model.layers[0].self_attn.q_proj.weight)[0]
    model.set_attention_backend("ref")
    loss_ref = _lm_loss(model, batch)
    grad_ref = torch.autograd.grad(loss_ref, model.model.layers[0].self_attn.q_proj.weight)[0]
    loss_flat = _lm_loss(model, batch.flatten())  # one (1, B*T) row, as the cu_seqlens kernels see it
    torch.testing.assert_close(loss_sdpa, loss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_flat, loss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_sdpa, grad_ref, atol=1e-6, rtol=1e-4)


def test_flash_attention_with_packer_cu_seqlens_equals_reference_mask():
    """The Triton kernel (interpreter on CPU) with the packer's cu_seqlens vs an explicit block-diagonal mask."""
    kernels = pytest.importorskip("kernels")
    rng = np.random.default_rng(2)
    docs = [[1] * int(n) for n in (7, 20, 3, 14)]
    batch = collate(list(pack([({}, d, [True] * len(d)) for d in docs], 22)))
    doc_ids = batch.flatten().doc_ids  # (1, 44)
    cu = cu_seqlens_from_doc_ids(doc_ids)
    T = doc_ids.shape[1]
    torch.manual_seed(3)
    q = torch.randn(T, 4, 16, requires_grad=True)
    k = torch.randn(T, 2, 16, requires_grad=True)
    v = torch.randn(T, 2, 16, requires_grad=True)
    out = kernels.flash_attention(q, k, v, cu_seqlens=cu, causal=True)
    ref = attention_ref(q[None], k[None], v[None], doc_ids=doc_ids)[0]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert rng is not None


def test_examples_of_one_group_share_a_segment():
    """Repository-level packing: same-group examples continue one segment; a new group or a new row
    starts another."""
    ex = [({"i": 0}, [1, 2, 3], [True] * 3, "a"), ({"i": 1}, [4, 5], [True] * 2, "a"),
          ({"i": 2}, [6, 7, 8], [True] * 3, "b"), ({"i": 3}, [9, 10, 11, 12], [True] * 4, "b"),
          ({"i": 4}, [13], [True], None), ({"i": 5}, [14], [True], None)]
    rows = list(pack(ex, 8, pad_last=True))
    assert rows[0].tokens.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[0].segment.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert rows[1].tokens.tolist()[:6] == [9, 10, 11, 12, 13, 14]
    assert rows[1].segment.tolist() == [0, 0, 0, 0, 1, 2, 3, 3]  # None never continues; pad on its own
    batch = collate(rows[:1])
    assert batch.positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert batch.targets[0].tolist()[:5] == [2, 3, 4, 5, IGNORE]  # file 2 is predicted from file 1
