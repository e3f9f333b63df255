"""``block-external``: block-external attention reuse (FlashBlock) for in-context and joint-attention DiTs.

Some tokens of a call condition the result without being generated: the reference image that
Kontext and Qwen-Image-Edit append to the image stream, and the text tokens every MMDiT carries
through its blocks. What the generated tokens' queries take from them moves slowly across steps.
On *refresh* steps (the first ``warmup`` steps, every ``refresh``-th step counted from the
last of them, the last ``final`` steps) the transformer runs in full and every attention layer keeps, per CFG branch,
what later steps need of the external tokens. On the *cached* steps between, the external tokens
leave the call (their rows are not projected, attended or sent through the MLPs; positions of the
others are kept), and in every attention layer each remaining query's attention is the exact LSE
merge of its fresh attention over the internal keys with the external part:

- ``mode=output`` (FlashBlock): the external partial output and log-sum-exp stored at the refresh
  step are reused, so the external keys are not attended at all;
- ``mode=kv``: the external keys / values stored at the refresh step are attended afresh (exact
  as long as they have not moved; costs their attention, saves their rows).

Which tokens are external comes from the adapter's token layout (``reference``: the image-stream
tokens after the generated ones; ``text``: the text tokens of a joint-attention sequence).
``refresh=1`` runs every step in full: the plain pipeline, bit for bit.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers.hooks import ModelHook

from ..attention import sdpa_route
from ..attention.external import sequence_indices
from ..hooks.context import DenoiseContext
from ..hooks.install import register_hook, remove_hook
from ..hooks.rows import full_length
from ..kernels.attention import attention_with_lse, merge_attention
from ..pipelines import Adapter, TokenLayout
from .base import Method, MethodConfig
from .registry import register_method

_HOOK = "ditaccel.block_external"
_KEY = "block-external"
EXTERNAL_KINDS = ("reference", "text", "reference+text")


@dataclasses.dataclass(frozen=True)
class BlockExternalConfig(MethodConfig):
    """``external``: which tokens are served from the cache on cached steps. ``refresh``: steps
    from one refresh (a full step that renews the cache) to the next (1: every step in full).
    ``mode``: ``output`` reuses the external partial attention output and LSE, ``kv`` attends the
    cached external keys / values afresh. ``warmup`` / ``final``: first / last steps always run in
    full. ``measure`` (a diagnostic, not a speed-up): cached steps still compute the external rows,
    serve every internal query the cached external part as usual, and record per layer the
    relative error of that attention output against full attention with the fresh external keys
    (``pipe.stats.extra["external_error"]``: layer -> [[step, error], ...]) and how much the cached
    part moved from one refresh to the next (``extra["external_drift"]``: layer -> mean relative
    change); the generated tokens get what an unmeasured cached step gives them."""

    method = "block-external"
    external: Literal["reference", "text", "reference+text"] = "reference"
    refresh: int = 4
    mode: Literal["output", "kv"] = "output"
    warmup: int = 2
    final: int = 1
    measure: bool = False

    def __post_init__(self) -> None:
        if self.external not in EXTERNAL_KINDS:
            raise ValueError(
                f"block-external: external must be one of {', '.join(EXTERNAL_KINDS)}, got {self.external!r}"
            )
        if self.mode not in ("output", "kv"):
            raise ValueError(f"block-external: mode must be 'output' or 'kv', got {self.mode!r}")
        self.check_range("refresh", 1)
        self.check_range("warmup", 1)
        self.check_range("final", 0)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.external.split("+"))

    def is_refresh(self, step: int, total: int) -> bool:
        """Whether ``step`` of ``total`` runs in full and renews the cache."""
        if self.refresh == 1 or step < self.warmup or step >= total - self.final:
            return True
        return (step - self.warmup + 1) % self.refresh == 0  # the last warm-up step stores


@dataclass
class _Site:
    """What one attention layer keeps of the last refresh step."""

    internal: torch.Tensor  # indices of the internal tokens in the full sequence, in order
    external: torch.Tensor  # indices of the external tokens
    keys: tuple[torch.Tensor, torch.Tensor] | None = None  # mode=kv: external K, V
    partial: tuple[torch.Tensor, torch.Tensor] | None = (
        None  # mode=output: (O_ext, L_ext) of internal queries
    )


@dataclass
class _State:
    """One CFG branch's cache, per attention layer; ``ready``: every layer has stored."""

    sites: dict[str, _Site] = field(default_factory=dict)
    plain: set[str] = field(default_factory=set)  # layers whose sequence holds no external token
    ready: bool = False
    drift: dict[str, list[float]] = field(default_factory=dict)  # per layer, change at each refresh


def _relative(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new.float() - old.float()).abs().mean() / old.float().abs().mean().clamp_min(1e-12))


class _TransformerHook(ModelHook):
    def __init__(self, method: BlockExternal, context: DenoiseContext) -> None:
        super().__init__()
        self.method, self.context = method, context

    def new_forward(self, module, *args, **kwargs):
        info = self.context.current
        method = self.method
        method.phase = "full"
        context = self.context
        if info is None or not method.has_external(info.layout) or context.rows:
            # (an outer method already runs this forward on a subset of the tokens: region-edit's
            # region steps, which serve the reference from their own K/V cache)
            return self.fn_ref.original_forward(*args, **kwargs)
        config = method.config
        state = context.state(_KEY, _State)
        cached = state.ready and not context.pinned and not config.is_refresh(info.step, info.total)
        if not cached:
            following_cached = not config.is_refresh(info.step + 1, info.total)
            if state.ready and not following_cached:
                return self.fn_ref.original_forward(*args, **kwargs)  # nothing to keep: plain
            method.phase = "store"
            method.begin_store(following_cached)
            output = self.fn_ref.original_forward(*args, **kwargs)
            method.end_store(state)
            return output
        method.phase = "cached"
        extra = context.stats.extra
        extra["external_cached_forwards"] = extra.get("external_cached_forwards", 0) + 1
        if config.measure:
            return self.fn_ref.original_forward(*args, **kwargs)
        with method.without_external(module, info.layout, args, kwargs) as (sub_args, sub_kwargs):
            context.rows = _KEY
            try:
                output = self.fn_ref.original_forward(*sub_args, **sub_kwargs)
            finally:
                context.rows = ""
        return full_length(output, info.layout.image_stream)


@register_method("block-external")
class BlockExternal(Method):
    config_class = BlockExternalConfig
    inner = True  # inside region-edit's hook: it sees whether region-edit already subsets the call
    combinable = frozenset({"deepcache", "adaptive-cache", "calibrated-cache", "region-edit"})
    combination_note = (
        "its attention handler and a sparse-attention handler would both answer the same SDPA call "
        "(block-sparse attention over the fresh part merged with the cached external part is not built)"
    )

    def check_combination(self, configs) -> None:
        if "text" in self.config.kinds and any(c.method == "region-edit" for c in configs):
            raise ValueError(
                "block-external: external=text cannot be combined with region-edit: on region steps both "
                "would extend the same attention with cached keys (use external=reference)"
            )

    def __init__(self, config: BlockExternalConfig) -> None:
        super().__init__(config)
        self.phase = "full"  # of the current forward: full, store (a full step that fills the cache), cached
        self._modules: list[torch.nn.Module] = []
        self._sites: list = []
        self._stored: set[str] = set()  # layers that stored on the current refresh forward
        self._ran: set[str] = set()  # layers whose attention ran on it
        self._following_cached = False

    # --- construction ---------------------------------------------------------------------------
    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        kinds = self.config.kinds
        if "reference" in kinds and adapter.task != "edit":
            raise ValueError(
                "block-external: external=reference needs an in-context editing pipeline (its calls carry "
                f"reference-image tokens), not {type(adapter.pipeline).__name__} ({adapter.task})"
            )
        for denoiser in adapter.denoisers():
            if "reference" in kinds and (reason := adapter.image_subset_support(denoiser)) is not None:
                raise ValueError(f"block-external: {reason}")
            if "text" in kinds:
                if not any(site.kind == "joint" for site in adapter.attention_sites(denoiser)):
                    raise ValueError(
                        f"block-external: external=text needs joint attention over text and image tokens; "
                        f"{type(adapter.pipeline).__name__} takes its text by cross-attention"
                    )
                if (reason := adapter.text_subset_support(denoiser)) is not None:
                    raise ValueError(f"block-external: {reason}")

    def has_external(self, layout: TokenLayout) -> bool:
        kinds = self.config.kinds
        text = layout.text - self.context.adapter.text_rows_kept
        return ("reference" in kinds and layout.reference > 0) or (
            "text" in kinds and text > 0 and layout.text_in_sequence
        )

    # --- the call without the external rows -----------------------------------------------------------
    def without_external(self, denoiser, layout: TokenLayout, args, kwargs):
        adapter = self.context.adapter
        kinds = self.config.kinds
        if "reference" in kinds and layout.reference > 0:
            index = torch.arange(
                layout.image, device=adapter.argument("hidden_states", 0, args, kwargs).device
            )
            subset = adapter.image_subset(denoiser, args, kwargs, index)
        else:
            subset = _passthrough(args, kwargs)
        if "text" in kinds and layout.text > adapter.text_rows_kept:
            return _chain(subset, lambda a, k: adapter.without_text(denoiser, a, k))
        return subset

    # --- refresh steps ----------------------------------------------------------------------------------
    def begin_store(self, following_cached: bool) -> None:
        self._ran, self._stored = set(), set()
        self._following_cached = following_cached

    def end_store(self, state: _State) -> None:
        """After a refresh forward: every layer that ran has stored (or has no external token);
        one whose attention was not plain SDPA makes the call run in full."""
        missing = sorted(self._ran - self._stored)
        if missing:
            if "external_fallback" not in self.context.stats.extra:
                warnings.warn(
                    f"block-external: attention in {missing[0]} is not plain SDPA over the call's tokens "
                    "(a text padding mask?); every step runs in full",
                    stacklevel=2,
                )
            self.context.stats.extra["external_fallback"] = 1.0
            state.ready = False
            state.sites.clear()
            return
        # layers a step cache served on this forward keep the part stored when they last ran
        known = set(state.sites) | state.plain
        state.ready = state.ready or all(site.name in known for site in self._sites)

    # --- attention ------------------------------------------------------------------------------------
    def _routing(self, site) -> Callable[[], bool]:
        def active() -> bool:
            if self.phase == "store" and self.context.current is not None:
                self._ran.add(site.name)
                return True
            return self.phase == "cached" and self.context.current is not None

        return active

    def _attention(self, site):
        def handler(q, k, v, scale):
            info = self.context.current
            if info is None or self.phase not in ("store", "cached"):
                return None
            state = self.context.state(_KEY, _State)
            if self.phase == "store":
                self._store(state, site, info.layout, q, k, v, scale)
                return None
            return self._serve(state, site, q, k, v, scale)

        return handler

    def _store(self, state: _State, site, layout: TokenLayout, q, k, v, scale) -> None:
        text_first = site.text_first if site.text_first is not None else True
        kept = self.context.adapter.text_rows_kept
        indices = sequence_indices(layout, q.shape[2], text_first, self.config.kinds, kept)
        if indices is None:
            return  # not over the call's tokens: end_store falls back to full steps
        internal, external = (i.to(q.device) for i in indices)
        self._stored.add(site.name)
        if external.numel() == 0:  # no external token in this layer's sequence: plain attention
            state.plain.add(site.name)
            return
        old = state.sites.get(site.name)
        if self.config.mode == "output" and not self._following_cached and old is not None:
            return  # no cached step before the next refresh: keep the partial, skip its cost
        entry = _Site(internal, external)
        if self.config.mode == "kv":
            entry.keys = (k[:, :, external], v[:, :, external])
        if self.config.mode == "output":
            entry.partial = attention_with_lse(q[:, :, internal], k[:, :, external], v[:, :, external], scale)
        if self.config.measure and old is not None:
            before = old.partial[0] if old.partial is not None else old.keys[0]
            after = entry.partial[0] if entry.partial is not None else entry.keys[0]
            if before.shape == after.shape:
                state.drift.setdefault(site.name, []).append(_relative(after, before))
                self.context.stats.extra["external_drift"] = {
                    name: sum(values) / len(values) for name, values in state.drift.items()
                }
        state.sites[site.name] = entry

    def _serve(self, state: _State, site, q, k, v, scale) -> torch.Tensor | None:
        if site.name in state.plain:
            return None  # a layer without external tokens in its sequence (e.g. image-only attention)
        entry = state.sites[site.name]
        if self.config.measure:
            return self._measured(entry, site, q, k, v, scale)
        if q.shape[2] != entry.internal.numel():
            raise RuntimeError(
                f"block-external: {site.name} got {q.shape[2]} tokens on a cached step, expected "
                f"{entry.internal.numel()} (the call's layout changed inside a step)"
            )
        return self._cached_attention(entry, q, k, v, scale)

    def _cached_attention(self, entry: _Site, q, k, v, scale) -> torch.Tensor:
        """Internal queries over fresh internal keys merged with the cached external part."""
        if self.config.mode == "kv":
            ek, ev = entry.keys
            return torch.nn.functional.scaled_dot_product_attention(
                q, torch.cat([k, ek], dim=2), torch.cat([v, ev], dim=2), scale=scale
            )
        fresh, fresh_lse = attention_with_lse(q, k, v, scale)
        return merge_attention(fresh, fresh_lse, *entry.partial)[0]

    def _measured(self, entry: _Site, site, q, k, v, scale) -> torch.Tensor:
        """A cached step that still computes the external rows: the internal queries get the
        cached external part, and its error against full attention is recorded."""
        sdpa = torch.nn.functional.scaled_dot_product_attention
        internal = entry.internal
        full = sdpa(q, k, v, scale=scale)
        qi, ki, vi = q[:, :, internal], k[:, :, internal], v[:, :, internal]
        served = self._cached_attention(entry, qi, ki, vi, scale)
        errors = self.context.stats.extra.setdefault("external_error", {})
        errors.setdefault(site.name, []).append(
            [self.context.current.step, _relative(served, full[:, :, internal])]
        )
        full[:, :, internal] = served
        return full

    # --- lifecycle ----------------------------------------------------------------------------------------
    def apply(self, context: DenoiseContext) -> None:
        self.context = context
        self._sites = []
        for denoiser in context.adapter.denoisers():
            register_hook(denoiser, _TransformerHook(self, context), _HOOK)
            self._modules.append(denoiser)
            for site in context.adapter.sequence_attention_sites(denoiser):
                sdpa_route.attach(site.module, _HOOK, self._attention(site), active=self._routing(site))
                self._modules.append(site.module)
                self._sites.append(site)

    def remove(self, context: DenoiseContext) -> None:
        for module in self._modules:
            remove_hook(module, _HOOK)
        self._modules.clear()
        self._sites = []


class _passthrough:
    """A context manager that hands back the call unchanged."""

    def __init__(self, args, kwargs) -> None:
        self.value = (args, kwargs)

    def __enter__(self):
        return self.value

    def __exit__(self, *exc) -> None:
        return None


class _chain:
    """Enter ``first``, then ``then(*its value)``; hand back the second's value."""

    def __init__(self, first, then) -> None:
        self.first, self.then, self.second = first, then, None

    def __enter__(self):
        args, kwargs = self.first.__enter__()
        self.second = self.then(args, kwargs)
        try:
            return self.second.__enter__()
        except BaseException:
            self.first.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.second.__exit__(*exc)
        finally:
            self.first.__exit__(*exc)
