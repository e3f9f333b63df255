"""Counting the FLOPs a transformer actually executes.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls, convolutions and the CUDA attention
kernels, but gives 0 for the CPU attention op (torch 2.13), so we register a formula for it.
Attention is also reported apart (``attention``); counting can be limited to the forwards of given
modules (the transformer), so text encoders and the VAE stay out. Kernels the counter cannot see (Triton) call
:func:`report_flops` with what they executed; it adds to every active :func:`count_flops`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry
from torch.utils.module_tracker import ModuleTracker

aten = torch.ops.aten


def attention_flops(
    batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, value_dim: int | None = None
) -> int:
    """FLOPs of dense attention: QK^T and PV, 2 FLOPs per multiply-add (4·B·H·Lq·Lk·D)."""
    value_dim = head_dim if value_dim is None else value_dim
    return 2 * batch * heads * q_len * kv_len * (head_dim + value_dim)


def _sdpa_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    *batch, heads, q_len, head_dim = query_shape
    kv_len, value_dim = key_shape[-2], value_shape[-1]
    return attention_flops(int(torch.Size(batch).numel()), heads, q_len, kv_len, head_dim, value_dim)


_CUSTOM = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_formula}
_ATTENTION_OPS = {op for op in flop_registry if "attention" in str(op) and "backward" not in str(op)} | set(
    _CUSTOM
)


@dataclass(eq=False)  # identity: nested counts must be told apart while they are equal
class FlopCount:
    """FLOPs executed inside one :func:`count_flops` block; ``attention`` is part of ``total``."""

    total: int = 0
    attention: int = 0

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    @property
    def attention_gflops(self) -> float:
        return self.attention / 1e9


_active: list[FlopCount] = []


def report_flops(flops: int, *, attention: bool = False, counted: bool = False) -> None:
    """Called by custom kernels: add ``flops`` they executed to every active count.

    ``counted``: the counter already saw these FLOPs (PyTorch ops, e.g. a reference path's
    matmuls) and only their attribution to attention is added."""
    for count in _active:
        if not counted:
            count.total += flops
        if attention:
            count.attention += flops


def discount_flops(flops: int) -> None:
    """Take ``flops`` that a measuring tool (not the model) ran inside a counted block back out of
    every active count, so profiling overhead never shows up as model compute."""
    for count in _active:
        count.total -= flops


def counting_flops() -> bool:
    """Whether a :func:`count_flops` block is counting right now (kernels that need a host sync
    to know their FLOPs only pay it then)."""
    return bool(_active)


class _CycleSafeTracker(ModuleTracker):
    """torch's module tracker (FlopCounterMode's per-module breakdown, which we do not read) names
    modules by walking their children before marking them seen, so it recurses forever on a module
    graph with a cycle, which cache-dit builds (its cached blocks hold their transformer)."""

    def _get_mod_name(self, mod):
        if mod not in self._known_modules:
            self._known_modules[mod] = type(mod).__name__
        name = self._known_modules[mod]
        if mod not in self._seen_modules:
            self._seen_modules.add(mod)
            for child_name, child in mod.named_children():
                if child not in self._known_modules:
                    self._known_modules[child] = f"{name}.{child_name}"
                self._get_mod_name(child)
        return name


class _Session:
    """One FlopCounterMode episode adding into ``count``."""

    def __init__(self, count: FlopCount) -> None:
        self.count = count
        self.mode: FlopCounterMode | None = None

    def enter(self) -> None:
        self.mode = FlopCounterMode(display=False, custom_mapping=_CUSTOM)
        self.mode.mod_tracker = _CycleSafeTracker()
        self.mode.__enter__()
        _active.append(self.count)

    def exit(self) -> None:
        _active.remove(self.count)
        self.mode.__exit__(None, None, None)
        counted = self.mode.get_flop_counts().get("Global", {})
        self.count.total += sum(counted.values())
        self.count.attention += sum(n for op, n in counted.items() if _packet(op) in _ATTENTION_OPS)
        self.mode = None


@contextmanager
def count_flops(modules: Sequence[nn.Module] | None = None) -> Iterator[FlopCount]:
    """Count the FLOPs executed in the block, or only inside the forwards of ``modules``
    (e.g. the transformer, leaving out text encoders and VAE). Filled in as the block runs."""
    count = FlopCount()
    session = _Session(count)
    if modules is None:
        session.enter()
        try:
            yield count
        finally:
            session.exit()
        return
    depth = 0

    def pre(module, args, kwargs):
        nonlocal depth
        depth += 1
        if depth == 1:
            session.enter()

    def post(module, args, kwargs, output):
        nonlocal depth
        depth -= 1
        if depth == 0:
            session.exit()

    handles = []
    for module in modules:
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


def _packet(op):
    return getattr(op, "overloadpacket", op)
