"""One denoiser forward as the step tracker sees it: loop step, CFG branch, token layout.

Its own module so that call statistics (``ditaccel.stats``) and the denoising context
(``context.py``) can both name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..pipelines import TokenLayout


@dataclass(frozen=True)
class StepInfo:
    """One denoiser forward: loop step, number of steps, CFG branch, token layout.

    ``branch`` counts the forwards of this step (0 = cond, 1 = uncond where CFG runs separate
    forwards); ``branch_name`` is the pipeline's ``cache_context`` name when it sets one.
    ``signature`` identifies the input shapes: state made under another signature is dropped.
    """

    step: int
    total: int
    branch: int
    branch_name: str
    denoiser: int
    layout: TokenLayout
    signature: tuple
    # what the denoiser's loop adds to the image stream after each block (adapter.block_additions)
    additions: dict[int, Any] | None = None

    @property
    def is_first(self) -> bool:
        return self.step == 0

    @property
    def is_last(self) -> bool:
        return self.step == self.total - 1
