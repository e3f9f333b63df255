"""Where the denoising loop is, shared by every method hook of one accelerated pipeline.

A :class:`DenoiseContext` is owned by one pipeline. The step tracker (``step_tracker.py``) fills
it at every denoiser forward: the loop step and step count, which CFG branch this forward is,
the token layout of the call. Methods keep their per-call state in :meth:`DenoiseContext.state`,
which is keyed by denoiser and branch (so cond and uncond passes run separately are cached
separately) and starts empty on every call and whenever the batch or resolution changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from ..pipelines import Adapter, CFGMode
from ..stats import CallStats
from .step_info import StepInfo

S = TypeVar("S")


class DenoiseContext:
    """Per-pipeline denoising state: current step info, method state, call statistics."""

    def __init__(self, pipeline: Any, adapter: Adapter) -> None:
        self.pipeline = pipeline
        self.adapter = adapter
        self.current: StepInfo | None = None
        self.cfg = CFGMode()
        self.method_specs: list[str] = []
        self.call_arguments: dict[str, Any] = {}  # what methods read from the current call
        # Which rows the current forward computes: "" for the whole call; a method that calls the
        # denoiser on a fixed subset of its tokens names that subset while the forward runs, so
        # that block-level caches keep their tensors apart per row set (shapes never mix).
        self.rows = ""
        # Set while the current forward must compute every row (an outer method keeps its K/V).
        self.pinned = False
        self.blocks_per_forward = sum(len(g) for g in adapter.block_groups(adapter.denoisers()[0]))
        self.stats = self._new_stats()
        self._states: dict[tuple, tuple[tuple, Any]] = {}
        self._timesteps_seen: torch.Tensor | None = None
        self._step = -1
        self._forwards_in_step = 0
        self._last_timestep: float | None = None

    # --- call boundaries ----------------------------------------------------------------------
    def begin_call(self, call_kwargs: dict[str, Any]) -> None:
        """Forget everything of the previous call; note how this call batches CFG."""
        self._reset()
        self.cfg = self.adapter.cfg_mode(call_kwargs)

    def end_call(self) -> None:
        """Free the methods' cached tensors; the call's statistics stay readable."""
        self._states.clear()
        self.current = None
        self.call_arguments = {}

    def _reset(self) -> None:
        self.current = None
        self._states.clear()
        self._timesteps_seen = None
        self._step = -1
        self._forwards_in_step = 0
        self._last_timestep = None
        self.stats = self._new_stats()

    def _new_stats(self) -> CallStats:
        return CallStats(
            pipeline=type(self.pipeline).__name__,
            methods=list(self.method_specs),
            blocks_per_forward=self.blocks_per_forward,
        )

    # --- forwards -----------------------------------------------------------------------------
    def enter_forward(
        self,
        denoiser_index: int,
        denoiser: torch.nn.Module,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        name: str,
    ) -> StepInfo:
        """Record a denoiser forward and return where in the loop it is."""
        scheduler = self.pipeline.scheduler
        timesteps = getattr(scheduler, "timesteps", None)
        if timesteps is not self._timesteps_seen:
            # set_timesteps made a new schedule: a new pipeline call, even one that bypassed
            # AcceleratedPipeline.__call__ (the pipeline called directly).
            cfg = self.cfg
            self._reset()
            self.cfg = cfg
            self._timesteps_seen = timesteps
        step, total = self._locate_step(scheduler, denoiser, args, kwargs)
        if step != self._step:
            self._step, self._forwards_in_step = step, 0
        branch = self._forwards_in_step
        self._forwards_in_step += 1
        hidden = args[0] if args else kwargs.get("hidden_states")
        signature = (tuple(hidden.shape), hidden.dtype, hidden.device)
        layout = self.adapter.token_layout(denoiser, args, kwargs)
        additions = self.adapter.block_additions(denoiser, args, kwargs)
        self.current = StepInfo(
            step, total, branch, name or f"call{branch}", denoiser_index, layout, signature, additions
        )
        self.stats.begin_forward(self.current)
        return self.current

    def exit_forward(self) -> None:
        """The forward is over: note the bytes the methods' state holds now (peak per owner)."""
        if self._states:
            peak = self.stats.cache_peak_bytes
            for owner, held in state_bytes(self._states).items():
                peak[owner] = max(peak.get(owner, 0), held)
        self.current = None

    def _locate_step(self, scheduler, denoiser, args, kwargs) -> tuple[int, int]:
        """Loop step and step count, from the scheduler's own counter when it keeps one.

        ``step_index`` is a host integer, so no device sync is needed. Schedulers without it
        (DDIM, DDPM) are followed by watching the timestep change, which reads one scalar.
        """
        n = len(scheduler.timesteps)
        if hasattr(type(scheduler), "step_index"):
            begin = getattr(scheduler, "begin_index", None) or 0
            index = scheduler.step_index
            return (index if index is not None else begin) - begin, n - begin
        t = float(self.adapter.timestep(denoiser, args, kwargs).reshape(-1)[0])
        if self._last_timestep is None or t != self._last_timestep:
            self._last_timestep = t
            return self._step + 1, n
        return self._step, n

    # --- method state ------------------------------------------------------------------------
    def state(self, owner: str, factory: Callable[[], S], shared: bool = False, by_rows: bool = False) -> S:
        """``owner``'s state for the current denoiser and branch (``shared``: one for all CFG
        branches of the call; ``by_rows``: one per row set, see ``rows``), created by ``factory``
        when absent or made under other input shapes."""
        info = self.current
        if info is None:
            raise RuntimeError("method state asked for outside a denoiser forward")
        key = (owner, info.denoiser, None if shared else info.branch, self.rows if by_rows else "")
        held = self._states.get(key)
        if held is None or held[0] != info.signature:
            held = (info.signature, factory())
            self._states[key] = held
        return held[1]


def state_bytes(states: dict[tuple, tuple[tuple, Any]]) -> dict[str, int]:
    """Bytes of the tensors each owner's state holds (a storage shared by two tensors counts once)."""
    seen: set[int] = set()
    totals: dict[str, int] = {}

    def walk(obj: Any, depth: int = 0) -> int:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            key = storage.data_ptr()
            if key in seen or storage.nbytes() == 0:
                return 0
            seen.add(key)
            return storage.nbytes()
        if depth > 6 or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            return 0
        if isinstance(obj, dict):
            return sum(walk(v, depth + 1) for v in obj.values())
        if isinstance(obj, (list, tuple, set, frozenset)):
            return sum(walk(v, depth + 1) for v in obj)
        fields = getattr(obj, "__dict__", None)
        return sum(walk(v, depth + 1) for v in fields.values()) if fields else 0

    for (owner, *_), (_, value) in states.items():
        totals[owner] = totals.get(owner, 0) + walk(value)
    return totals
