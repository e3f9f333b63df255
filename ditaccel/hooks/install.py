"""Putting ditaccel's hooks on a module, and taking them off, beneath any hook accelerate holds
there (model or sequential CPU offload).

Both hook systems replace ``module.forward``. accelerate remembers the forward it wrapped and puts
it back when the pipeline re-arms model offload at the end of every call
(``maybe_free_model_hooks``), so a hook registered on top of accelerate's would silently vanish
after the first call (and one taken off would take accelerate's with it). Registering with
accelerate's hook lifted off and put back on keeps accelerate outermost, the order offloading
enabled after wrapping gives anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from diffusers.hooks import HookRegistry, ModelHook
from torch import nn


@contextmanager
def _beneath_accelerate(module: nn.Module) -> Iterator[None]:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        yield
        return
    from accelerate.hooks import add_hook_to_module, remove_hook_from_module

    remove_hook_from_module(module)
    try:
        yield
    finally:
        add_hook_to_module(module, hook)


def register_hook(module: nn.Module, hook: ModelHook, name: str) -> None:
    """``HookRegistry.register_hook`` on ``module``, beneath accelerate's hook if it has one."""
    with _beneath_accelerate(module):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def remove_hook(module: nn.Module, name: str) -> None:
    """Take ``name`` off ``module`` (not its children), leaving accelerate's hook in place."""
    with _beneath_accelerate(module):
        HookRegistry.check_if_exists_or_initialize(module).remove_hook(name, recurse=False)
