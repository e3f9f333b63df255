"""``region-edit``: region-aware editing, RegionE for instruction edits and a training-free
HiLo-Token selection for mask edits, with hooks on the transformer instead of a new loop.

Warm-up steps run in full. At the last warm-up step the edited tokens are chosen: for an
instruction edit, those whose one-step clean estimate has turned away from the reference image's
token (:mod:`ditaccel.editing.regions`); for a mask edit, the tokens under the dilated mask plus
the sharpest tokens outside it (:mod:`ditaccel.editing.masks`). On the following region steps the
transformer is called with the edited tokens only (their positions kept), and each attention
layer attends from them to their fresh keys / values plus the keys / values every other token had
at the last full step (the region K/V cache). The unedited tokens are served the velocity of the
last full step: under the flow-matching Euler steps these pipelines take, a constant velocity *is*
the one-step jump to the next full step, so the pipelines' own loops run unchanged. Inside region
steps the edited tokens' velocity is itself reused while its measured change allows
(:mod:`ditaccel.editing.velocity`). A full step at ``refresh`` renews both caches; the last
``final`` steps run in full. A partition that covers the whole image runs every step in full,
which is the plain pipeline.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from diffusers.hooks import ModelHook

from ..attention import sdpa_route
from ..editing.masks import grey, high_frequency_tokens, image_size, mask_pixels, pixel_tokens, single_image
from ..editing.regions import edited_tokens, one_step_estimate
from ..editing.velocity import VelocityCache
from ..hooks.context import DenoiseContext
from ..hooks.install import register_hook, remove_hook
from ..hooks.step_info import StepInfo
from ..pipelines import Adapter
from .base import Method, MethodConfig
from .registry import register_method

_HOOK = "ditaccel.region_edit"
_KEY = "region-edit"


@dataclasses.dataclass(frozen=True)
class RegionEditConfig(MethodConfig):
    """``threshold``: cosine similarity to the reference at or below which a token is edited
    (RegionE's Kontext value; 1: all edited). ``warmup`` / ``refresh``: shares of the schedule
    run in full before the partition / where the caches are renewed; ``final``: last steps in full.
    ``erode`` / ``dilate``: cleaning of the token mask (token-grid radii). ``cache_reference``:
    serve the reference tokens from the K/V cache on region steps. ``velocity_tolerance``: the
    relative velocity change a region step may skip (0: every region step computes the edited
    tokens); ``max_reuse``: most steps in a row served that way. ``budget``: with a mask, the share
    of tokens outside the (dilated) mask recomputed for their high-frequency detail. ``source``:
    where the partition comes from: the call's ``mask_image`` when it has one, else the model's
    estimate (``auto``); always the estimate (instruction edits, a mask is ignored); always the
    mask (mask edits; a call without one is refused). Inpainting pipelines always follow their
    mask. ``composite``: with a mask, the final step lands the tokens outside it on the source
    image's latents."""

    method = "region-edit"
    threshold: float = 0.93
    warmup: float = 0.2
    refresh: float = 0.55
    final: int = 2
    erode: int = 1
    dilate: int = 2
    cache_reference: bool = True
    velocity_tolerance: float = 0.1
    max_reuse: int = 3
    budget: float = 0.1
    source: Literal["auto", "estimate", "mask"] = "auto"
    estimate_outside: bool = True
    composite: bool = False

    def __post_init__(self) -> None:
        self.check_range("threshold", -1.0, 1.0)
        self.check_range("warmup", 0.0, 1.0)
        self.check_range("refresh", 0.0, 1.0)
        self.check_range("final", 1)
        self.check_range("erode", 0)
        self.check_range("dilate", 0)
        self.check_range("velocity_tolerance", 0.0)
        self.check_range("max_reuse", 1)
        self.check_range("budget", 0.0, 1.0)
        if self.source not in ("auto", "estimate", "mask"):
            raise ValueError(f"region-edit: source must be 'auto', 'estimate' or 'mask', got {self.source!r}")

    def full_steps(self, total: int) -> tuple[int, int, int]:
        """(warm-up steps, the refresh step, first final step) for ``total`` steps."""
        warmup = max(1, round(self.warmup * total))
        return warmup, max(warmup, round(self.refresh * total)), max(warmup, total - self.final)


@dataclass
class _Partition:
    """The call's partition, shared by its CFG branches (made by the first to reach it)."""

    checked: bool = False  # the call's first forward was checked
    edited: torch.Tensor | None = None  # bool (image tokens,), on the CPU
    fed: torch.Tensor | None = None  # image-stream indices computed on region steps
    rest: torch.Tensor | None = None  # the others, served from the caches


@dataclass
class _State:
    """One CFG branch's caches."""

    velocity: torch.Tensor | None = None  # the last computed output (whole image stream)
    keys: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # per layer
    regions: bool = False  # region steps run (a partition that leaves tokens out, caches complete)
    cache: VelocityCache | None = None  # of the fed tokens


def _sample(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


class _TransformerHook(ModelHook):
    def __init__(self, method: RegionEdit, context: DenoiseContext) -> None:
        super().__init__()
        self.method, self.context = method, context
        self._output_type = None  # of the transformer's computed outputs, for served ones

    def _like(self, output_is_tuple: bool, velocity: torch.Tensor):
        return (velocity,) if output_is_tuple else self._output_type(sample=velocity)

    def new_forward(self, module, *args, **kwargs):
        info = self.context.current
        method = self.method
        method.phase = "full"
        if info is None or not method.applies(info):
            return self.fn_ref.original_forward(*args, **kwargs)
        method.check_forward(module, info, args, kwargs)
        state = self.context.state(_KEY, _State)
        warmup, refresh, final = method.config.full_steps(info.total)
        part = method.shared()
        regions = state.regions and part.fed is not None  # (a branch that cannot makes all run in full)
        region = regions and warmup <= info.step < final and info.step != refresh
        method.phase = "region" if region else ("store" if info.step in (warmup - 1, refresh) else "full")
        if info.step >= final:
            state.keys.clear()  # no region step is left to read them
        if not region:
            self.context.pinned = method.phase == "store"  # its K/V cache needs every row
            try:
                output = self.fn_ref.original_forward(*args, **kwargs)
            finally:
                self.context.pinned = False
            self._output_type = type(output)
            state.velocity = _sample(output)
            if info.step == warmup - 1:
                method.partition(module, state, info, args, kwargs)
            if not (state.regions and part.fed is not None):
                state.keys.clear()  # nothing will read them
            else:
                if info.step in (warmup - 1, refresh):
                    method.keep_rest(state, part.rest, info)
                state.cache.record(info.step, state.velocity[:, part.fed])
            return self._composited(module, output, info, args, kwargs)
        velocity = state.velocity.clone()
        as_tuple = kwargs.get("return_dict", True) is False
        forecast = state.cache.forecast(info.step) if part.fed.numel() else velocity[:, part.fed]
        if forecast is not None:  # (nothing edited: every token takes the jump)
            self.context.stats.reuse_blocks(self.context.blocks_per_forward)
            velocity[:, part.fed] = forecast
            return self._composited(module, self._like(as_tuple, velocity), info, args, kwargs)
        with self.context.adapter.image_subset(module, args, kwargs, part.fed) as (sub_args, sub_kwargs):
            self.context.rows = _KEY
            try:
                output = self.fn_ref.original_forward(*sub_args, **sub_kwargs)
            finally:
                self.context.rows = ""
        fresh = _sample(output)
        velocity[:, part.fed] = fresh
        state.velocity = velocity
        state.cache.record(info.step, fresh)
        return self._composited(module, self._like(as_tuple, velocity), info, args, kwargs)

    def _composited(self, module, output, info: StepInfo, args, kwargs):
        """At the last step, with ``composite``: the velocity that lands the tokens outside the
        mask on the source latents (the scheduler's Euler step to the last sigma)."""
        method = self.method
        if not (method.config.composite and info.step == info.total - 1 and method.mask() is not None):
            return output
        adapter = self.context.adapter
        source = adapter.source_latents(module, args, kwargs).float()
        latents = adapter.noisy_latents(module, args, kwargs).float()
        outside = ~method.mask_inside(info.layout.grid[1], info.layout.grid[2]).to(source.device)
        sigma, target = method.sigma(info), method.sigma(info, 1)
        velocity = _sample(output).clone()
        landing = (source - latents) / (target - sigma)
        velocity[:, : info.layout.image][:, outside] = landing[:, outside].to(velocity.dtype)
        return (velocity,) if isinstance(output, tuple) else type(output)(sample=velocity)


@register_method("region-edit")
class RegionEdit(Method):
    config_class = RegionEditConfig
    exclusive = "step-cache"
    tasks = frozenset({"edit", "inpaint"})
    call_arguments = frozenset({"mask_image"})

    def __init__(self, config: RegionEditConfig) -> None:
        super().__init__(config)
        self.phase = "full"  # of the current forward: full, store (a full step whose K/V are kept), region
        self.edited_mask: torch.Tensor | None = None  # the last call's partition, (rows, cols)
        self._modules: list[torch.nn.Module] = []
        self._sites: list = []
        self._pixels: torch.Tensor | None = None  # the call's mask, bool (H, W), for mask edits
        self._source: np.ndarray | None = None  # its source image, grey (H, W)

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        for denoiser in adapter.denoisers():
            if (reason := adapter.image_subset_support(denoiser)) is not None:
                raise ValueError(f"region-edit: {reason}")

    def applies(self, info: StepInfo) -> bool:
        """Whether this forward has something to partition: a reference image or a mask."""
        return info.layout.reference > 0 or self.mask() is not None

    def shared(self) -> _Partition:
        return self.context.state(_KEY + ".partition", _Partition, shared=True)

    def sigma(self, info: StepInfo, ahead: int = 0) -> float:
        """The scheduler's sigma at this step (``ahead``: a later one)."""
        scheduler = self.context.pipeline.scheduler
        begin = getattr(scheduler, "begin_index", None) or 0
        return float(scheduler.sigmas[begin + info.step + ahead])

    def check_forward(self, denoiser, info: StepInfo, args, kwargs) -> None:
        """Once per call, at its first forward (before any compute): what only the denoiser's
        inputs tell, the source latents compositing needs."""
        part = self.shared()
        if part.checked:
            return
        part.checked = True
        if self.config.composite and self.mask() is not None:
            layout = info.layout
            same_grid = self.context.adapter.task == "inpaint" or layout.reference_grid == layout.grid[1:]
            if not same_grid or self.context.adapter.source_latents(denoiser, args, kwargs) is None:
                raise ValueError(
                    "region-edit: composite needs the source on the output's token grid "
                    f"{layout.grid[1:]}, the reference is on {layout.reference_grid} "
                    "(pass an image of the output's size and no resizing, e.g. _auto_resize=False for Kontext)"
                )

    def partition(self, denoiser, state: _State, info: StepInfo, args, kwargs) -> None:
        """At the last warm-up step: the call's partition (made by the first CFG branch, used by
        all), and whether this branch's caches let region steps run."""
        layout, c = info.layout, self.config
        part = self.shared()
        if part.edited is None:
            part.edited = self._edited(denoiser, state, info, args, kwargs).cpu()
            _, rows, cols = layout.grid
            self.edited_mask = part.edited.reshape(rows, cols)
            self.context.stats.extra["edited_share"] = float(part.edited.float().mean())
            full_mask = self.mask() is not None and bool(self._pixels.all())
            if part.edited.all() and (full_mask or not c.cache_reference or layout.reference == 0):
                return  # nothing to leave out: every step in full, which is the plain pipeline
            fed = part.edited
            if not c.cache_reference:
                fed = torch.cat([fed, torch.ones(layout.reference, dtype=torch.bool)])
            fed = torch.cat([fed, torch.zeros(layout.image_stream - fed.numel(), dtype=torch.bool)])
            device = state.velocity.device
            part.fed, part.rest = fed.nonzero().flatten().to(device), (~fed).nonzero().flatten().to(device)
            self.context.stats.extra["region_tokens"] = int(part.fed.numel())
        if part.fed is None:
            return
        missing = [site.name for site in self._sites if site.name not in state.keys]
        if missing:
            if "region_fallback" not in self.context.stats.extra:
                warnings.warn(
                    f"region-edit: attention in {missing[0]} is not plain SDPA (a text padding mask?); "
                    "every step runs in full",
                    stacklevel=2,
                )
            self.context.stats.extra["region_fallback"] = 1.0
            self.context.stats.extra.pop("region_tokens", None)
            part.fed = part.rest = None  # every branch of the call runs in full
            return
        state.regions = True
        state.cache = VelocityCache(c.velocity_tolerance, c.max_reuse)

    def keep_rest(self, state: _State, rest: torch.Tensor, info: StepInfo) -> None:
        """Keep only the other tokens' keys / values of this full step (after the text, which
        region steps compute afresh)."""
        index = rest + info.layout.joint_text
        for name, (k, v) in state.keys.items():
            state.keys[name] = (k[:, :, index], v[:, :, index])

    def _edited(self, denoiser, state: _State, info: StepInfo, args, kwargs) -> torch.Tensor:
        """Bool (image tokens,): the tokens recomputed on region steps."""
        layout, c = info.layout, self.config
        _, rows, cols = layout.grid
        if self.mask() is not None:
            edited = self.mask_inside(rows, cols, c.dilate)
            edited |= high_frequency_tokens(self._source, rows, cols, ~edited, c.budget)
            if c.estimate_outside and layout.reference and c.threshold < 1.0:
                edited |= self._estimated(denoiser, state, info, args, kwargs).cpu()
            return edited
        if c.threshold >= 1.0:
            return torch.ones(layout.image, dtype=torch.bool)
        return self._estimated(denoiser, state, info, args, kwargs)

    def _estimated(self, denoiser, state: _State, info: StepInfo, args, kwargs) -> torch.Tensor:
        """Bool (image tokens,): where the one-step clean estimate has left the reference."""
        layout, c = info.layout, self.config
        reference = self.context.adapter.source_latents(denoiser, args, kwargs)
        if reference is None:
            raise ValueError("region-edit: the call has no single reference image to compare the edit with")
        latents = self.context.adapter.noisy_latents(denoiser, args, kwargs)
        estimate = one_step_estimate(latents, state.velocity[:, : layout.image], self.sigma(info))
        _, rows, cols = layout.grid
        return edited_tokens(estimate, reference, rows, cols, c.threshold, c.erode, c.dilate).any(0)

    def prepare_call(self, context: DenoiseContext, arguments, call) -> None:
        self._pixels, self._source, self.edited_mask = None, None, None
        scheduler = context.pipeline.scheduler
        if type(scheduler).__name__ != "FlowMatchEulerDiscreteScheduler" or scheduler.config.get(
            "stochastic_sampling", False
        ):
            raise ValueError(
                "region-edit: the one-step jump and the clean estimate need the deterministic "
                f"FlowMatchEulerDiscreteScheduler, this pipeline has {type(scheduler).__name__}"
            )
        mask = self._wanted_mask(context, arguments)
        if mask is None:
            if self.config.source == "mask":
                raise ValueError("region-edit: source=mask needs a mask_image in the call")
            return
        image = single_image(call.get("image"), "image")
        if image is None:
            raise ValueError("region-edit: a mask edit needs the source image (image=)")
        try:
            mask = single_image(mask, "mask_image")
            pixels = mask_pixels(mask, image_size(image))  # size and emptiness, before compute
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"region-edit: {exc}") from None
        arguments["mask_image"] = mask
        self._pixels, self._source = pixels, grey(image)

    def _wanted_mask(self, context: DenoiseContext, arguments):
        """The call's mask when this edit follows it (not with ``source=estimate``, except on a
        mask-editing pipeline)."""
        if self.config.source == "estimate" and context.adapter.task != "inpaint":
            return None
        return arguments.get("mask_image")

    def mask(self):
        """The mask of the current call that the partition follows, or None."""
        return self._wanted_mask(self.context, self.context.call_arguments)

    def mask_inside(self, rows: int, cols: int, dilate: int = 0) -> torch.Tensor:
        """Bool (rows*cols,): tokens covering any pixel of the current call's mask, dilated."""
        return pixel_tokens(self._pixels, rows, cols, dilate)

    def _routing(self) -> bool:
        """Whether this forward's attention goes through the handler (K/V kept or merged)."""
        return self.phase != "full" and self.context.current is not None

    def _attention(self, name: str):
        def handler(q, k, v, scale):
            info = self.context.current
            if info is None or self.phase == "full" or not self.applies(info):
                return None
            state = self.context.state(_KEY, _State)
            if self.phase == "store":
                state.keys[name] = (k, v)  # every token's, narrowed to the others after the forward
                return None
            cached_k, cached_v = state.keys[name]
            k_all = torch.cat([k, cached_k], dim=2)
            v_all = torch.cat([v, cached_v], dim=2)
            return torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, scale=scale)

        return handler

    def apply(self, context: DenoiseContext) -> None:
        self.context = context
        self._sites = []
        for denoiser in context.adapter.denoisers():
            register_hook(denoiser, _TransformerHook(self, context), _HOOK)
            self._modules.append(denoiser)
            for site in context.adapter.sequence_attention_sites(denoiser):
                sdpa_route.attach(site.module, _HOOK, self._attention(site.name), active=self._routing)
                self._modules.append(site.module)
                self._sites.append(site)

    def remove(self, context: DenoiseContext) -> None:
        for module in self._modules:
            remove_hook(module, _HOOK)
        self._modules.clear()
        self._sites = []
