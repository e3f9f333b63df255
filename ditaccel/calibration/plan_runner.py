"""Run a cache plan on a few calls and measure its images against the plain pipeline's.

The measurement behind verified plans (:mod:`.verify`) and step sensitivity (:mod:`.sensitivity`):
the plan goes into a one-plan profile that ``calibrated-cache`` serves as is, every run starts
from the same noise, and the error is the PSNR over all pixels of all calls (as the bench's).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..media import output_images
from ..metrics import psnr_from_mse
from ..metrics.image import as_float_images
from .planner import CachePlan
from .profile import Profile


def _fresh(generator: Any) -> Any:
    """A copy of ``generator`` (or of each in a list) in its current state."""
    if isinstance(generator, list):
        return [_fresh(g) for g in generator]
    if isinstance(generator, torch.Generator):
        copy = torch.Generator(device=generator.device)
        copy.set_state(generator.get_state())
        return copy
    return generator


class PlanRunner:
    """Runs one plan on the verification calls and measures it against the plain images."""

    def __init__(self, pipeline: Any, calls: list[dict[str, Any]], steps: int, workdir: Path) -> None:
        self.pipeline, self.steps, self.workdir = pipeline, steps, workdir
        self.calls = [{**kwargs, "generator": _fresh(kwargs.get("generator"))} for kwargs in calls]
        self.reference = self._images(pipeline, len(self.calls))

    def _images(self, pipe: Any, count: int) -> list[np.ndarray]:
        out = []
        for kwargs in self.calls[:count]:
            kwargs = {**kwargs, "generator": _fresh(kwargs.get("generator"))}  # each run from the same noise
            result = pipe(**{**kwargs, "num_inference_steps": self.steps, "output_type": "np"})
            out.append(as_float_images(output_images(result)))
        return out

    def measure(self, profile: Profile, plan: CachePlan, calls: int | None = None) -> dict[str, float]:
        """PSNR (dB), MSE and relative L1 of ``plan``'s images on the first ``calls`` calls (all),
        and each call's PSNR."""
        from ..methods.calibrated_cache import CalibratedCacheConfig
        from ..pipelines.accelerated import AcceleratedPipeline

        single = dataclasses.replace(profile, plans={"calibrated-cache": [plan.to_dict()]}, tensors={})
        path = single.save(self.workdir / "candidate.json")
        target = plan.target["flops_ratio"]
        config = CalibratedCacheConfig(profile=path, flops_ratio=target, order=plan.order)
        acc = AcceleratedPipeline.from_pipe(self.pipeline, [config])
        count = len(self.calls) if calls is None else min(calls, len(self.calls))
        try:
            outputs = self._images(acc, count)
        finally:
            acc.remove()
        images, reference = np.concatenate(outputs), np.concatenate(self.reference[:count])
        mse = float(np.mean((images - reference) ** 2))
        relative = float(np.abs(images - reference).mean() / max(np.abs(reference).mean(), 1e-12))
        per_call = [round(psnr_from_mse(float(np.mean((a - b) ** 2))), 4)
                    for a, b in zip(outputs, self.reference[:count], strict=True)]  # fmt: skip
        return {"psnr_db": round(psnr_from_mse(mse), 4), "mse": mse, "relative_l1": round(relative, 6),
                "prompts": count, "psnr_db_per_call": per_call}  # fmt: skip
