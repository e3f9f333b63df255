"""How much each attention layer relies on the reference (context) tokens of an editing pipeline.

The layers that matter most are the "pivotal" layers at which ``context-prune`` scores the reference
tokens (ToPi). Two measurements:

- :func:`context_sensitivity` (exact, ``layers`` whole calls per prompt): for each attention layer in
  turn, whole calls run with the reference tokens dropped from that layer's keys (queries, and every
  other layer, unchanged); the relative L1 change of the final latents is the layer's sensitivity.
- :func:`context_sensitivity_proxy` (one call per prompt plus ``layers`` forwards per sampled step):
  at a few steps of the unchanged trajectory the forward is run again once per layer with the
  reference dropped there, and the relative L1 change of that forward's output on the generated
  tokens is the sensitivity. Affordable on deep models (57 blocks in FLUX.1); validated against the
  exact one on shapes-flux (``benchmarks/context_sensitivity_proxy.py``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook

from ..attention import sdpa_route
from ..hooks.install import register_hook, remove_hook

_HOOK = "ditaccel.profiler.drop_context"


def relative_l1(a: torch.Tensor, b: torch.Tensor, reference: torch.Tensor) -> float:
    return float((a - b).abs().mean() / reference.abs().mean().clamp_min(1e-12))


def context_sensitivity(pipe: Any, sites: list, calls: list[dict[str, Any]], steps: int, tick) -> tuple[list[str], list[float]]:  # fmt: skip
    """Per attention layer (of ``sites``) whose keys hold reference tokens: the mean over ``calls``
    of the output change when they are dropped there. ``pipe``: an AcceleratedPipeline with no
    methods; ``tick(description)`` is called once per call."""
    changes: dict[str, list[float]] = defaultdict(list)
    for kwargs in calls:
        call = {**kwargs, "num_inference_steps": steps, "output_type": "latent"}
        base = _first_tensor(pipe(**call))
        for site in sites:
            dropped = [0]
            sdpa_route.attach(site.module, _HOOK, _drop_reference(pipe.context, site, dropped))
            try:
                out = _first_tensor(pipe(**call))
            finally:
                sdpa_route.detach(site.module, _HOOK)
            if dropped[0]:
                changes[site.name].append(relative_l1(out, base, base))
        tick("context sensitivity")
    layers = [s.name for s in sites if changes[s.name]]
    return layers, [round(float(np.mean(changes[name])), 6) for name in layers]


def proxy_steps(steps: int, count: int) -> list[int]:
    """``count`` steps spread over a schedule of ``steps`` (its first and last included)."""
    if count >= steps:
        return list(range(steps))
    return sorted({round(i * (steps - 1) / max(count - 1, 1)) for i in range(count)})


class _Perturb(ModelHook):
    """On the denoiser (outside the step tracker): at the sampled steps, run the forward again with
    the reference dropped at each layer in turn and record the change of the generated tokens'
    output. ``seen`` holds the step info of the forward that just ran (set from inside it)."""

    def __init__(
        self, context, sites: list, at: set[int], changes: dict[str, list[float]], seen: list
    ) -> None:
        super().__init__()
        self.context, self.sites, self.at, self.changes, self.seen = context, sites, at, changes, seen

    def new_forward(self, module, *args, **kwargs):
        self.seen.clear()
        output = self.fn_ref.original_forward(*args, **kwargs)
        info = self.seen[0] if self.seen else None
        if info is None or info.step not in self.at or info.layout.reference == 0:
            return output
        image = info.layout.image
        base = _first_tensor(output)[:, :image]
        for site in self.sites:
            dropped = [0]
            sdpa_route.attach(site.module, _HOOK, _drop_reference(self.context, site, dropped))
            try:
                changed = _first_tensor(self.fn_ref.original_forward(*args, **kwargs))[:, :image]
            finally:
                sdpa_route.detach(site.module, _HOOK)
            if dropped[0]:
                self.changes[site.name].append(relative_l1(changed, base, base))
        return output


def context_sensitivity_proxy(pipe: Any, sites: list, calls: list[dict[str, Any]], steps: int, tick, count: int = 6) -> tuple[list[str], list[float]]:  # fmt: skip
    """Per attention layer (of ``sites``) whose keys hold reference tokens: the mean over ``calls``
    and ``count`` sampled steps of one forward's output change when they are dropped there (see
    the module docstring). ``pipe``: an AcceleratedPipeline with no methods."""
    changes: dict[str, list[float]] = defaultdict(list)
    hook, handles, seen = "ditaccel.profiler.context_proxy", [], []
    at = set(proxy_steps(steps, count))
    for denoiser in pipe.adapter.denoisers():
        register_hook(denoiser, _Perturb(pipe.context, sites, at, changes, seen), hook)
        first = pipe.adapter.blocks(denoiser)[0][1]  # inside the forward: the step is known there
        handles.append(
            first.register_forward_pre_hook(
                lambda *_: seen.append(pipe.context.current) if not seen else None
            )
        )
    try:
        for kwargs in calls:
            pipe(**{**kwargs, "num_inference_steps": steps, "output_type": "latent"})
            tick("context sensitivity")
    finally:
        for handle in handles:
            handle.remove()
        for denoiser in pipe.adapter.denoisers():
            remove_hook(denoiser, hook)
    layers = [s.name for s in sites if changes[s.name]]
    return layers, [round(float(np.mean(changes[name])), 6) for name in layers]


def reference_keys(length: int, layout, text_first: bool | None) -> slice | None:
    """Where the reference tokens sit among ``length`` keys, or None when the keys are not the
    (text +) image stream (e.g. cross-attention) or hold no reference."""
    if layout.reference == 0:
        return None
    text = layout.joint_text
    if length != text + layout.image_stream:
        return None
    start = (text if text_first else 0) + layout.image
    return slice(start, start + layout.reference)


def _drop_reference(context, site, dropped: list[int]):
    def handler(q, k, v, scale):
        info = context.current
        where = None if info is None else reference_keys(k.shape[2], info.layout, site.text_first)
        if where is None:
            return None
        keep = torch.ones(k.shape[2], dtype=torch.bool, device=k.device)
        keep[where] = False
        dropped[0] += 1
        return torch.nn.functional.scaled_dot_product_attention(q, k[:, :, keep], v[:, :, keep], scale=scale)

    return handler


def _first_tensor(output: Any) -> torch.Tensor:
    value = output if isinstance(output, torch.Tensor) else output[0]
    return value.float() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value)).float()
