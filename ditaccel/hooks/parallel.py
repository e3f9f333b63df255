"""Context parallelism (diffusers' ``ContextParallelConfig``, ring / Ulysses): each rank's
transformer sees a shard of the token sequence, so a decision made from a rank's own tokens would
differ between ranks and the ranks would run different blocks (the next collective then hangs or
mixes steps). Decisions read values reduced over the whole context-parallel group instead."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def context_parallel_group(module: nn.Module) -> dist.ProcessGroup | None:
    """The process group ``module``'s sequence is sharded over (None without context parallelism)."""
    config = getattr(module, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    if cp is None:
        return None
    mesh = getattr(cp, "_flattened_mesh", None)
    mesh = getattr(cp, "_mesh", None) if mesh is None else mesh
    if mesh is None:
        raise RuntimeError("context parallelism is configured but its device mesh is not set up yet")
    return mesh.get_group()


def global_relative_l1(
    current: torch.Tensor, previous: torch.Tensor, halves: int = 1, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """``sum|current - previous| / sum|previous|`` over every token of every rank in ``group`` (the
    relative L1 change of the whole sequence, the same number on every rank), the largest over
    ``halves`` batch chunks (CFG halves). Without a group: over this tensor."""
    sums = torch.stack(
        [
            torch.stack([(a - b).abs().sum(), b.abs().sum()]).float()
            for a, b in zip(current.chunk(halves), previous.chunk(halves), strict=True)
        ]
    )
    if group is not None:
        dist.all_reduce(sums, group=group)
    return (sums[:, 0] / sums[:, 1].clamp_min(torch.finfo(torch.float32).tiny)).max()


def check_context_parallel(methods: list, denoisers: list[nn.Module]) -> None:
    """``ValueError`` when a denoiser runs context-parallel and a method cannot keep its decisions
    the same on every rank (token and attention methods select rows or key blocks from the shard
    they see; diffusers' own cache hooks decide per rank)."""
    if not any(context_parallel_group(d) is not None for d in denoisers):
        return
    unsafe = [m.config.method for m in methods if not m.context_parallel]
    if unsafe:
        raise ValueError(
            f"{', '.join(unsafe)} cannot run under context parallelism (each rank sees a shard of the "
            "sequence and would choose differently); deepcache, calibrated-cache and adaptive-cache can"
        )
