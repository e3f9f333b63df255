"""The candidates ``ditaccel tune`` measures: every method that applies to the pipeline, over its
main knob, and combinations of one step cache with one token method.

Whether a method applies is decided by the method itself: a candidate is kept when
:class:`~ditaccel.pipelines.accelerated.AcceleratedPipeline` accepts it on this pipeline (task,
family, a calibration profile where it needs one, combination rules), so a new family or method
needs no table here. The knob values span each method's documented range from close to its exact
setting to its most aggressive useful one; ``calibrated-cache`` takes the targets its profile holds
plans for. Sparse attention joins only when the attention sequence spans enough kernel blocks for
its densities to skip one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers.hooks import ModelHook

from ..calibration.planner import DEFAULT_TARGETS
from ..calibration.profile import Profile
from ..hooks.install import register_hook, remove_hook
from ..methods import resolve_methods
from ..methods.registry import method_class, split_methods
from ..methods.sparse_attention import SparseAttentionConfig
from .search import Point, front

STEP_CACHE = "step-cache"
# main knob of each method, from near-exact to aggressive (docs/methods/*.md give the ranges)
DEEPCACHE_INTERVALS = (2, 3, 4, 5)
ADAPTIVE_THRESHOLDS = (0.03, 0.05, 0.1, 0.2, 0.3)
REGION_EDIT_REUSE = (3, 5)  # max_reuse with source=estimate,final=1 (the README's edit setting)
BLOCK_EXTERNAL = ("refresh=4,mode=kv", "refresh=12,warmup=1,final=0,mode=kv")
CONTEXT_KEEP = (0.5, 0.25, 0.1)  # with pivotal=2
SPARSE_DENSITIES = (0.5, 0.25)


@dataclass(frozen=True)
class CandidateContext:
    """What decides the candidates: the pipeline's task, whether the inputs carry masks, the
    profiles given (``None``: the method looks for the one shipped with the model, ``shipped``)
    and the attention sequence length of a call."""

    task: str
    masks: bool = False
    profile: Path | None = None
    edit_profile: Path | None = None
    sequence: int | None = None
    shipped: Path | None = None  # the model's own profile: its plan targets, when no profile is given


def _with_profile(spec: str, profile: Path | None) -> str:
    """``spec`` with ``profile=`` added (``None``: the method's shipped-profile lookup)."""
    if profile is None:
        return spec
    return f"{spec}{',' if ':' in spec else ':'}profile={profile}"


def with_profiles(spec: str, profile: Path | None, edit_profile: Path | None) -> str:
    """``spec`` with the tune's profiles given to its ``calibrated-cache`` (``profile``) and
    ``context-prune`` (``edit_profile``) parts that name none, so a user's ``--candidate`` runs
    with the profile given or calibrated for this tune, as the proposed candidates do."""
    parts = []
    for part in split_methods(spec):
        name, _, params = part.strip().partition(":")
        given = {"calibrated-cache": profile, "context-prune": edit_profile}.get(name.strip())
        names = {pair.partition("=")[0].strip() for pair in params.split(",")} if params else set()
        parts.append(part.strip() if "profile" in names else _with_profile(part.strip(), given))
    return "+".join(parts)


def cache_ratios(profile: Path | None) -> tuple[float, ...]:
    """The flops_ratio targets a profile has calibrated-cache plans for (else the planner's)."""
    if profile is None or not Path(profile).is_file():
        return tuple(DEFAULT_TARGETS)
    plans = Profile.load(profile).plans.get("calibrated-cache", [])
    targets = sorted(
        {float(p["target"]["flops_ratio"]) for p in plans if "flops_ratio" in p.get("target", {})}
    )
    return tuple(targets) or tuple(DEFAULT_TARGETS)


def sparse_applies(sequence: int | None, density: float) -> bool:
    """Whether block-sparse attention at ``density`` can skip a key block of a ``sequence``-token
    attention: it keeps ``ceil(density * blocks)`` of the sequence's blocks."""
    if sequence is None:
        return False
    blocks = math.ceil(sequence / SparseAttentionConfig.block)
    return math.ceil(density * blocks) < blocks


def proposed(context: CandidateContext) -> list[str]:
    """Every single-method candidate for ``context`` (before the pipeline is asked)."""
    specs = [f"deepcache:interval={n}" for n in DEEPCACHE_INTERVALS]
    specs += [f"adaptive-cache:threshold={t}" for t in ADAPTIVE_THRESHOLDS]
    ratios = cache_ratios(context.profile or context.shipped)
    specs += [_with_profile(f"calibrated-cache:flops_ratio={r}", context.profile) for r in ratios]
    if context.task == "edit":
        specs += [f"region-edit:source=estimate,final=1,max_reuse={n}" for n in REGION_EDIT_REUSE]
        if context.masks:
            specs.append("region-edit:source=mask")
        specs += [f"block-external:{b}" for b in BLOCK_EXTERNAL]
        specs += [
            _with_profile(f"context-prune:keep={k},pivotal=2", context.edit_profile) for k in CONTEXT_KEEP
        ]
    specs += [
        f"sparse-attention:density={d}" for d in SPARSE_DENSITIES if sparse_applies(context.sequence, d)
    ]
    return specs


def applicable(pipe: Any, specs: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The specs this pipeline accepts, and why it refuses the others (spec -> reason)."""
    from ..pipelines.accelerated import AcceleratedPipeline

    kept, refused = [], {}
    for spec in specs:
        try:
            resolve_methods(spec)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. a t2i profile on an editing pipeline: measured anyway
                AcceleratedPipeline.from_pipe(pipe, methods=spec).remove()
        except ValueError as exc:
            refused[spec] = str(exc)
        else:
            kept.append(spec)
    return kept, refused


def is_step_cache(spec: str) -> bool:
    """Whether ``spec`` is one step cache (a method of the step-cache group) alone."""
    configs = resolve_methods(spec)
    return len(configs) == 1 and method_class(configs[0].method).exclusive == STEP_CACHE


def combinations(points: dict[str, Point]) -> list[str]:
    """One step cache on the first rung's front of step caches with one token method on the front
    of token methods (the others are beaten on their own already), where the two compose."""
    singles = [p for p in points.values() if len(resolve_methods(p.spec)) == 1]
    caches = front([p for p in singles if is_step_cache(p.spec)])
    tokens = front([p for p in singles if not is_step_cache(p.spec)])
    combined = []
    for cache in caches:
        for token in tokens:
            spec = f"{cache.spec}+{token.spec}"
            try:
                resolve_methods(spec)
            except ValueError:
                continue  # e.g. context-prune composes with region-edit only
            combined.append(spec)
    return combined


class _LayoutProbe(ModelHook):
    """Records the token layout of each denoiser forward (for the attention sequence length)."""

    def __init__(self, adapter: Any) -> None:
        super().__init__()
        self.adapter = adapter
        self.lengths: list[int] = []

    def pre_forward(self, module, *args, **kwargs):
        layout = self.adapter.token_layout(module, args, kwargs)
        text = layout.text if layout.text_in_sequence else 0
        self.lengths.append(layout.image + layout.reference + text)
        return args, kwargs


def sequence_length(pipe: Any, call: dict[str, Any]) -> int | None:
    """The longest attention sequence of the first denoising step of ``call`` (one step run)."""
    from ..pipelines.accelerated import AcceleratedPipeline

    acc = AcceleratedPipeline.from_pipe(pipe, methods=[])
    probes = []
    try:
        for denoiser in acc.adapter.denoisers():
            probe = _LayoutProbe(acc.adapter)
            register_hook(denoiser, probe, "ditaccel.tune.layout")
            probes.append((denoiser, probe))
        acc(**{**call, "num_inference_steps": 1})
    finally:
        for denoiser, _ in probes:
            remove_hook(denoiser, "ditaccel.tune.layout")
        acc.remove()
    lengths = [n for _, probe in probes for n in probe.lengths]
    return max(lengths) if lengths else None
