"""``ditaccel generate --compare``: one call through the plain and the accelerated pipeline.

Both run on the same pipeline object, seed and arguments: a first pass of each counts the
transformer's FLOPs (and warms allocators), then ``runs`` timed rounds alternate the two so that
machine load falls on both alike; the times are medians. The picture puts the two images side
by side with the method, time and PSNR under each.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .media import output_images, to_pil
from .metrics import as_float_images, count_flops, psnr
from .pipelines.accelerated import AcceleratedPipeline
from .stats import CallStats


@dataclass
class Comparison:
    """The plain and the accelerated result of one call, and what each cost."""

    method: str
    plain: Image.Image
    accelerated: Image.Image
    plain_s: float
    accelerated_s: float
    plain_gflops: float
    accelerated_gflops: float
    psnr_db: float
    stats: CallStats  # of the accelerated pipeline's last timed call

    @property
    def speedup(self) -> float:
        return self.plain_s / self.accelerated_s

    @property
    def flops_ratio(self) -> float:
        return self.accelerated_gflops / self.plain_gflops if self.plain_gflops else float("nan")

    def summary(self) -> str:
        return (
            f"{self.method}: speedup {self.speedup:.2f}x ({self.plain_s:.2f} s -> {self.accelerated_s:.2f} s), "
            f"FLOPs ratio {self.flops_ratio:.3f}, PSNR {self.psnr_db:.2f} dB vs the plain pipeline"
        )


def compare(
    pipeline: Any,
    methods: str,
    call_kwargs: Callable[[AcceleratedPipeline], dict[str, Any]],
    *,
    runs: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> Comparison:
    """Run ``pipeline`` plain and with ``methods`` on ``call_kwargs(wrapper)`` and compare.

    ``call_kwargs`` builds the call for a wrapper (the accelerated one may read extra arguments,
    such as a mask for its methods); ``sync`` waits for the device (CUDA) before a clock read.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    specs = {"plain": "none", "accelerated": methods}
    images: dict[str, Any] = {}
    gflops: dict[str, float] = {}
    times: dict[str, list[float]] = {"plain": [], "accelerated": []}
    stats = None
    for label, spec in specs.items():  # untimed pass: FLOPs, images, warm-up
        wrapper = AcceleratedPipeline.from_pipe(pipeline, methods=spec)
        try:
            with count_flops(wrapper.adapter.step_modules()) as counted:
                images[label] = output_images(wrapper(**call_kwargs(wrapper)))
            gflops[label] = counted.total / 1e9
        finally:
            wrapper.remove()
    for _ in range(runs):
        for label, spec in specs.items():
            wrapper = AcceleratedPipeline.from_pipe(pipeline, methods=spec)
            try:
                kwargs = call_kwargs(wrapper)
                sync()
                start = time.perf_counter()
                wrapper(**kwargs)
                sync()
                times[label].append(time.perf_counter() - start)
                stats = wrapper.stats
            finally:
                wrapper.remove()
    plain, accelerated = (to_pil(images[label])[0] for label in specs)
    return Comparison(
        method=methods,
        plain=plain,
        accelerated=accelerated,
        plain_s=statistics.median(times["plain"]),
        accelerated_s=statistics.median(times["accelerated"]),
        plain_gflops=gflops["plain"],
        accelerated_gflops=gflops["accelerated"],
        psnr_db=psnr(as_float_images(images["accelerated"]), as_float_images(images["plain"])),
        stats=stats,
    )


def side_by_side(comparison: Comparison, path: str | Path) -> Path:
    """Write the two images next to each other, each captioned with method, time and PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = comparison
    panels = (
        (c.plain, f"plain pipeline\n{c.plain_s:.2f} s, {c.plain_gflops:.1f} GFLOPs"),
        (
            c.accelerated,
            f"{c.method}\n{c.accelerated_s:.2f} s ({c.speedup:.2f}x), FLOPs x{c.flops_ratio:.2f}\n"
            f"PSNR {c.psnr_db:.1f} dB vs plain",
        ),
    )
    fig, axes = plt.subplots(1, 2, figsize=(7, 4.2))
    for ax, (image, caption) in zip(axes, panels, strict=True):
        ax.imshow(np.asarray(image), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
