"""Optimizer choice: AdamW groups, and Muon checked against the published reference algorithm."""
import math

import pytest
import torch

from infill.config import ModelConfig
from infill.model import Transformer
from train.config import apply_overrides
from train.logs import read_log
from train.optim import Optimizers, configure_optimizer
from train.recipes import recipe
from train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(*items):
    base = ["eval_every=0", "tensorboard=false", "progress=false", "ckpt_every=0", "steps=12",
            "batch_tokens=512", "micro_batch=2", "stdlib_modules=8", "model.max_seq_len=128", "seq_len=128"]
    return apply_overrides(recipe("tiny"), base + list(items))


def _newton_schulz_ref(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's `zeropower_via_newtonschulz5` (github.com/KellerJordan/Muon), written out."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


def test_muon_matches_the_reference_update():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("test-tiny"))
    config = _config("optimizer=muon", "lr=0.01", "weight_decay=0.1", "muon_momentum=0.9")
    opt = configure_optimizer(model, config, torch.device("cpu"))
    assert isinstance(opt, Optimizers) and isinstance(opt[0], torch.optim.Muon)
    muon_ids = {id(p) for p in opt[0].param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"} <= names
    assert not any("embed" in n or "norm" in n for n in names)
    assert all(p.ndim == 2 for p in opt[0].param_groups[0]["params"])
    p = next(q for q in opt[0].param_groups[0]["params"] if q.shape[0] != q.shape[1])
    before = p.detach().clone()
    grads = [torch.randn_like(p) for _ in range(2)]
    buf = torch.zeros_like(p)
    expected = before.clone()
    for g in grads:  # Nesterov momentum, orthogonalised, RMS-matched to AdamW (Liu et al. 2025)
        buf = 0.9 * buf + 0.1 * g
        update = _newton_schulz_ref(0.1 * g + 0.9 * buf).float()
        expected = expected * (1 - 0.01 * 0.1) - 0.01 * 0.2 * math.sqrt(max(p.shape)) * update
    for g in grads:
        for q in model.parameters():
            q.grad = torch.zeros_like(q)
        p.grad = g.clone()
        opt.step()
    # bf16 Newton-Schulz (5 iterations of products in bf16): the updates agree to a few percent, where
    # another scaling (e.g. sqrt(max(1, rows/cols)), Muon's original) would be off by ~40%
    got, want = p.detach() - before, expected - before
    assert (got - want).norm() / want.norm() < 0.08
    # and the orthogonalised step is not what plain momentum SGD would have done
    sgd = -0.01 * 0.2 * math.sqrt(max(p.shape)) * (0.1 * grads[1] + 0.9 * buf) - 0.01 * 0.1 * before
    assert (got - sgd).norm() / want.norm() > 0.5


def test_adamw_is_the_default_and_muon_trains(tmp_path):
    assert _config().optimizer == "adamw"
    with pytest.raises(ValueError):
        _config("optimizer=sgd")
    config = _config("optimizer=muon", "lr=5e-3", "ckpt_every=6")
    assert train(config, tmp_path / "muon") == 0
    losses = [r["loss"] for r in read_log(tmp_path / "muon")["train"]]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3
    # the two optimizers' state goes through the checkpoint and back
    assert train(config, tmp_path / "split", stop_after=6) == 0
    assert train(config, tmp_path / "split", resume=True) == 0
    split = [r["loss"] for r in read_log(tmp_path / "split")["train"]]
    assert split == pytest.approx(losses, abs=1e-5)
