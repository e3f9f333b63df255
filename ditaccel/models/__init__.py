"""Models ditaccel can load by name, offline.

``shapes-flux`` is the project's own small trained FLUX-family pipeline (text-to-image and
Kontext-style editing in the shapes world, with an offline checker): the model of every quality
and speed benchmark. The ``tiny-random-*`` models are tiny random-weight pipelines of every
supported family, built in memory from ``ditaccel.testing`` (plumbing and exactness, not
quality). Each entry knows the call settings and the default bench inputs that suit it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MODELS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    """A bench input: prompt or instruction, seed, and for edits the source image and the mask of
    the region meant to change (``mask`` is given to mask-editing pipelines and used by the
    metrics). ``spec`` is what the model's checker judges the output against."""

    prompt: str
    seed: int = 0
    image: Image.Image | None = None
    mask: Image.Image | None = None
    spec: Any = None


@dataclass(frozen=True)
class ModelEntry:
    """An embedded model: how to build it, which pipeline serves which bench task, call defaults."""

    name: str
    description: str
    pipelines: dict[str, str]  # bench task ("t2i" / "edit") -> diffusers pipeline class name
    build: Callable[..., Any] | None = None  # in-memory models; else loaded from ``folder``
    folder: Path | None = None
    height: int | None = None
    width: int | None = None
    steps: int = 28
    call_defaults: dict[str, Any] = field(default_factory=dict)
    cases: dict[str, Callable[[], list[Case]]] = field(default_factory=dict)  # bench task -> inputs
    scorer: Callable[[Any, Case], bool] | None = None  # checker: is this output right for the case?
    # bench task -> count -> calibration inputs (default: the bench inputs, cycled)
    calibration: dict[str, Callable[[int], list[Case]]] = field(default_factory=dict)
    # bench task -> (start, stop) -> items start..stop-1 of the model's endless input stream, whose
    # first items are the bench set and the next the calibration set (held-out sets lie beyond)
    inputs: dict[str, Callable[[int, int], list[Case]]] = field(default_factory=dict)

    @property
    def bench_tasks(self) -> tuple[str, ...]:
        return tuple(self.pipelines)

    def pipeline_for(self, task: str | None = None) -> str:
        if task is None:
            return next(iter(self.pipelines.values()))
        if task not in self.pipelines:
            raise ValueError(f"{self.name} serves bench tasks {self.bench_tasks}, not {task!r}")
        return self.pipelines[task]

    def calibration_cases(self, task: str, count: int) -> list[Case]:
        """``count`` inputs to calibrate on; where the model has its own, they are not the bench's."""
        self.pipeline_for(task)
        if task in self.calibration:
            return self.calibration[task](count)
        cases = self.cases[task]()
        return [cases[i % len(cases)] for i in range(count)]


# --- tiny random models -------------------------------------------------------------------------
_TINY_PROMPTS = (
    "a red circle on the left",
    "a small blue square at the top, striped background",
    "a green triangle in the centre and a yellow circle on the right",
    "a large purple square on the right, checkered background",
)
_TINY_SIZE = 32


def _synthetic_source(size: int, seed: int) -> Image.Image:
    """A simple deterministic picture to edit: a coloured square on a gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 1 - x], axis=-1) * 0.6
    lo, hi = size // 4, 3 * size // 4
    img[lo:hi, lo:hi] = rng.uniform(0.2, 1.0, size=3)
    return Image.fromarray((img * 255).astype(np.uint8))


def _centre_mask(size: int) -> Image.Image:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return Image.fromarray(mask)


def _tiny_t2i_cases(prompts: tuple[str, ...]) -> Callable[[], list[Case]]:
    return lambda: [Case(p, seed=i) for i, p in enumerate(prompts)]


def _tiny_edit_cases() -> list[Case]:
    instructions = ("make the square green", "remove the square", "add a yellow triangle at the top")
    return [
        Case(p, seed=i, image=_synthetic_source(_TINY_SIZE, i), mask=_centre_mask(_TINY_SIZE))
        for i, p in enumerate(instructions)
    ]


def _tiny_control_cases() -> list[Case]:
    return [Case(p, seed=i, image=_synthetic_source(_TINY_SIZE, i)) for i, p in enumerate(_TINY_PROMPTS[:3])]


def _tiny(
    name: str, pipeline: str, task: str, prompts: tuple[str, ...] = _TINY_PROMPTS, **kwargs: Any
) -> ModelEntry:
    def build(dtype=None, torch_dtype=None, **_: Any):
        from .. import testing

        dtype = dtype if dtype is not None else torch_dtype  # diffusers' name, and its old one
        return testing.tiny_pipeline(name, **({"torch_dtype": dtype} if dtype is not None else {}))

    sized = pipeline != "DiTPipeline"
    cases = {"edit": _tiny_edit_cases, "control": _tiny_control_cases}.get(task) or _tiny_t2i_cases(prompts)
    return ModelEntry(
        name=name,
        description="random weights: for tests and plumbing, not quality",
        pipelines={task: pipeline},
        build=build,
        height=_TINY_SIZE if sized else None,
        width=_TINY_SIZE if sized else None,
        steps=4,
        cases={task: cases},
        **kwargs,
    )


# --- shapes-flux ----------------------------------------------------------------------------------
_SHAPES_BENCH = 8  # the bench's inputs are the first 8 of the default sets; calibration takes the next


def _shapes_inputs(task: str, start: int, stop: int) -> list[Case]:
    from .. import shapes
    from .shapes_flux import IMAGE_SIZE

    if task == "t2i":
        chosen = shapes.default_t2i_set(stop)[start:stop]
        return [Case(scene.caption(), seed=seed, spec=scene) for scene, seed in chosen]
    return [
        Case(
            pair.instruction,
            seed=seed,
            image=Image.fromarray(shapes.render(pair.source, IMAGE_SIZE)),
            mask=Image.fromarray(shapes.edit_mask(pair, IMAGE_SIZE).astype(np.uint8) * 255),
            spec=pair,
        )
        for pair, seed in shapes.default_edit_set(stop)[start:stop]
    ]


def _shapes_cases(task: str) -> Callable[[], list[Case]]:
    return lambda: _shapes_inputs(task, 0, _SHAPES_BENCH)


def _shapes_calibration(task: str) -> Callable[[int], list[Case]]:
    return lambda count: _shapes_inputs(task, _SHAPES_BENCH, _SHAPES_BENCH + count)


def _shapes_score(image: Any, case: Case) -> bool:
    from .. import shapes

    if isinstance(case.spec, shapes.EditPair):
        return shapes.check_edit(image, case.spec)
    return shapes.check_scene(image, case.spec).correct


_SHAPES_FOLDER = MODELS_DIR / "shapes-flux"

_ENTRIES = [
    ModelEntry(
        name="shapes-flux",
        description="trained FLUX-family pipeline of the shapes world (t2i + Kontext editing), 128x128",
        pipelines={"t2i": "FluxPipeline", "edit": "FluxKontextPipeline"},
        folder=_SHAPES_FOLDER,
        height=128,
        width=128,
        steps=28,
        call_defaults={"max_sequence_length": 32},
        cases={"t2i": _shapes_cases("t2i"), "edit": _shapes_cases("edit")},
        scorer=_shapes_score,
        calibration={"t2i": _shapes_calibration("t2i"), "edit": _shapes_calibration("edit")},
        inputs={task: partial(_shapes_inputs, task) for task in ("t2i", "edit")},
    ),
    _tiny("tiny-random-flux", "FluxPipeline", "t2i"),
    _tiny("tiny-random-flux-kontext", "FluxKontextPipeline", "edit"),
    _tiny("tiny-random-flux-fill", "FluxFillPipeline", "edit"),
    _tiny("tiny-random-flux-controlnet", "FluxControlNetPipeline", "control"),
    _tiny("tiny-random-sd3", "StableDiffusion3Pipeline", "t2i"),
    _tiny("tiny-random-sd3-controlnet", "StableDiffusion3ControlNetPipeline", "control"),
    _tiny(
        "tiny-random-pixart", "PixArtSigmaPipeline", "t2i", call_defaults={"use_resolution_binning": False}
    ),
    _tiny("tiny-random-qwen-image", "QwenImagePipeline", "t2i"),
    _tiny("tiny-random-qwen-image-edit", "QwenImageEditPipeline", "edit"),
    _tiny("tiny-random-wan", "WanPipeline", "t2i", call_defaults={"num_frames": 5}),
    _tiny(
        "tiny-random-dit", "DiTPipeline", "t2i", prompts=("circle", "square", "triangle", "circle, square")
    ),
]
MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}


def available() -> list[str]:
    """Names of the embedded models."""
    return list(MODELS)


def get(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown embedded model {name!r}; embedded models: {', '.join(available())}"
        ) from None


def path(name: str) -> Path:
    """Folder of an embedded model that ships as a diffusers pipeline folder."""
    entry = get(name)
    if entry.folder is None:
        raise ValueError(f"{name} is built in memory and has no folder")
    return entry.folder
