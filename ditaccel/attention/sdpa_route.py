"""Hand the attention computed inside one attention module to another implementation.

Every supported family computes attention with ``torch.nn.functional.scaled_dot_product_attention``
(directly, or through diffusers' attention dispatcher), each with its own processor around it. A
:class:`SDPARoute` hook on one attention module *instance* runs that module's forward under a
``TorchFunctionMode`` that offers each plain SDPA call (no mask, not causal, no dropout, same head
count for keys) to a handler; a handler returns the output or ``None`` to let SDPA run. Nothing
changes outside the forward of that instance, so other modules and other pipelines are untouched,
and the processors keep doing everything else (projections, norms, RoPE).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.hooks import ModelHook
from torch import nn
from torch.overrides import TorchFunctionMode

from ..hooks.install import register_hook, remove_hook

Handler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "float | None"], "torch.Tensor | None"]

_SDPA = torch.nn.functional.scaled_dot_product_attention


class _Route(TorchFunctionMode):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA:
            out = self._offer(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)

    def _offer(
        self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
    ):
        if attn_mask is not None or is_causal or dropout_p or query.dim() != 4:
            return None
        if key.shape[1] != query.shape[1]:
            return None
        return _run_handler(self.handler, query, key, value, scale)


@torch.compiler.disable
def _run_handler(handler: Handler, query, key, value, scale):
    """The handler runs eagerly under ``torch.compile``: it decides from Python state (the step,
    what is cached) that a traced graph would freeze at its first trace."""
    return handler(query, key, value, scale)


class SDPARoute(ModelHook):
    """On one attention module: offer its SDPA calls to ``handler`` (stateless). ``active`` says
    whether this forward needs the handler at all; when it does not, the forward runs without the
    function mode (which costs Python work on every torch call inside it)."""

    _is_stateful = False

    def __init__(self, handler: Handler, active: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.handler, self.active = handler, active

    def new_forward(self, module: nn.Module, *args, **kwargs):
        if self.active is not None and not self.active():
            return self.fn_ref.original_forward(*args, **kwargs)
        with _Route(self.handler):
            return self.fn_ref.original_forward(*args, **kwargs)


def attach(module: nn.Module, name: str, handler: Handler, active: Callable[[], bool] | None = None) -> None:
    register_hook(module, SDPARoute(handler, active), name)


def detach(module: nn.Module, name: str) -> None:
    remove_hook(module, name)
