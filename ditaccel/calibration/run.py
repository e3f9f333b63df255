"""``ditaccel calibrate``: load a model, profile it on a prompt set, plan, verify the cache plans on
a few prompts after those (:mod:`.verify`), return the profile."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import models
from ..inputs import load_cases
from .planner import plan_all
from .profile import Profile
from .profiler import Profiler, ProfilerConfig
from .verify import VERIFY_PROMPTS, other_grids, verification_work, verify_plans

TASKS = ("t2i", "edit", "control")


@dataclass
class CalibrationSettings:
    """What to calibrate. ``prompts``: a count of the model's calibration prompts, or a text
    file with one prompt per line (text-to-image). ``cases_file``: the user's own inputs instead
    (:mod:`ditaccel.inputs`: a prompt file, or for ``edit`` a JSONL or folder of image +
    instruction [+ mask]), which is how a model that is not embedded (a Kontext or
    Qwen-Image-Edit folder) is calibrated for editing. ``None`` task, sizes and steps: the model's
    (for edit cases on a model that is not embedded, the first source image's size)."""

    model: str
    prompts: str | int = 8
    task: str | None = None
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    device: str | None = None
    dtype: str = "float32"
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    # prompts the candidate cache plans are run on, after the profiled ones (0: store the
    # planner's plans unrun)
    verify: int = VERIFY_PROMPTS
    # other step counts the plans are verified at (planned there from this profile); None: half
    # the profile's step count (plans made for a call's grid, like a 14-step call with a 28-step
    # profile, pick their forecast order and settings from the nearest verified grid)
    verify_steps: tuple[int, ...] | None = None
    cases_file: Path | None = None
    # inputs given in memory (``ditaccel.tune`` calibrating on the user's inputs); before ``cases_file``
    inputs: list[models.Case] | None = None

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = self.entry.bench_tasks[0] if self.entry is not None else "t2i"
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.verify < 0:
            raise ValueError(f"verify must be >= 0 prompts, got {self.verify}")
        if self.steps is not None and self.steps < 2:
            raise ValueError(f"calibration needs at least 2 steps, got {self.steps}")
        if self.verify_steps is not None:
            self.verify_steps = tuple(int(n) for n in self.verify_steps)
            if any(n < 2 for n in self.verify_steps):
                raise ValueError(f"verify_steps must each be >= 2, got {self.verify_steps}")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {self.dtype!r}")
        self.cases()  # a bad prompt count or file fails before anything loads

    @property
    def entry(self) -> models.ModelEntry | None:
        return models.MODELS.get(self.model)

    def cases(self) -> list[models.Case]:
        if self.inputs is not None:
            if not self.inputs:
                raise ValueError("no inputs to calibrate on")
            return list(self.inputs)
        if self.cases_file is not None:
            return load_cases(self.cases_file, self.task)
        text = str(self.prompts)
        if text.isdigit():
            count = int(text)
            if count < 1:
                raise ValueError(f"--prompts must be >= 1, got {count}")
            if self.entry is not None:
                return self.entry.calibration_cases(self.task, count)
            if self.task != "t2i":
                raise ValueError(
                    f"{self.model} has no {self.task} inputs of its own: pass your edit cases "
                    "(--cases FILE: a JSONL or folder of image + instruction [+ mask])"
                )
            from ..bench import DEFAULT_PROMPTS

            return [models.Case(DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)], seed=i) for i in range(count)]
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--prompts is neither a count nor a file: {text!r}")
        if self.task != "t2i":
            return load_cases(path, self.task)  # a user's edit cases given as --prompts
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{path} holds no prompts")
        return [models.Case(line, seed=i) for i, line in enumerate(lines)]

    def verify_cases(self) -> list[models.Case]:
        """The ``verify`` inputs the candidate plans are measured on: the calibration inputs after
        the profiled ones, so a plan is chosen on images the profile never measured (plans chosen on
        the profiled prompts measured up to 3 dB better there than on others: they fit the
        profile's noise). An input that repeats a profiled one (a short prompt file, a model
        without its own calibration set) takes a fresh seed."""
        profiled = self.cases()
        own = self.cases_file is None and self.inputs is None and str(self.prompts).isdigit()
        if self.entry is not None and own:
            following = self.entry.calibration_cases(self.task, len(profiled) + self.verify)[len(profiled) :]
        else:
            following = [profiled[i % len(profiled)] for i in range(self.verify)]
        seen = {(c.prompt, c.seed) for c in profiled}
        fresh = max((c.seed for c in profiled + following), default=0) + 1
        chosen = []
        for case in following:
            if (case.prompt, case.seed) in seen:
                case, fresh = dataclasses.replace(case, seed=fresh), fresh + 1
            seen.add((case.prompt, case.seed))
            chosen.append(case)
        return chosen

    @property
    def profile_steps(self) -> int:
        return self.steps or (self.entry.steps if self.entry else 28)

    def other_steps(self) -> tuple[int, ...]:
        """The step counts besides the profile's that the plans are verified at."""
        steps = self.profile_steps
        return other_grids(steps, (steps // 2,) if self.verify_steps is None else self.verify_steps)

    def work(self) -> int:
        """Progress units: one per prompt, plus one per context-sensitivity prompt of edits (run
        only where the pipeline has reference tokens, so a mask editor's bar stops short)."""
        context = min(self.profiler.context_prompts, len(self.cases())) if self.task == "edit" else 0
        verifying = (
            verification_work(self.profile_steps, other_steps=self.other_steps()) if self.verify else 0
        )
        return len(self.cases()) + context + verifying


def calibrate(settings: CalibrationSettings, progress: Any = None, pipeline: Any = None) -> Profile:
    """Profile ``settings.model`` and write its recommended plans into the profile. ``pipeline``:
    the plain pipeline, already loaded (on its device), instead of loading ``settings.model``."""
    from ..bench import case_call
    from ..pipelines.accelerated import AcceleratedPipeline, load_pipeline

    entry = settings.entry
    cases = settings.cases()
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipeline_class = entry.pipeline_for(settings.task) if entry is not None else None
    plain = pipeline
    if plain is None:
        plain = load_pipeline(
            settings.model, pipeline_class=pipeline_class, dtype=getattr(torch, settings.dtype)
        ).to(device)
    plain.set_progress_bar_config(disable=True)
    steps = settings.profile_steps
    source = next((c.image for c in cases if c.image is not None), None)
    default_size = source.size if entry is None and source is not None else (None, None)
    height = settings.height or (entry.height if entry else default_size[1])
    width = settings.width or (entry.width if entry else default_size[0])
    extra = dict(entry.call_defaults) if entry else {}
    pipe = AcceleratedPipeline.from_pipe(plain, methods=[])

    def calls_of(chosen: list[models.Case]) -> list[dict[str, Any]]:
        return [
            case_call(c, pipe.adapter, steps=steps, height=height, width=width, extra=extra) for c in chosen
        ]

    try:
        profile = Profiler(pipe, settings.profiler).profile(
            calls_of(cases), settings.model, steps, progress=progress
        )
    finally:
        pipe.remove()
    plan_all(profile)
    if settings.verify and profile.has_errors:
        verify_plans(
            plain, calls_of(settings.verify_cases()), profile, prompts=settings.verify, progress=progress,
            other_steps=settings.other_steps(), sensitivity_calls=calls_of(cases),
        )  # fmt: skip
    return profile
