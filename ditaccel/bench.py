"""``ditaccel bench``: every method on the same inputs, in one process, timed interleaved.

For each method a first, untimed pass counts the transformer FLOPs and keeps the images (it
also warms caches and allocators); then ``runs`` timed rounds call every method in turn on every
input, so drift in machine load spreads over all methods alike. Results follow the JSON schema
of DESIGN.md.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import models
from .inputs import load_cases
from .media import output_images
from .methods import resolve_methods
from .metrics import count_flops, psnr, psnr_from_mse, ssim
from .metrics.image import as_float_images
from .pipelines import GenerationRequest
from .pipelines.accelerated import AcceleratedPipeline, load_pipeline

TASKS = ("t2i", "edit", "control")
DEFAULT_PROMPTS = models._TINY_PROMPTS


@dataclass
class BenchSettings:
    """What to benchmark; ``None`` sizes and steps take the model's defaults. ``cases``: the
    user's own inputs instead of the model's (:mod:`ditaccel.inputs`: a prompt file, or edit cases)."""

    model: str
    task: str = "t2i"
    methods: list[str] = field(default_factory=lambda: ["none"])
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    prompts: int = 8
    runs: int = 3
    device: str | None = None
    dtype: str = "float32"
    # skip this many of the model's inputs: --offset 16 on shapes-flux benches scenes neither the
    # bench set (0-7) nor the calibration set (8-15) holds
    offset: int = 0
    cases: Path | None = None

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("prompts", "runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not hasattr(torch, self.dtype) or not isinstance(getattr(torch, self.dtype), torch.dtype):
            raise ValueError(f"unknown dtype {self.dtype!r}")
        specs = [s.strip() for s in self.methods]
        for spec in specs:
            resolve_methods(spec)  # fail on a bad spec before loading anything
        if "none" in specs:
            specs.remove("none")
        self.methods = ["none", *specs]
        if self.cases is not None:
            self.prompts = len(self.inputs())  # a malformed case fails here, before anything loads

    def inputs(self) -> list[models.Case]:
        """The inputs benched: the user's cases, else the model's (see :func:`model_inputs`)."""
        if self.cases is not None:
            return load_cases(self.cases, self.task)
        return model_inputs(self.model, self.task, self.prompts, self.offset)


def model_inputs(model: str, task: str, count: int, offset: int = 0) -> list[models.Case]:
    """``count`` default inputs of ``model`` for ``task`` from ``offset`` on (cycled if short)."""
    entry = models.MODELS.get(model)
    start = offset
    if entry is not None:
        entry.pipeline_for(task)  # the model serves this task
        if task in entry.inputs:
            return entry.inputs[task](start, start + count)
        cases = entry.cases[task]()
    elif task == "t2i":
        cases = [models.Case(p, seed=i) for i, p in enumerate(DEFAULT_PROMPTS)]
    else:
        raise ValueError(
            f"{model} has no {task} inputs of its own: pass your own cases (--cases FILE: a JSONL or "
            "folder of image + instruction [+ mask])"
        )
    return [cases[i % len(cases)] for i in range(start, start + count)]


def case_call(
    case: models.Case, adapter: Any, *, steps: int, height: int | None, width: int | None, extra: dict
) -> dict[str, Any]:
    """The pipeline keyword arguments that run ``case`` (numpy images out)."""
    mask = case.mask if adapter.task == "inpaint" else None  # instruction editors take no mask
    request = GenerationRequest(
        prompt=case.prompt, image=case.image, mask=mask, seed=case.seed, steps=steps,
        height=height, width=width, output_type="np", extra=dict(extra),
    )  # fmt: skip
    return adapter.build_call(request)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Pass:
    """One spec's pass over the inputs: its images, the transformer FLOPs counted per input
    (total, attention; empty where the pass did not count) and the share of blocks a method served
    from a cache."""

    images: list[Any]
    flops: list[tuple[int, int]]
    reuse: list[float]


@dataclass
class BenchSession:
    """A loaded pipeline and the call settings every measurement of one bench (or tune) shares: the
    bench's measuring code, in pieces that :mod:`ditaccel.tune` reuses (a counting pass per spec,
    interleaved timed rounds, a result row against the plain pipeline's)."""

    pipe: Any
    task: str
    steps: int
    height: int | None
    width: int | None
    device: str
    defaults: dict[str, Any]
    scorer: Callable[[Any, models.Case], bool] | None = None

    @classmethod
    def load(
        cls,
        model: str,
        task: str,
        *,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        inputs: list[models.Case] | None = None,
    ) -> BenchSession:
        """Load ``model`` for ``task``; ``None`` steps and sizes take the model's defaults, and for
        a model without them, edit inputs' source size."""
        entry = models.MODELS.get(model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipeline_class = entry.pipeline_for(task) if entry is not None else None
        pipe = load_pipeline(model, pipeline_class=pipeline_class, dtype=getattr(torch, dtype)).to(device)
        pipe.set_progress_bar_config(disable=True)
        source = next((c.image for c in inputs or [] if c.image is not None), None)
        default_size = source.size if entry is None and source is not None else (None, None)
        return cls(
            pipe=pipe,
            task=task,
            steps=steps or (entry.steps if entry else 28),
            height=height or (entry.height if entry else default_size[1]),
            width=width or (entry.width if entry else default_size[0]),
            device=device,
            defaults=dict(entry.call_defaults) if entry else {},
            scorer=entry.scorer if entry is not None else None,
        )

    def call_kwargs(self, case: models.Case, acc: AcceleratedPipeline) -> dict[str, Any]:
        """The call of ``case`` on ``acc`` (a mask for methods that edit inside one)."""
        kwargs = case_call(
            case, acc.adapter, steps=self.steps, height=self.height, width=self.width, extra=self.defaults
        )
        if "mask_image" in acc.call_arguments and case.mask is not None:
            kwargs.setdefault("mask_image", case.mask)  # for methods that edit inside a mask
        return kwargs

    def counting_pass(self, spec: str, inputs: list[models.Case], tick: Callable[[str], Any]) -> Pass:
        """Run ``spec`` once on every input, untimed: counted FLOPs and images (and warm-up)."""
        return self._pass(spec, inputs, tick, count=True)[0]

    def timed_pass(
        self, spec: str, inputs: list[models.Case], tick: Callable[[str], Any]
    ) -> tuple[Pass, list[list[float]]]:
        """Run ``spec`` once on every input, timed and not counted (counting FLOPs slows a call
        about 1.8x): images and seconds per input (as :meth:`timed_rounds`, one run). The cheap
        measurement of a screening; no warm-up call precedes it."""
        return self._pass(spec, inputs, tick, count=False)

    def _pass(
        self, spec: str, inputs: list[models.Case], tick: Callable[[str], Any], *, count: bool
    ) -> tuple[Pass, list[list[float]]]:
        acc = AcceleratedPipeline.from_pipe(self.pipe, methods=spec)
        result, times = Pass([], [], []), []
        try:
            for item in inputs:
                kwargs = self.call_kwargs(item, acc)
                if count:
                    with count_flops(acc.adapter.step_modules()) as counted:
                        out = acc(**kwargs)
                    result.flops.append((counted.total, counted.attention))
                else:
                    _sync(self.device)
                    start = time.perf_counter()
                    out = acc(**kwargs)
                    _sync(self.device)
                    times.append([time.perf_counter() - start])
                result.images.append(output_images(out))
                stats = acc.stats
                result.reuse.append(stats.blocks_reused / max(stats.blocks_total, 1))
                tick(f"{'count' if count else 'time'} {spec}")
        finally:
            acc.remove()
        return result, times

    def timed_rounds(
        self, specs: list[str], inputs: list[models.Case], runs: int, tick: Callable[[str], Any]
    ) -> dict[str, list[list[float]]]:
        """``runs`` rounds, each calling every spec in turn on every input, so drift in machine load
        spreads over them alike: seconds per spec, per input, per run."""
        times: dict[str, list[list[float]]] = {spec: [[] for _ in inputs] for spec in specs}
        for _ in range(runs):
            for spec in specs:
                acc = AcceleratedPipeline.from_pipe(self.pipe, methods=spec)
                try:
                    for i, item in enumerate(inputs):
                        kwargs = self.call_kwargs(item, acc)
                        _sync(self.device)
                        start = time.perf_counter()
                        acc(**kwargs)
                        _sync(self.device)
                        times[spec][i].append(time.perf_counter() - start)
                        tick(f"time {spec}")
                finally:
                    acc.remove()
        return times

    def result_row(
        self,
        spec: str,
        run: Pass,
        times: list[list[float]],
        base: Pass,
        base_times: list[list[float]],
        inputs: list[models.Case],
    ) -> dict[str, Any]:
        """The bench's result row of ``spec`` against the plain pipeline's pass and times (``run is
        base``: the baseline's row)."""
        configs = resolve_methods(spec)
        plain = run is base
        wall = _wall(times)
        gflops = _mean_g(run.flops, 0)
        base_gflops = _mean_g(base.flops, 0)
        row: dict[str, Any] = {
            "method": spec,
            # one method: its parameters; a combination: parameters by method name
            "config": configs[0].to_dict() if len(configs) == 1 else {c.method: c.to_dict() for c in configs},
            "wall_s": wall,
            "speedup": _wall(base_times) / wall,
            "transformer_gflops": gflops,
            "attention_gflops": _mean_g(run.flops, 1),
            "flops_ratio": gflops / base_gflops if gflops is not None and base_gflops else None,
            "psnr_db": None if plain else _set_psnr(run.images, base.images),
            # per input, for intervals over inputs (ditaccel.metrics.intervals); psnr_db pools them
            "mse_per_input": None if plain else _mse_per_input(run.images, base.images),
            "ssim": None if plain else _mean_ssim(run.images, base.images),
            "shapes_acc": None,
            "blocks_reused": float(np.mean(run.reuse)),
        }
        if self.scorer is not None and all(case.spec is not None for case in inputs):
            verdicts = [
                self.scorer(as_float_images(img)[0], case)
                for img, case in zip(run.images, inputs, strict=True)
            ]
            row["shapes_acc"] = float(np.mean(verdicts))
        if self.task == "edit":
            row["region_psnr_db"] = None if plain else _region_psnr(run.images, base.images, inputs)
            sources = [case.image for case in inputs]
            if all(source is not None for source in sources):
                row["preserve_psnr_db"] = _region_psnr(run.images, sources, inputs)
        return row


def run_bench(settings: BenchSettings, progress: Any = None) -> dict[str, Any]:
    """Run the benchmark; ``progress`` is a callable ``advance(description)`` or None."""
    inputs = settings.inputs()
    session = BenchSession.load(
        settings.model, settings.task, steps=settings.steps, height=settings.height, width=settings.width,
        device=settings.device, dtype=settings.dtype, inputs=inputs,
    )  # fmt: skip
    tick = progress or (lambda _description: None)
    passes = {spec: session.counting_pass(spec, inputs, tick) for spec in settings.methods}
    times = session.timed_rounds(settings.methods, inputs, settings.runs, tick)
    base = "none"
    results = [
        session.result_row(spec, passes[spec], times[spec], passes[base], times[base], inputs)
        for spec in settings.methods
    ]
    return {
        "model": settings.model,
        "task": settings.task,
        "steps": session.steps,
        "height": session.height,
        "width": session.width,
        "device": session.device,
        "dtype": settings.dtype,
        "prompts": settings.prompts,
        "offset": settings.offset,
        "runs": settings.runs,
        "results": results,
        "versions": _versions(),
    }


def _wall(per_input: list[list[float]]) -> float:
    """Mean over inputs of the median over runs of one pipeline call's wall time."""
    return float(np.mean([statistics.median(runs) for runs in per_input]))


def _mean_g(per_input: list[tuple[int, int]], index: int) -> float | None:
    if not per_input:  # a pass that did not count
        return None
    return float(np.mean([f[index] for f in per_input])) / 1e9


def _set_psnr(images: list[Any], reference: list[Any]) -> float:
    """PSNR over all pixels of all inputs (one exact input does not make it infinite)."""
    a, b = as_float_images(images), as_float_images(reference)
    return psnr_from_mse(float(np.mean((a - b) ** 2)))


def _mse_per_input(images: list[Any], reference: list[Any]) -> list[float]:
    """Each input's mean squared error against its reference (peak 1)."""
    return [
        float(np.mean((as_float_images(a) - as_float_images(b)) ** 2))
        for a, b in zip(images, reference, strict=True)
    ]


def _mean_ssim(images: list[Any], reference: list[Any]) -> float | None:
    try:
        return float(np.mean([ssim(a, b) for a, b in zip(images, reference, strict=True)]))
    except ValueError:  # images smaller than the SSIM window
        return None


def _region_psnr(images: list[Any], reference: list[Any], inputs: list[models.Case]) -> float | None:
    """PSNR against ``reference`` images outside the edit masks (None without masks)."""
    if any(item.mask is None for item in inputs):
        return None
    errs = []
    for img, ref, item in zip(images, reference, inputs, strict=True):
        a, b = as_float_images(img), as_float_images(ref)
        mask = as_float_images(item.mask.resize((a.shape[2], a.shape[1])))[..., 0] < 0.5
        errs.append(((a - b) ** 2)[np.broadcast_to(mask, a.shape[:-1])])
    return psnr_from_mse(float(np.mean(np.concatenate(errs))))


def _versions() -> dict[str, str]:
    import diffusers

    from . import __version__

    return {
        "ditaccel": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


# re-exported for callers that compute single-image metrics next to bench numbers
__all__ = ["BenchSession", "BenchSettings", "Pass", "case_call", "model_inputs", "run_bench", "psnr", "ssim"]
