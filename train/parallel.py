"""Data parallelism applied to a built model: DDP or FSDP2 (`fully_shard`), chosen by config.

Under `torchrun` (RANK/WORLD_SIZE in the environment) `init` joins the process group (nccl on CUDA,
gloo on CPU); otherwise everything here is a no-op for one process. Both wrappers average gradients
over ranks, so the trainer scales its loss by the world size to get the sum it wants (see
`train.trainer.train_step`). Model and optimizer state are read and written as full, unsharded
state dicts through `torch.distributed.checkpoint.state_dict`, so a checkpoint does not depend on
the number of processes that wrote it.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_type: str) -> Dist:
    """Join the process group when launched by torchrun; a one-process `Dist` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def parallelize(model: nn.Module, mode: str, d: Dist, device: torch.device) -> nn.Module:
    """The module to run forward/backward through: DDP around `model`, or `model` itself sharded in
    place by FSDP2 (every decoder block, then the root). One process: `model` unchanged."""
    if not d.enabled:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def no_sync(module: nn.Module, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step (DDP only)."""
    if not last and hasattr(module, "no_sync"):
        return module.no_sync()
    if not last and hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    if hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(True)
    return contextlib.nullcontext()


def all_reduce_sum(value: float | int, d: Dist, device) -> float:
    """Sum of a scalar over ranks (the scalar itself for one process)."""
    if not d.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_object(obj, d: Dist):
    """Rank 0's `obj` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, d: Dist):
    """(model state, optimizer state) as full CPU tensors keyed by parameter name; on rank 0 only
    (other ranks get empty dicts), gathered from shards under FSDP."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else {}
    return model_state, optim_state


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict,
                    d: Dist) -> None:
    """Load full state dicts (every rank reads them from the checkpoint) into a possibly sharded model
    and optimizer."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
