"""How much each attention layer relies on the reference (context) tokens of an editing pipeline.

For each attention layer in turn, whole calls run with the reference tokens dropped from that
layer's keys (queries, and every other layer, unchanged); the relative L1 change of the final
latents against the unchanged call is the layer's sensitivity. Layers that matter most are the
"pivotal" layers at which context pruning scores tokens (ToPi).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ..attention import sdpa_route

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


def reference_keys(length: int, layout, text_first: bool | None) -> slice | None:
    """Where the reference tokens sit among ``length`` keys, or None when the keys are not the
    (text +) image stream (e.g. cross-attention) or hold no reference."""
    if layout.reference == 0:
        return None
    text = layout.text if layout.text_in_sequence else 0
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
