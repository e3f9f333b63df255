"""``ditaccel tune`` / :func:`ditaccel.tune`: measure the candidates the way the bench does and
search them by successive halving, resumable from the output folder.

Each rung measures its candidates in groups of ``group``. The last rung measures as the bench
does: an untimed pass of each (counted FLOPs, images, warm-up: the bench's
:meth:`~ditaccel.bench.BenchSession.counting_pass`), then ``runs`` timed rounds alternating the
plain pipeline and the group's candidates (:meth:`~ditaccel.bench.BenchSession.timed_rounds`), and
the bench's result row against the plain pipeline's images. The rungs before it only screen: one
timed, uncounted pass of the plain pipeline and then of each candidate
(:meth:`~ditaccel.bench.BenchSession.timed_pass`), images and seconds from the same calls, since
the search reads speedup and PSNR only and counting FLOPs slows a call about 1.8x. So every speedup
is a ratio of times taken minutes apart at most, in one process, on the user's device. Intervals
are paired bootstrap intervals over the inputs (:mod:`ditaccel.metrics.intervals`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bench import BenchSession, Pass
from ..calibration.profile import shipped_profile
from ..metrics.intervals import CONFIDENCE, interval, min_inputs, pooled_psnr
from ..models import Case
from .candidates import (
    CandidateContext,
    applicable,
    combinations,
    proposed,
    sequence_length,
    with_profiles,
)
from .report import write_outputs
from .search import ETA, FIRST_INPUTS, Goal, Point, rung_sizes, successive_halving
from .store import TuneStore, input_fingerprint

Tick = Callable[[str], Any]


@dataclass
class TuneConfig:
    """How to search. ``target_speedup`` / ``min_psnr``: the goal (neither: the whole front, its
    knee recommended). ``runs``: timed rounds on the last rung (one on the rungs before). ``eta``:
    each rung keeps ``1/eta`` of the candidates and the next has ``eta`` times the inputs;
    ``first_inputs``: the fewest inputs of the first rung. ``group``: candidates timed together
    against one plain timing (and stored together). ``budget_minutes``: no new group starts after
    it (this run's time). ``profile`` / ``edit_profile``: calibration profiles for
    ``calibrated-cache`` / ``context-prune`` (default: those shipped with the model);
    ``calibrate``: make one first on the inputs (kept in the output folder). ``candidates``: the
    specs to search instead of those proposed for the pipeline. ``grid_inputs``: inputs shown in
    the image grid."""

    target_speedup: float | None = None
    min_psnr: float | None = None
    runs: int = 3
    eta: int = ETA
    first_inputs: int = FIRST_INPUTS
    group: int = 4
    budget_minutes: float | None = None
    profile: Path | None = None
    edit_profile: Path | None = None
    calibrate: bool = False
    candidates: tuple[str, ...] | None = None
    grid_inputs: int = 4
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        self.goal  # noqa: B018 - a contradictory or invalid goal fails here
        for name, low in (("runs", 1), ("eta", 2), ("first_inputs", 1), ("group", 1), ("grid_inputs", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        for name in ("profile", "edit_profile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} does not exist")
        if self.candidates is not None:
            from ..methods import resolve_methods

            self.candidates = tuple(self.candidates)
            for spec in self.candidates:
                if not resolve_methods(spec):
                    raise ValueError(f"candidate {spec!r} is the plain pipeline, which is always measured")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def goal(self) -> Goal:
        return Goal(self.target_speedup, self.min_psnr)


@dataclass
class TuneResult:
    """What a tune found: the recommended spec and its measured row, the front, every row of the
    rung the front was read on, notes (refusals: goal not reached, too few inputs for an interval,
    the budget), and the files written."""

    spec: str
    recommended: dict[str, Any]
    reached: bool
    front: list[dict[str, Any]]
    results: list[dict[str, Any]]
    notes: list[str]
    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def _task(session: BenchSession) -> str:
    return "edit" if session.task in ("edit", "inpaint") else session.task


def _point(record: dict[str, Any], drift: float = 0.0) -> Point:
    """The search's view of a stored row; a screening row also carries its noise: the standard
    error of its log speedup (the spread of the per-input ratios, plus ``drift``, the variance of a
    timed pass's log mean time from one pass to the next, once for the plain pass and once for its
    own) and of its PSNR over the inputs (delta method on the pooled MSE)."""
    speedup_sigma = psnr_sigma = 0.0
    if record.get("screening"):
        ratios = np.log(np.asarray(record["plain_wall_per_input"]) / np.asarray(record["wall_per_input"]))
        n = len(ratios)
        spread = float(np.var(ratios, ddof=1)) / n if n > 1 else 0.0
        speedup_sigma = float(np.sqrt(spread + 2.0 * drift))
        mse = np.asarray(record.get("mse_per_input") or [], dtype=float)
        if len(mse) > 1 and mse.mean() > 0:
            psnr_sigma = float(10.0 / np.log(10.0) * mse.std(ddof=1) / (mse.mean() * np.sqrt(len(mse))))
    return Point(
        record["method"], float(record["speedup"]), float(record["psnr_db"]), record.get("flops_ratio"),
        speedup_sigma, psnr_sigma,
    )  # fmt: skip


def pass_drift(records: list[dict[str, Any]]) -> float:
    """Variance of the log mean time of the plain pipeline's screening passes on the same inputs
    (one per group): how much a pass's speed moves from one minute to the next on this device,
    whatever runs. 0 with fewer than two passes."""
    passes = {tuple(r["plain_wall_per_input"]) for r in records if r.get("screening")}
    if len(passes) < 2:
        return 0.0
    return float(np.var([np.log(np.mean(p)) for p in passes], ddof=1))


class _Measurer:
    """The ``measure`` of the search: bench measurements, stored per candidate, skipped when stored."""

    def __init__(
        self, session: BenchSession, inputs: list[Case], store: TuneStore, config: TuneConfig,
        sizes: list[int], tick: Tick, deadline: float | None,
    ) -> None:  # fmt: skip
        self.session, self.inputs, self.store, self.config = session, inputs, store, config
        self.sizes, self.tick, self.deadline = sizes, tick, deadline
        self.failed: dict[str, str] = {}
        self.measured_now = 0

    def _plain(self, count: int, counted: bool) -> Pass:
        stored = self.store.get_plain(count)
        if stored is not None:
            images, flops = stored
            return Pass(images, flops, [0.0] * count)
        inputs = self.inputs[:count]
        plain = (
            self.session.counting_pass("none", inputs, self.tick)
            if counted
            else self.session.timed_pass("none", inputs, self.tick)[0]
        )
        self.store.put_plain(count, plain.images, plain.flops)
        return plain

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def __call__(self, specs: list[str], rung: int, count: int) -> dict[str, Point | None]:
        inputs = self.inputs[:count]
        last = rung == len(self.sizes) - 1
        todo = [s for s in specs if self.store.get(count, s) is None]
        if todo and not self._out_of_time():
            base = self._plain(count, counted=last)
            for start in range(0, len(todo), self.config.group):
                if self._out_of_time():
                    break
                group = todo[start : start + self.config.group]
                if last:
                    self._measure_group(group, inputs, self.config.runs, base)
                else:
                    self._screen_group(group, inputs, base)
        answers: dict[str, Point | None] = {}
        records = {spec: self.store.get(count, spec) for spec in specs}
        drift = pass_drift([r for r in self.store.measured(count) if not r.get("failed")])
        for spec, record in records.items():
            if record is None:
                continue  # not measured: out of time
            if record.get("failed"):
                self.failed[spec] = record["failed"]
                answers[spec] = None
            else:
                answers[spec] = _point(record, drift)
        return answers

    def _screen_group(self, group: list[str], inputs: list[Case], base: Pass) -> None:
        """A rung before the last: one timed, uncounted pass of each (images and seconds from the
        same calls) after one of the plain pipeline; no FLOPs (the search does not use them)."""
        plain_times = self.session.timed_pass("none", inputs, self.tick)[1]
        for spec in group:
            try:
                run, times = self.session.timed_pass(spec, inputs, self.tick)
            except ValueError as exc:  # a setting the pipeline refuses only at call time
                self.store.put(len(inputs), spec, {"failed": str(exc)})
                continue
            row = self.session.result_row(spec, run, times, base, plain_times, inputs)
            row.update(self._intervals(row, times, plain_times))
            row.update({"inputs": len(inputs), "runs": 1, "screening": True})
            self.store.put(len(inputs), spec, row)
            self.measured_now += 1

    def _measure_group(self, group: list[str], inputs: list[Case], runs: int, base: Pass) -> None:
        passes: dict[str, Pass] = {}
        for spec in group:
            try:
                passes[spec] = self.session.counting_pass(spec, inputs, self.tick)
            except ValueError as exc:  # a setting the pipeline refuses only at call time
                self.store.put(len(inputs), spec, {"failed": str(exc)})
        if not passes:
            return
        times = self.session.timed_rounds(["none", *passes], inputs, runs, self.tick)
        for spec, run in passes.items():
            row = self.session.result_row(spec, run, times[spec], base, times["none"], inputs)
            row.update(self._intervals(row, times[spec], times["none"]))
            row.update({"inputs": len(inputs), "runs": runs})
            self.store.put(len(inputs), spec, row)
            self.measured_now += 1

    def _intervals(
        self, row: dict[str, Any], times: list[list[float]], base: list[list[float]]
    ) -> dict[str, Any]:
        walls = [statistics.median(t) for t in times]
        plain = [statistics.median(t) for t in base]
        extra: dict[str, Any] = {"wall_per_input": walls, "plain_wall_per_input": plain}
        if len(walls) < min_inputs(self.config.confidence):
            extra.update(psnr_interval=None, speedup_interval=None)
            return extra
        confidence = self.config.confidence
        extra["psnr_interval"] = list(interval(pooled_psnr, [row["mse_per_input"]], confidence=confidence))
        extra["speedup_interval"] = list(
            interval(
                lambda p, c, axis: np.mean(p, axis) / np.mean(c, axis), [plain, walls], confidence=confidence
            )
        )
        return extra


def _profiles(
    session: BenchSession, config: TuneConfig, store: TuneStore, calibration: Any, tick: Tick
) -> tuple[Path | None, Path | None, list[str]]:
    """The profiles the candidates use: given, made here on request (or by an earlier run), or
    ``None`` (the method's own shipped-profile lookup)."""
    notes = []
    profile, edit_profile = config.profile, config.edit_profile
    if config.calibrate:
        path = store.root / "profile.json"
        if not path.is_file():
            if calibration is None:
                raise ValueError("calibrate=True needs calibration settings (the model's name or folder)")
            from ..calibration.run import calibrate

            calibrate(calibration, progress=tick, pipeline=session.pipe).save(path)
            notes.append(f"calibrated on {len(calibration.cases())} inputs: {path}")
        profile = profile or path
        if _task(session) == "edit":
            edit_profile = edit_profile or path
    elif profile is None and edit_profile is None:
        shipped = shipped_profile(session.pipe)
        if shipped is None and shipped_profile(session.pipe, task="edit") is None:
            notes.append(
                "no calibration profile: calibrated-cache and context-prune are not searched "
                "(--calibrate makes one first)"
            )
    return profile, edit_profile, notes


def run_tune(
    session: BenchSession,
    inputs: list[Case],
    config: TuneConfig,
    out: str | Path,
    *,
    model: str,
    calibration: Any = None,
    progress: Tick | None = None,
    planned: Callable[[int], Any] | None = None,
) -> TuneResult:
    """Tune on a loaded :class:`~ditaccel.bench.BenchSession`: measure, search, write ``out``.

    ``calibration``: the :class:`~ditaccel.calibration.run.CalibrationSettings` used when
    ``config.calibrate`` asks for a profile. ``progress(description)`` advances a bar;
    ``planned(calls)`` gives its total once the candidates are known.
    """
    started = time.monotonic()
    tick = progress or (lambda _description: None)
    if not inputs:
        raise ValueError("no inputs to tune on")
    settings = {
        "model": model, "task": _task(session), "steps": session.steps, "height": session.height,
        "width": session.width, "device": session.device, "dtype": str(session.pipe.dtype).removeprefix("torch."),
        "inputs": [input_fingerprint(c) for c in inputs],
    }  # fmt: skip
    store = TuneStore(out, settings)
    deadline = None if config.budget_minutes is None else started + 60.0 * config.budget_minutes
    notes: list[str] = []
    profile, edit_profile, profile_notes = _profiles(session, config, store, calibration, tick)
    notes += profile_notes

    if config.candidates is not None:
        specs = [with_profiles(spec, profile, edit_profile) for spec in config.candidates]
    else:
        from ..pipelines.accelerated import AcceleratedPipeline

        acc = AcceleratedPipeline.from_pipe(session.pipe, methods=[])
        try:
            first_call = session.call_kwargs(inputs[0], acc)
        finally:
            acc.remove()
        context = CandidateContext(
            task=_task(session), masks=all(c.mask is not None for c in inputs), profile=profile,
            edit_profile=edit_profile, sequence=sequence_length(session.pipe, first_call),
            shipped=shipped_profile(session.pipe),
        )  # fmt: skip
        specs = proposed(context)
    specs, refused = applicable(session.pipe, specs)
    sizes = rung_sizes(len(inputs), config.eta, min(config.first_inputs, len(inputs)))
    if planned is not None:
        planned(_planned_calls(len(specs), sizes, config))
    measure = _Measurer(session, inputs, store, config, sizes, tick, deadline)
    extend = None if config.candidates is not None else _extender(session.pipe)
    z = statistics.NormalDist().inv_cdf(config.confidence)  # a one-sided band at the tune's confidence
    search = successive_halving(specs, sizes, measure, config.goal, config.eta, extend=extend, z=z)
    notes += search.notes
    final = sizes[search.final]
    needed = min_inputs(config.confidence)
    if final < needed:
        notes.append(
            f"{final} inputs are too few for a {config.confidence:.0%} interval over inputs (it needs >= {needed}): "
            "the numbers below come without one; give more inputs (--prompts / --cases)"
        )
    if measure.failed:
        notes.append("failed at call time: " + "; ".join(f"{s}: {m}" for s, m in measure.failed.items()))
    assert search.choice is not None
    if not search.choice.reached:
        notes.insert(0, search.choice.note)
    rows = sorted(
        (r for r in store.measured(final) if r["method"] in search.rungs[search.final]),
        key=lambda r: (r["speedup"], r["method"]),
    )
    on_front = {p.spec for p in search.front}
    for row in rows:
        row["on_front"] = row["method"] in on_front
    recommended = next(r for r in rows if r["method"] == search.choice.point.spec)
    report = {
        **{k: v for k, v in settings.items() if k != "inputs"},
        "inputs": len(inputs),
        "goal": config.goal.to_dict(),
        "confidence": config.confidence,
        "recommended": {
            **_summary(recommended),
            "reached": search.choice.reached,
            "why": search.choice.note,
        },  # fmt: skip
        "front": [_summary(r) for r in rows if r["on_front"]],
        "results": [_summary(r) for r in rows],
        "rungs": [
            {
                "inputs": n,
                "runs": config.runs if i == len(sizes) - 1 else 1,
                "asked": len(asked),
                "measured": [
                    {
                        "method": p.spec,
                        "speedup": p.speedup,
                        "psnr_db": p.psnr_db,
                        "flops_ratio": p.flops_ratio,
                        "speedup_sigma": p.speedup_sigma,
                        "psnr_sigma": p.psnr_sigma,
                    }
                    for p in points.values()
                ],
            }
            for i, (n, asked, points) in enumerate(zip(sizes, search.asked, search.rungs, strict=False))
        ],  # fmt: skip
        "candidates": len(specs),
        "refused": refused,
        "complete": search.complete,
        "notes": notes,
    }
    store.add_elapsed(time.monotonic() - started)
    report["elapsed_s"] = store.elapsed_s
    paths = write_outputs(report, store.root, session, inputs[: min(config.grid_inputs, final)], store, tick)
    return TuneResult(
        spec=recommended["method"], recommended=report["recommended"], reached=search.choice.reached,
        front=report["front"], results=report["results"], notes=notes, report=report, paths=paths,
    )  # fmt: skip


_SUMMARY_DROP = ("config", "mse_per_input", "wall_per_input", "plain_wall_per_input")


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row without its per-input lists (kept in the measurements folder)."""
    return {k: v for k, v in row.items() if k not in _SUMMARY_DROP}


def _extender(pipe: Any) -> Callable[[dict[str, Point]], list[str]]:
    def extend(points: dict[str, Point]) -> list[str]:
        return applicable(pipe, combinations(points))[0]

    return extend


def _planned_calls(candidates: int, sizes: list[int], config: TuneConfig) -> int:
    """Pipeline calls the search makes if each rung keeps ``1/eta`` (for the progress bar; the
    combinations and resumed measurements change it, and the bar is corrected at the end)."""
    total, alive = 0, candidates
    for i, n in enumerate(sizes):
        groups = -(-alive // config.group)
        if i == len(sizes) - 1:  # counted passes, then timed rounds with the plain pipeline per group
            total += n + alive * n * (1 + config.runs) + groups * n * config.runs
        else:  # one timed pass each, the plain pipeline's per group (and its images once)
            total += n + alive * n + groups * n
        alive = -(-alive // config.eta)
    return total


def tune(
    pipe: Any,
    inputs: list[str | Case],
    *,
    out: str | Path | None = None,
    steps: int = 28,
    height: int | None = None,
    width: int | None = None,
    call_defaults: dict[str, Any] | None = None,
    config: TuneConfig | None = None,
    progress: Tick | None = None,
    **options: Any,
) -> TuneResult:
    """Tune the methods for ``pipe`` (a diffusers pipeline) on ``inputs`` (prompts, or
    :class:`~ditaccel.models.Case` edit cases with source images), measured on its device.

    ``options`` are :class:`TuneConfig` fields (``target_speedup=2``, ``min_psnr=35``,
    ``budget_minutes=30``, ...). ``out``: the folder for ``front.json``, the plots and the
    measurements (re-running with it resumes); default: a temporary folder, removed afterwards
    (the returned paths then no longer exist). Returns the :class:`TuneResult`; ``.spec`` is the
    recommended ``methods=`` string.
    """
    from ..calibration.run import CalibrationSettings

    pipe = getattr(pipe, "pipeline", pipe)  # an AcceleratedPipeline: its wrapped pipeline
    if config is not None and options:
        raise TypeError(f"give a TuneConfig or its fields ({', '.join(options)}), not both")
    config = config if config is not None else TuneConfig(**options)
    cases = [Case(c, seed=i) if isinstance(c, str) else c for i, c in enumerate(inputs)]
    from ..pipelines.accelerated import AcceleratedPipeline

    acc = AcceleratedPipeline.from_pipe(pipe, methods=[])
    task = "edit" if acc.adapter.task in ("edit", "inpaint") else "t2i"
    acc.remove()
    pipe.set_progress_bar_config(disable=True)
    session = BenchSession(
        pipe=pipe, task=task, steps=steps, height=height, width=width,
        device=str(pipe.device), defaults=dict(call_defaults or {}),
    )  # fmt: skip
    model = str(getattr(pipe, "name_or_path", "") or type(pipe).__name__)
    calibration = None
    if config.calibrate:
        calibration = CalibrationSettings(
            model=model, task=task, steps=steps, height=height, width=width, inputs=cases,
            dtype=str(pipe.dtype).removeprefix("torch."),
        )  # fmt: skip
    if out is None:
        with tempfile.TemporaryDirectory(prefix="ditaccel-tune-") as folder:
            return run_tune(
                session, cases, config, folder, model=model, calibration=calibration, progress=progress
            )
    return run_tune(session, cases, config, out, model=model, calibration=calibration, progress=progress)


__all__ = ["TuneConfig", "TuneResult", "run_tune", "tune"]
