"""Optimizers of a run: AdamW, or Muon for the hidden weight matrices with AdamW for the rest.

Rules:
- Weight decay applies to weight matrices only, never to norms, biases or embeddings.
- Muon (Jordan et al. 2024, `torch.optim.Muon`) orthogonalises the momentum of each hidden 2-D
  weight (attention and MLP projections) with a quintic Newton-Schulz iteration. The embedding, an
  untied LM head, norms and any 1-D parameter stay on AdamW, as in the published recipe.
  The Muon step is scaled by `0.2 * sqrt(max(rows, cols))` (Liu et al. 2025, "Muon is Scalable"),
  which gives its updates AdamW's RMS, so one `lr` serves both groups.
- Several optimizers are stepped as one `Optimizers` tuple; `torch.distributed.checkpoint`'s state
  dict functions accept an iterable of optimizers, so checkpoints keep working unchanged.
"""
from __future__ import annotations

import inspect

import torch

from train.config import TrainConfig


class Optimizers(tuple):
    """Optimizers stepped together; `param_groups` lists all their groups (the trainer sets `lr` there)."""

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self for g in opt.param_groups]

    def step(self) -> None:
        for opt in self:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self:
            opt.zero_grad(set_to_none=set_to_none)


def _split(model: torch.nn.Module) -> tuple[list, list, list]:
    """(hidden matrices, an untied LM head, embedding and vectors) of a model, each parameter once."""
    hidden, head, no_decay = [], [], []
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if p.ndim < 2 or "embed_tokens" in name:
            no_decay.append(p)
        elif "lm_head" in name:
            head.append(p)
        else:
            hidden.append(p)
    return hidden, head, no_decay


def configure_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device):
    """The run's optimizer (see the module rules): a `torch.optim.AdamW`, or `Optimizers(Muon, AdamW)`."""
    hidden, head, no_decay = _split(model)
    fused = device.type == "cuda"
    adamw = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, fused=fused)
    if config.optimizer == "adamw":
        groups = [{"params": hidden + head, "weight_decay": config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, **adamw)
    if "adjust_lr_fn" not in inspect.signature(getattr(torch.optim, "Muon", lambda: None)).parameters:
        raise ValueError(f"optimizer=muon needs torch.optim.Muon with adjust_lr_fn (torch >= 2.9); "
                         f"this is torch {torch.__version__}")
    muon = torch.optim.Muon(hidden, lr=config.lr, weight_decay=config.weight_decay,
                            momentum=config.muon_momentum, nesterov=True, adjust_lr_fn="match_rms_adamw")
    groups = [{"params": head, "weight_decay": config.weight_decay}] if head else []
    rest = torch.optim.AdamW(groups + [{"params": no_decay, "weight_decay": 0.0}], **adamw)
    return Optimizers((muon, rest))
