"""Models ditaccel can load by name, offline.

The ``tiny-random-*`` models are tiny random-weight pipelines of every supported family, built in
memory from ``ditaccel.testing`` (for plumbing and exactness, not quality). Each entry also
knows the call settings and the default bench inputs that suit it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MODELS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class EditCase:
    """A bench edit input: instruction, source image, optional mask of the region to change."""

    prompt: str
    image: Image.Image
    mask: Image.Image | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelEntry:
    """An embedded model: how to build it and what a default call and bench look like."""

    name: str
    description: str
    pipeline: str
    task: str
    build: Callable[..., Any]
    scorer: Callable[[list[Any], list[Any]], list[bool]] | None = None
    height: int | None = None
    width: int | None = None
    steps: int = 28
    call_defaults: dict[str, Any] = field(default_factory=dict)
    prompts: tuple[str, ...] = ()
    edit_cases: Callable[[], list[EditCase]] | None = None
    folder: Path | None = None

    @property
    def bench_tasks(self) -> tuple[str, ...]:
        """Bench tasks (``t2i`` / ``edit``) this model serves."""
        return ("edit",) if self.task in ("edit", "inpaint") else ("t2i",)


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


def _tiny_edit_cases(with_mask: bool) -> Callable[[], list[EditCase]]:
    def cases() -> list[EditCase]:
        instructions = ("make the square green", "remove the square", "add a yellow triangle at the top")
        return [
            EditCase(
                p, _synthetic_source(_TINY_SIZE, i), _centre_mask(_TINY_SIZE) if with_mask else None, seed=i
            )
            for i, p in enumerate(instructions)
        ]

    return cases


def _tiny(name: str, pipeline: str, task: str, **kwargs: Any) -> ModelEntry:
    def build(torch_dtype=None, **_: Any):
        from .. import testing

        return testing.tiny_pipeline(
            name, **({"torch_dtype": torch_dtype} if torch_dtype is not None else {})
        )

    sized = task != "class"
    return ModelEntry(
        name=name,
        description="random weights: for tests and plumbing, not quality",
        pipeline=pipeline,
        task=task,
        build=build,
        height=_TINY_SIZE if sized else None,
        width=_TINY_SIZE if sized else None,
        steps=4,
        prompts=kwargs.pop("prompts", _TINY_PROMPTS),
        **kwargs,
    )


_ENTRIES = [
    _tiny("tiny-random-flux", "FluxPipeline", "t2i"),
    _tiny("tiny-random-flux-kontext", "FluxKontextPipeline", "edit", edit_cases=_tiny_edit_cases(False)),
    _tiny("tiny-random-flux-fill", "FluxFillPipeline", "inpaint", edit_cases=_tiny_edit_cases(True)),
    _tiny("tiny-random-sd3", "StableDiffusion3Pipeline", "t2i"),
    _tiny(
        "tiny-random-pixart", "PixArtSigmaPipeline", "t2i", call_defaults={"use_resolution_binning": False}
    ),
    _tiny("tiny-random-qwen-image", "QwenImagePipeline", "t2i"),
    _tiny("tiny-random-qwen-image-edit", "QwenImageEditPipeline", "edit", edit_cases=_tiny_edit_cases(False)),
    _tiny("tiny-random-wan", "WanPipeline", "t2v", call_defaults={"num_frames": 5}),
    _tiny(
        "tiny-random-dit", "DiTPipeline", "class", prompts=("circle", "square", "triangle", "circle, square")
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
