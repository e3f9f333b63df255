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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import models
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
    """What to benchmark; ``None`` sizes and steps take the model's defaults."""

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


def _cases(settings: BenchSettings, entry: models.ModelEntry | None) -> list[models.Case]:
    """``settings.prompts`` default inputs of the model for the task from ``settings.offset`` on
    (cycled if short)."""
    start, count = settings.offset, settings.prompts
    if entry is not None:
        entry.pipeline_for(settings.task)  # the model serves this task
        if settings.task in entry.inputs:
            return entry.inputs[settings.task](start, start + count)
        cases = entry.cases[settings.task]()
    elif settings.task == "t2i":
        cases = [models.Case(p, seed=i) for i, p in enumerate(DEFAULT_PROMPTS)]
    else:
        raise ValueError(
            f"{settings.model} has no edit cases; bench --task edit needs an embedded edit model"
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


def run_bench(settings: BenchSettings, progress: Any = None) -> dict[str, Any]:
    """Run the benchmark; ``progress`` is a callable ``advance(description)`` or None."""
    entry = models.MODELS.get(settings.model)
    inputs = _cases(settings, entry)
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, settings.dtype)
    pipeline_class = entry.pipeline_for(settings.task) if entry is not None else None
    pipe = load_pipeline(settings.model, pipeline_class=pipeline_class, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    steps = settings.steps or (entry.steps if entry else 28)
    height = settings.height or (entry.height if entry else None)
    width = settings.width or (entry.width if entry else None)
    defaults = dict(entry.call_defaults) if entry else {}

    def call_kwargs(case: models.Case, acc: AcceleratedPipeline) -> dict[str, Any]:
        kwargs = case_call(case, acc.adapter, steps=steps, height=height, width=width, extra=defaults)
        if "mask_image" in acc.call_arguments and case.mask is not None:
            kwargs.setdefault("mask_image", case.mask)  # for methods that edit inside a mask
        return kwargs

    tick = progress or (lambda _description: None)
    images: dict[str, list[Any]] = {}
    flops: dict[str, list[tuple[int, int]]] = {}
    reuse: dict[str, list[float]] = {}
    for spec in settings.methods:
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        images[spec], flops[spec], reuse[spec] = [], [], []
        try:
            for item in inputs:
                with count_flops(acc.adapter.step_modules()) as counted:
                    out = acc(**call_kwargs(item, acc))
                images[spec].append(output_images(out))
                flops[spec].append((counted.total, counted.attention))
                stats = acc.stats
                reuse[spec].append(stats.blocks_reused / max(stats.blocks_total, 1))
                tick(f"count {spec}")
        finally:
            acc.remove()

    times: dict[str, list[list[float]]] = {spec: [[] for _ in inputs] for spec in settings.methods}
    for _ in range(settings.runs):
        for spec in settings.methods:
            acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
            try:
                for i, item in enumerate(inputs):
                    kwargs = call_kwargs(item, acc)
                    _sync(device)
                    start = time.perf_counter()
                    acc(**kwargs)
                    _sync(device)
                    times[spec][i].append(time.perf_counter() - start)
                    tick(f"time {spec}")
            finally:
                acc.remove()

    scorer = entry.scorer if entry is not None else None
    results = []
    base = "none"
    base_wall = _wall(times[base])
    base_gflops = _mean_g(flops[base], 0)
    for spec in settings.methods:
        configs = resolve_methods(spec)
        wall = _wall(times[spec])
        gflops = _mean_g(flops[spec], 0)
        row: dict[str, Any] = {
            "method": spec,
            # one method: its parameters; a combination: parameters by method name
            "config": configs[0].to_dict() if len(configs) == 1 else {c.method: c.to_dict() for c in configs},
            "wall_s": wall,
            "speedup": base_wall / wall,
            "transformer_gflops": gflops,
            "attention_gflops": _mean_g(flops[spec], 1),
            "flops_ratio": gflops / base_gflops if base_gflops else None,
            "psnr_db": None if spec == base else _set_psnr(images[spec], images[base]),
            # per input, for intervals over inputs (ditaccel.metrics.intervals); psnr_db pools them
            "mse_per_input": None if spec == base else _mse_per_input(images[spec], images[base]),
            "ssim": None if spec == base else _mean_ssim(images[spec], images[base]),
            "shapes_acc": None,
            "blocks_reused": float(np.mean(reuse[spec])),
        }
        if scorer is not None:
            verdicts = [
                scorer(as_float_images(img)[0], case) for img, case in zip(images[spec], inputs, strict=True)
            ]
            row["shapes_acc"] = float(np.mean(verdicts))
        if settings.task == "edit":
            row["region_psnr_db"] = None if spec == base else _region_psnr(images[spec], images[base], inputs)
            sources = [case.image for case in inputs]
            if all(source is not None for source in sources):
                row["preserve_psnr_db"] = _region_psnr(images[spec], sources, inputs)
        results.append(row)
    return {
        "model": settings.model,
        "task": settings.task,
        "steps": steps,
        "height": height,
        "width": width,
        "device": device,
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


def _mean_g(per_input: list[tuple[int, int]], index: int) -> float:
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
__all__ = ["BenchSettings", "case_call", "run_bench", "psnr", "ssim"]
