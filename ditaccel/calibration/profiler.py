"""Profile a pipeline's redundancy with hooks (no change to model code).

Block change: every block's image-stream residual (output minus input) is compared with the same
block's residual at the previous step of the same CFG branch, ``mean|r_t - r_{t-1}| / mean|r_{t-1}|``
(step 0 has no previous step and counts 0). The profile keeps the mean over prompts and its
coefficient of variation, so a user can see whether redundancy is a property of the model or of
the prompt.

Reuse error (for the planner): on a fixed sample of ``sketch_tokens`` image tokens, the error of
serving a block at step ``t`` from its residuals ``g`` steps back, relative to the block's output:
plain reuse (order 0) and a linear forecast from two earlier computed steps (order 1), for gaps up
to ``max_gap``.

Attention density: on every ``attention_every``-th step, ``query_rows`` query rows per head are
drawn and their attention over all keys computed; the share of keys needed to hold ``mass`` of it is
the row's density. Only those rows are materialised, never a full attention map.

Magnitude ratios (MagCache's calibration, for ``peer-magcache``): per step, the mean over tokens of
the norm of the whole stack's image-stream residual over the previous step's, as diffusers'
``MagCacheConfig(calibrate=True)`` prints it, averaged over prompts and CFG branches.

Context sensitivity (pipelines with reference tokens, :mod:`.context_sensitivity`): how much the
output changes when one layer stops attending to the reference tokens (by default its one-forward
proxy at ``context_steps`` sampled steps; with ``context_steps=0`` the final latents of whole calls).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook
from tqdm.auto import tqdm

from ..attention import sdpa_route
from ..attention.external import EXTERNAL_KINDS, sequence_indices
from ..hooks.block_range import flat_blocks
from ..hooks.install import register_hook, remove_hook
from ..metrics.flops import count_flops, discount_flops
from .context_sensitivity import context_sensitivity, context_sensitivity_proxy, relative_l1
from .profile import Profile, fingerprint

_HOOK = "ditaccel.profiler"


@dataclass(frozen=True)
class ProfilerConfig:
    """``query_rows`` / ``attention_every`` / ``mass``: attention density sampling; ``sketch_tokens``
    and ``max_gap``: the reuse-error sample and the longest reuse the planner may choose;
    ``context_prompts``: prompts used for context sensitivity (0: skip it); ``context_steps``: steps
    sampled for its one-forward proxy (0: the exact measurement, whole calls per layer)."""

    query_rows: int = 64
    mass: float = 0.95
    attention_every: int = 4
    sketch_tokens: int = 256
    max_gap: int = 12
    context_prompts: int = 2
    context_steps: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (
            ("query_rows", 1), ("attention_every", 1), ("sketch_tokens", 1), ("max_gap", 1),
            ("context_prompts", 0), ("context_steps", 0),
        ):  # fmt: skip
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 < self.mass <= 1.0:
            raise ValueError(f"mass must be in (0, 1], got {self.mass}")


def key_density(
    q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, scale: float | None, mass: float
) -> torch.Tensor:
    """Per head (B, H): mean over the sampled query ``rows`` of the share of keys holding ``mass``
    of the row's attention."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    probs = torch.softmax(torch.matmul(q[:, :, rows].float(), k.float().transpose(-1, -2)) * scale, dim=-1)
    ordered = probs.sort(dim=-1, descending=True).values.cumsum(-1)
    needed = (ordered < mass).sum(-1) + 1  # keys until the mass is reached, that key included
    return (needed.clamp(max=k.shape[2]).float() / k.shape[2]).mean(-1)


class _ErrorSums:
    """Running sums of the reuse errors of one prompt: order 0 ``[B, T, G]``, order 1 ``[B, T, G, G]``."""

    def __init__(self, blocks: int, steps: int, gap: int) -> None:
        self.order0 = torch.zeros(blocks, steps, gap, dtype=torch.float64)
        self.order1 = torch.zeros(blocks, steps, gap, gap, dtype=torch.float64)
        self.count0 = torch.zeros_like(self.order0)
        self.count1 = torch.zeros_like(self.order1)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        nan = float("nan")
        return (
            torch.where(self.count0 > 0, self.order0 / self.count0.clamp_min(1), nan),
            torch.where(self.count1 > 0, self.order1 / self.count1.clamp_min(1), nan),
        )


class _BlockProbe(ModelHook):
    """On one block: its residual's change since the previous step, its reuse errors, its FLOPs."""

    def __init__(self, recorder: Profiler, index: int) -> None:
        super().__init__()
        self.recorder, self.index = recorder, index
        self.block = recorder.blocks[index]

    def new_forward(self, module, *args, **kwargs):
        rec = self.recorder
        info = rec.context.current
        if info is None or info.denoiser != 0:
            return self.fn_ref.original_forward(*args, **kwargs)
        if rec.block_flops[self.index] is None:
            with count_flops() as counted:
                output = self.fn_ref.original_forward(*args, **kwargs)
            rec.block_flops[self.index] = counted.total
        else:
            output = self.fn_ref.original_forward(*args, **kwargs)
        before = self.block.io.split_input(args, kwargs)[0]
        after = self.block.io.split_output(output)[0]
        residual = (after - before).detach().float()
        rec.record(info, self.index, residual, after.detach())
        if self.index == 0:
            rec.head_input[info.branch] = before.detach().float()
        if self.index == len(rec.blocks) - 1 and info.branch in rec.head_input:
            rec.record_stack(info, after.detach().float() - rec.head_input.pop(info.branch))
        return output


class Profiler:
    """Hooks on an :class:`~ditaccel.AcceleratedPipeline` (with no methods) that profile its calls."""

    def __init__(self, pipe: Any, config: ProfilerConfig | None = None) -> None:
        if pipe.methods:
            raise ValueError(
                "profile the plain model: wrap it with AcceleratedPipeline.from_pipe(pipeline, methods=[])"
            )
        self.pipe = pipe
        self.context = pipe.context
        self.config = config or ProfilerConfig()
        adapter = pipe.adapter
        self.denoiser = adapter.denoisers()[0]
        self.blocks = flat_blocks(adapter, self.denoiser)
        self.sites = adapter.sequence_attention_sites(self.denoiser)
        self.block_flops: list[int | None] = [None] * len(self.blocks)
        self.saw_reference = False
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._new_prompt(1)

    # --- per-prompt state --------------------------------------------------------------------------
    def _new_prompt(self, steps: int) -> None:
        self.steps = steps
        # (branch, block) -> step -> sketch of the residual
        self.history: dict[tuple, dict[int, torch.Tensor]] = defaultdict(dict)
        self.previous: dict[tuple, torch.Tensor] = {}
        self.changes: dict[tuple[int, int], list[float]] = defaultdict(list)
        self.errors = _ErrorSums(len(self.blocks), steps, self.config.max_gap)
        self.token_index: torch.Tensor | None = None
        self.external_previous: dict[tuple, torch.Tensor] = {}
        self.external_changes: dict[tuple[str, int, str], list[float]] = defaultdict(list)
        self.head_input: dict[int, torch.Tensor] = {}
        self.stack_previous: dict[int, torch.Tensor] = {}
        self.mag_ratios: dict[int, list[float]] = defaultdict(list)  # step -> ratio per branch

    def record_stack(self, info, residual: torch.Tensor) -> None:
        """The whole block stack's image-stream residual at ``info.step``: MagCache's magnitude
        ratio against the previous step's, ``mean over tokens of |r_t| / |r_(t-1)|`` (1 at step 0)."""
        previous = self.stack_previous.get(info.branch)
        if previous is None or previous.shape != residual.shape:
            ratio = 1.0
        else:
            ratio = float((residual.norm(dim=-1) / (previous.norm(dim=-1) + 1e-8)).mean())
        self.stack_previous[info.branch] = residual
        if info.step < self.steps:
            self.mag_ratios[info.step].append(ratio)

    def record(self, info, index: int, residual: torch.Tensor, output: torch.Tensor) -> None:
        """One block ran at ``info.step``: update its change and reuse errors."""
        t = info.step
        if t >= self.steps:
            return
        key = (info.branch, index)
        previous = self.previous.get(key)
        if previous is not None and previous.shape == residual.shape:
            self.changes[(t, index)].append(relative_l1(residual, previous, previous))
        self.previous[key] = residual
        if self.token_index is None:  # one token sample per prompt, shared by its blocks and steps
            self.tokens = residual.shape[1]
            pick = torch.randperm(self.tokens, generator=self._generator)[: self.config.sketch_tokens]
            self.token_index = pick.sort().values
        elif residual.shape[1] != self.tokens:
            raise ValueError(
                f"the image stream changed length within a call ({self.tokens} -> {residual.shape[1]})"
            )
        self.saw_reference |= info.layout.reference > 0
        sketch = residual[:, self.token_index.to(residual.device)].cpu()
        scale = output[:, self.token_index.to(output.device)].float().abs().mean().clamp_min(1e-12).cpu()
        history = self.history[key]
        history[t] = sketch
        g_max = self.config.max_gap
        for g0 in range(1, g_max + 1):
            base = history.get(t - g0)
            if base is None:
                continue
            self.errors.order0[index, t, g0 - 1] += float((sketch - base).abs().mean() / scale)
            self.errors.count0[index, t, g0 - 1] += 1
            gaps = [g1 for g1 in range(1, g_max + 1) if t - g0 - g1 in history]
            if gaps:
                older = torch.stack([history[t - g0 - g1] for g1 in gaps])
                slope = torch.tensor([g0 / g1 for g1 in gaps]).view(-1, *[1] * sketch.dim())
                forecast = base + (base - older) * slope
                error = (sketch - forecast).abs().flatten(1).mean(1).double() / float(scale)
                g1_index = torch.tensor(gaps) - 1
                self.errors.order1[index, t, g0 - 1, g1_index] += error
                self.errors.count1[index, t, g0 - 1, g1_index] += 1
        for old in [s for s in history if s < t - 2 * g_max]:
            del history[old]

    # --- hooks --------------------------------------------------------------------------------------
    def _attention_handler(self, site):
        name = site.name

        def handler(q, k, v, scale):
            info = self.context.current
            if info is not None and info.step % self.config.attention_every == 0:
                rows = torch.randperm(q.shape[2], generator=self._generator)[: self.config.query_rows]
                density = key_density(q, k, rows.to(q.device), scale, self.config.mass)
                discount_flops(2 * q.shape[0] * q.shape[1] * len(rows) * k.shape[2] * q.shape[3])
                self.densities[name].append(density.mean(0).cpu())
            if info is not None:
                self._external_drift(info, site, q, k)
            return None  # attention itself runs as usual

        return handler

    def _external_drift(self, info, site, q, k) -> None:
        """How far a sample of each kind of external tokens' keys moved since the previous step."""
        text_first = site.text_first if site.text_first is not None else True
        for kind in EXTERNAL_KINDS:
            indices = sequence_indices(info.layout, q.shape[2], text_first, frozenset({kind}),
                                       self.pipe.adapter.text_rows_kept)  # fmt: skip
            if indices is None or indices[1].numel() == 0:
                continue
            external = indices[1]
            pick = external[:: max(1, external.numel() // self.config.sketch_tokens)][
                : self.config.sketch_tokens
            ]
            sketch = k[:, :, pick.to(k.device)].float().cpu()
            key = (info.branch, site.name, kind)
            previous = self.external_previous.get(key)
            if previous is not None and previous.shape == sketch.shape and info.step < self.steps:
                self.external_changes[(kind, info.step, site.name)].append(
                    relative_l1(sketch, previous, previous)
                )
            self.external_previous[key] = sketch

    def attach(self) -> None:
        self.densities: dict[str, list[torch.Tensor]] = defaultdict(list)
        for index, block in enumerate(self.blocks):
            register_hook(block.module, _BlockProbe(self, index), _HOOK)
        for site in self.sites:
            sdpa_route.attach(site.module, _HOOK, self._attention_handler(site))

    def detach(self) -> None:
        for block in self.blocks:
            remove_hook(block.module, _HOOK)
        for site in self.sites:
            sdpa_route.detach(site.module, _HOOK)

    # --- the run ------------------------------------------------------------------------------------
    def profile(self, calls: list[dict[str, Any]], model: str, steps: int, progress: Any = None) -> Profile:
        """Run each call (pipeline keyword arguments; ``num_inference_steps`` is set to ``steps``)
        and return the profile. ``progress``: a callable ``advance(description)``, else tqdm."""
        if not calls:
            raise ValueError("calibration needs at least one prompt")
        bar = None if progress is not None else tqdm(total=len(calls), desc="calibrating", unit="prompt")
        tick = progress or (lambda _d: bar.update(1))
        per_prompt, order0, order1, mag = [], [], [], []
        drift_sums: dict[str, dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
        forward_flops = 0.0
        self.block_flops = [None] * len(self.blocks)  # counted again: sizes may differ from a last run
        self.saw_reference = False
        try:
            self.attach()
            for number, kwargs in enumerate(calls):
                self._new_prompt(steps)
                if number == 0:  # counting slows every op down: the first prompt is enough
                    with count_flops([self.denoiser]) as counted:
                        self.pipe(**{**kwargs, "num_inference_steps": steps})
                    forward_flops = counted.total / max(self.pipe.stats.forwards, 1)
                else:
                    self.pipe(**{**kwargs, "num_inference_steps": steps})
                matrix = np.zeros((steps, len(self.blocks)))
                for (step, index), values in self.changes.items():
                    matrix[step, index] = float(np.mean(values))
                per_prompt.append(matrix)
                mag.append([float(np.mean(self.mag_ratios.get(t, [1.0]))) for t in range(steps)])
                e0, e1 = self.errors.means()
                order0.append(e0)
                order1.append(e1)
                for (kind, step, layer), values in self.external_changes.items():
                    drift_sums[kind][(step, layer)].append(float(np.mean(values)))
                tick("calibrating")
            context_layers, sensitivity = [], []
            self.detach()
            if self.saw_reference and self.config.context_prompts:
                chosen = calls[: self.config.context_prompts]
                if bar is not None:
                    bar.total += len(chosen)
                if self.config.context_steps:
                    context_layers, sensitivity = context_sensitivity_proxy(
                        self.pipe, self.sites, chosen, steps, tick, self.config.context_steps
                    )
                else:
                    context_layers, sensitivity = context_sensitivity(
                        self.pipe, self.sites, chosen, steps, tick
                    )
        finally:
            self.detach()
            self.history.clear()
            self.previous.clear()
            self.head_input.clear()
            self.stack_previous.clear()
            if bar is not None:
                bar.close()
        stack = np.stack(per_prompt)
        mean = stack.mean(0)
        cv = np.where(mean > 0, stack.std(0) / np.where(mean > 0, mean, 1.0), 0.0)
        layers = [s.name for s in self.sites if self.densities[s.name]]
        external_drift = {
            kind: [
                [round(float(np.mean(by.get((t, layer), [0.0]))), 6) for layer in layers]
                for t in range(steps)
            ]
            for kind, by in drift_sums.items()
        }
        by_head = [torch.stack(self.densities[name]).mean(0).tolist() for name in layers]
        sigmas = getattr(self.pipe.pipeline.scheduler, "sigmas", None)
        sigma_list = [round(float(s), 6) for s in sigmas.tolist()] if sigmas is not None else []
        return Profile(
            model=model,
            pipeline=type(self.pipe.pipeline).__name__,
            steps=steps,
            prompts=len(calls),
            blocks=[b.name for b in self.blocks],
            block_change=mean.round(6).tolist(),
            block_change_cv=cv.round(6).tolist(),
            fingerprint=fingerprint(self.denoiser.config),
            attention_layers=layers,
            attention=[round(float(np.mean(h)), 6) for h in by_head],
            attention_by_head=[[round(x, 6) for x in h] for h in by_head],
            mass=self.config.mass,
            block_gflops=[round((f or 0) / 1e9, 9) for f in self.block_flops],
            forward_gflops=round(forward_flops / 1e9, 9),
            sigmas=sigma_list if len(sigma_list) >= steps else [],
            context_layers=context_layers,
            context_sensitivity=sensitivity,
            external_drift=external_drift,
            mag_ratios=[round(float(x), 6) for x in np.mean(mag, axis=0)],
            tensors={
                "reuse_error_order0": torch.stack(order0).nanmean(0).float(),
                "reuse_error_order1": torch.stack(order1).nanmean(0).float(),
            },
        )
