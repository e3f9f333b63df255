"""Stand in for a contiguous range of transformer blocks with a residual.

Step and feature caches (``deepcache``, ``adaptive-cache``) share one mechanism: at the entry of a
block range a policy sees the range's input streams and either lets the blocks run (and is then
told the range's residual, output minus input, per stream) or returns the output streams to use
instead, in which case every block of the range passes its input through untouched. The range may
span block groups (FLUX double- then single-stream blocks) because the adapters describe every
block's inputs and outputs as the same two streams. Policies, i.e. when to skip and which residual
to use, live with the methods; state lives in the pipeline's :class:`DenoiseContext`, per denoiser
and CFG branch, so it never leaks across calls or pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers.hooks import ModelHook
from torch import nn

from ..pipelines import Adapter, BlockIO
from .context import DenoiseContext
from .install import register_hook, remove_hook
from .step_info import StepInfo

Streams = tuple[torch.Tensor, "torch.Tensor | None"]


@dataclass(frozen=True)
class Block:
    """One transformer block in execution order, with its name and stream convention."""

    name: str
    module: nn.Module
    io: BlockIO


def flat_blocks(adapter: Adapter, denoiser: nn.Module) -> list[Block]:
    """Every block of ``denoiser`` in execution order."""
    return [
        Block(f"{group.name}.{i}", block, group.io)
        for group in adapter.block_groups(denoiser)
        for i, block in enumerate(group.blocks)
    ]


class RangePolicy(Protocol):
    """What a caching method decides at a range entry."""

    def enter(self, info: StepInfo, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Streams | None:
        """Output streams that replace the range this forward, or ``None`` to run it."""

    def computed(self, info: StepInfo, hidden: torch.Tensor | None, encoder: torch.Tensor | None) -> None:
        """The range ran; ``hidden`` / ``encoder`` are its residuals (``None``: no such stream)."""


@dataclass
class _ForwardState:
    """Where the current forward is inside the range."""

    standin: Streams | None = None  # set while the range is skipped
    entry: Streams | None = None  # the range input, while it runs


class _RangeHook(ModelHook):
    def __init__(self, owner: BlockRange, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        standin = self._enter(args, kwargs)
        if standin is _OUTSIDE:
            return self.fn_ref.original_forward(*args, **kwargs)
        if standin is not None:
            return self.owner.blocks[self.index].io.join_output(*standin)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.index == len(self.owner.blocks) - 1:
            self._computed(output)
        return output

    # The decisions and the bookkeeping read Python state (the step, what is cached, the call's
    # statistics): under torch.compile they run eagerly, so that a traced graph neither freezes
    # them nor guards on them (which recompiled on the next call); the blocks stay compiled.
    @torch.compiler.disable
    def _enter(self, args: tuple, kwargs: dict) -> Streams | None | object:
        """Streams to return instead of running the block, None to run it, or ``_OUTSIDE``."""
        owner, block = self.owner, self.owner.blocks[self.index]
        context = owner.context
        info = context.current
        if info is None or info.denoiser != owner.denoiser_index:  # outside a tracked forward
            return _OUTSIDE
        state = context.state(owner.key, _ForwardState, by_rows=True)
        if self.index == 0:
            hidden, encoder = block.io.split_input(args, kwargs)
            state.standin = owner.policy.enter(info, hidden, encoder)
            state.entry = None if state.standin is not None else (hidden, encoder)
            if state.standin is not None:
                context.stats.reuse_blocks(len(owner.blocks), [b.name for b in owner.blocks])
        if state.standin is None:
            return None
        return state.standin if self.index == 0 else block.io.split_input(args, kwargs)

    @torch.compiler.disable
    def _computed(self, output: Any) -> None:
        owner, block = self.owner, self.owner.blocks[self.index]
        info = owner.context.current
        state = owner.context.state(owner.key, _ForwardState, by_rows=True)
        hidden, encoder = block.io.split_output(output)
        start_hidden, start_encoder = state.entry
        residual_encoder = None if encoder is None or start_encoder is None else encoder - start_encoder
        owner.policy.computed(info, owner.blocks_only(info, hidden - start_hidden), residual_encoder)
        state.entry = None


_OUTSIDE = object()  # the forward is not one the step tracker follows: run the block as is


class BlockRange:
    """Hooks that let ``policy`` replace ``blocks`` (contiguous, in execution order) of one denoiser."""

    def __init__(
        self,
        context: DenoiseContext,
        denoiser_index: int,
        blocks: Sequence[Block],
        policy: RangePolicy,
        name: str,
    ) -> None:
        if not blocks:
            raise ValueError(f"{name}: the cached block range is empty")
        self.context = context
        self.denoiser_index = denoiser_index
        self.blocks = list(blocks)
        self.policy = policy
        self.hook_name = f"ditaccel.{name}"
        self.key = f"{name}.range"
        order = [b.module for b in flat_blocks(context.adapter, context.adapter.denoisers()[denoiser_index])]
        self.flat_indices = [next(i for i, m in enumerate(order) if m is b.module) for b in self.blocks]

    def blocks_only(self, info: StepInfo, residual: torch.Tensor) -> torch.Tensor:
        """The range's image residual without what the loop added between its blocks (ControlNet
        residuals): served later, the loop adds that step's own after each block again."""
        if not info.additions:
            return residual
        for index in self.flat_indices[:-1]:  # after the last block the loop adds it outside the range
            if index in info.additions:
                residual = residual - info.additions[index]
        return residual

    def attach(self) -> None:
        for index, block in enumerate(self.blocks):
            register_hook(block.module, _RangeHook(self, index), self.hook_name)

    def detach(self) -> None:
        for block in self.blocks:
            remove_hook(block.module, self.hook_name)


class InputProbe(ModelHook):
    """Records the image stream entering a block (the start of a probed block span)."""

    def __init__(self, context: DenoiseContext, denoiser_index: int, io: BlockIO, key: str) -> None:
        super().__init__()
        self.context = context
        self.denoiser_index = denoiser_index
        self.io = io
        self.key = key

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any):
        info = self.context.current
        if info is not None and info.denoiser == self.denoiser_index:
            holder = self.context.state(self.key, dict, by_rows=True)
            holder["hidden"] = self.io.split_input(args, kwargs)[0]
        return args, kwargs
