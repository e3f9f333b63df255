"""A diffusers ``ModelHook`` on each denoiser that tells the shared context where the loop is.

It changes no argument and no output. Being stateful, it also receives the pipeline's
``cache_context`` name (``cond`` / ``uncond``) where the pipeline sets one.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .context import DenoiseContext
from .install import register_hook, remove_hook

HOOK_NAME = "ditaccel.step_tracker"


class _NoState(BaseState):
    def reset(self) -> None:
        pass


class StepTrackerHook(ModelHook):
    _is_stateful = True

    def __init__(self, context: DenoiseContext, denoiser_index: int) -> None:
        super().__init__()
        self.context = context
        self.denoiser_index = denoiser_index
        # Receives the pipeline's cache_context (diffusers sets it on stateful hooks' managers).
        self.cache_context = StateManager(_NoState)

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        if _calling_pipeline() not in (None, self.context.pipeline):
            # another pipeline object sharing this transformer (Pipeline(**pipe.components),
            # from_pipe): its forwards run plain, the methods see no step and touch nothing
            self.context.current = None
            return args, kwargs
        named = self.cache_context._context
        self.context.enter_forward(self.denoiser_index, module, args, kwargs, named.name if named else "")
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.context.exit_forward()
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.context.exit_forward()
        return module


def _calling_pipeline() -> Any:
    """The diffusers pipeline whose ``__call__`` this forward runs in (the innermost), or None when
    no pipeline call is on the stack (a transformer called directly)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "__call__":
            owner = frame.f_locals.get("self")
            if owner is not None and hasattr(type(owner), "components") and hasattr(owner, "scheduler"):
                return owner
        frame = frame.f_back
    return None


def ensure_unwrapped(denoisers: list[torch.nn.Module]) -> None:
    """ValueError when another AcceleratedPipeline already holds these denoisers."""
    for denoiser in denoisers:
        registry = getattr(denoiser, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(HOOK_NAME) is not None:
            raise ValueError(
                "this pipeline's transformer is already wrapped by an AcceleratedPipeline; "
                "call .remove() on that one first"
            )


def attach(context: DenoiseContext) -> None:
    """Put a tracker on every denoiser of the context's pipeline (outermost hook)."""
    ensure_unwrapped(context.adapter.denoisers())
    for index, denoiser in enumerate(context.adapter.denoisers()):
        register_hook(denoiser, StepTrackerHook(context, index), HOOK_NAME)


def detach(context: DenoiseContext) -> None:
    for denoiser in context.adapter.denoisers():
        remove_hook(denoiser, HOOK_NAME)
