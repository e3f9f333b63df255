"""The search of ``ditaccel tune``: a speed-quality front, a goal, and successive halving.

Every candidate is first measured on a few inputs with one timed run (cheap, noisy); only those in
the front's neighbourhood go on to more inputs and the full timed runs. The rung sizes grow by a
factor ``eta`` up to all the inputs, and each rung keeps ``ceil(candidates / eta)`` of them
(successive halving, Jamieson & Talwalkar 2016; ``eta=3`` as in Hyperband, Li et al. 2018); with a
goal (a target speedup or a minimum PSNR), ``ceil(front / eta)`` of them, at least 2, since only
the front's points near the goal can be its answer. Which ones: whole Pareto layers in (speedup,
PSNR) order (the front, then what the front alone dominates, ...), and within a layer those
nearest the goal, so that for the whole front a point that noise on a few inputs pushed just off
it still gets measured properly.

Nothing here measures: :func:`successive_halving` takes a ``measure`` callable, so the search is
tested on synthetic measurements and :mod:`ditaccel.tuning.run` supplies the bench's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..metrics.image import PSNR_CAP

ETA = 3  # Hyperband's reduction factor
FIRST_INPUTS = 2  # the fewest inputs on which two settings are compared at all


@dataclass(frozen=True)
class Goal:
    """What the user asks for: at least ``target_speedup`` with the best PSNR, or at least
    ``min_psnr`` dB with the best speedup, or (neither) the whole front, its knee recommended."""

    target_speedup: float | None = None
    min_psnr: float | None = None

    def __post_init__(self) -> None:
        if self.target_speedup is not None and self.min_psnr is not None:
            raise ValueError("give a target speedup or a minimum PSNR, not both")
        if self.target_speedup is not None and not self.target_speedup > 0:
            raise ValueError(f"target speedup must be > 0, got {self.target_speedup}")
        if self.min_psnr is not None and not math.isfinite(self.min_psnr):
            raise ValueError(f"minimum PSNR must be a finite number of dB, got {self.min_psnr}")

    @property
    def kind(self) -> str:
        if self.target_speedup is not None:
            return "speedup"
        return "psnr" if self.min_psnr is not None else "front"

    def describe(self) -> str:
        if self.kind == "speedup":
            return f">= {self.target_speedup:g}x speedup, best PSNR"
        if self.kind == "psnr":
            return f">= {self.min_psnr:g} dB PSNR, best speedup"
        return "the whole front (its knee recommended)"

    def to_dict(self) -> dict[str, float | str | None]:
        return {"kind": self.kind, "target_speedup": self.target_speedup, "min_psnr": self.min_psnr}


@dataclass(frozen=True)
class Point:
    """A candidate measured on one rung: speedup over the plain pipeline and PSNR against it."""

    spec: str
    speedup: float
    psnr_db: float
    flops_ratio: float | None = None
    speedup_sigma: float = 0.0  # standard error of log(speedup): timing noise of the measurement
    psnr_sigma: float = 0.0  # standard error of the PSNR (dB) over the inputs

    @property
    def quality(self) -> float:
        """PSNR with identical images (infinite) at the cap, so they order and plot."""
        return min(float(self.psnr_db), PSNR_CAP)


@dataclass(frozen=True)
class Choice:
    """The recommended point; ``reached``: whether it meets the goal (else it is the closest
    measured setting, and ``note`` says so)."""

    point: Point
    reached: bool
    note: str


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as fast and as good as ``b``, and better in one."""
    return (
        a.speedup >= b.speedup and a.quality >= b.quality and (a.speedup > b.speedup or a.quality > b.quality)
    )


def pareto_layers(points: Sequence[Point]) -> list[list[Point]]:
    """Non-dominated sorting: the front, then the front of what is left, ...; each by speedup."""
    left, layers = list(points), []
    while left:
        layer = [p for p in left if not any(dominates(q, p) for q in left)]
        layers.append(sorted(layer, key=lambda p: (p.speedup, p.quality)))
        left = [p for p in left if p not in layer]
    return layers


def front(points: Sequence[Point]) -> list[Point]:
    """The speed-quality front (no other point is both faster and better), by speedup."""
    layers = pareto_layers(points)
    return layers[0] if layers else []


def _normalised(points: Sequence[Point]) -> dict[str, tuple[float, float]]:
    """(log speedup, PSNR) of each point scaled to [0, 1] over ``points`` (a constant axis: 1)."""
    xs = [math.log(p.speedup) for p in points]
    ys = [p.quality for p in points]

    def scale(v: float, lo: float, hi: float) -> float:
        return (v - lo) / (hi - lo) if hi > lo else 1.0

    return {
        p.spec: (scale(x, min(xs), max(xs)), scale(y, min(ys), max(ys)))
        for p, x, y in zip(points, xs, ys, strict=True)
    }


def goal_distance(point: Point, goal: Goal, points: Sequence[Point]) -> float:
    """How far ``point`` lies from what ``goal`` asks, for ranking within a Pareto layer: the
    speedup ratio's log distance to the target, the dB distance to the minimum PSNR, or (whole
    front) the distance to the ideal corner in the normalised plane of ``points``."""
    if goal.kind == "speedup":
        return abs(math.log(point.speedup / goal.target_speedup))
    if goal.kind == "psnr":
        return abs(point.quality - goal.min_psnr)
    x, y = _normalised(points)[point.spec]
    return math.hypot(1.0 - x, 1.0 - y)


def keep_count(points: Sequence[Point], eta: int, goal: Goal) -> int:
    """How many of ``points`` go on to the next rung: ``1/eta`` of them; with a goal, ``1/eta`` of
    the front (at least 2), since a goal's answer is the front's point nearest it and the rest of
    the front, far from the goal, only costs full measurements."""
    if goal.kind == "front":
        return math.ceil(len(points) / eta)
    return min(len(points), max(2, math.ceil(len(front(points)) / eta)))


def _reach(point: Point, goal: Goal, z: float) -> tuple[float, float]:
    """How far ``point`` lies beyond the goal's line (log speedup over the target, or dB over the
    minimum), at the low and at the high end of its noise band (``z`` standard errors)."""
    if goal.kind == "speedup":
        value, sigma = math.log(point.speedup / goal.target_speedup), point.speedup_sigma
    else:
        value, sigma = point.quality - goal.min_psnr, point.psnr_sigma
    return value - z * sigma, value + z * sigma


def _goal_first(points: Sequence[Point], goal: Goal, z: float) -> list[str]:
    """With a goal: the best point that meets it beyond its noise (where none does, the one that
    comes closest), then every point that might meet it within its noise and would beat that one,
    best first (by PSNR for a speedup goal, by speedup for a PSNR goal)."""
    better = (
        (lambda p: (p.quality, p.speedup)) if goal.kind == "speedup" else (lambda p: (p.speedup, p.quality))
    )
    sure = [p for p in points if _reach(p, goal, z)[0] >= 0]
    anchor = max(sure, key=better) if sure else max(points, key=lambda p: (_reach(p, goal, z)[1], better(p)))
    might = [p for p in points if _reach(p, goal, z)[1] >= 0 and better(p) > better(anchor)]
    return [anchor.spec, *(p.spec for p in sorted(might, key=better, reverse=True))]


def survivors(points: Sequence[Point], keep: int, goal: Goal, z: float = 0.0) -> list[str]:
    """The ``keep`` specs that go on to the next rung. With a goal, first those that may be its
    answer given their noise (``z`` standard errors; see the module's docstring); then, and for the
    whole front, by Pareto layer and within a layer by goal distance."""
    layers = pareto_layers(points)
    rank = {
        p.spec: (i, goal_distance(p, goal, points), p.spec) for i, layer in enumerate(layers) for p in layer
    }
    first = _goal_first(points, goal, z) if goal.kind != "front" else []
    rest = sorted((s for s in rank if s not in first), key=rank.__getitem__)
    return [*first, *rest][:keep]


def choose(points: Sequence[Point], goal: Goal) -> Choice:
    """The setting ``goal`` asks for among ``points``; where none reaches it, the closest (the
    fastest for a speedup goal, the best for a PSNR goal), with a note saying so."""
    if not points:
        raise ValueError("no candidate was measured: nothing to recommend")
    if goal.kind == "speedup":
        reaching = [p for p in points if p.speedup >= goal.target_speedup]
        if reaching:
            best = max(reaching, key=lambda p: (p.quality, p.speedup))
            return Choice(
                best, True, f"the best PSNR among {len(reaching)} settings at >= {goal.target_speedup:g}x"
            )
        best = max(points, key=lambda p: (p.speedup, p.quality))
        return Choice(
            best, False,
            f"no candidate reached {goal.target_speedup:g}x; the closest measured setting, {best.speedup:.2f}x",
        )  # fmt: skip
    if goal.kind == "psnr":
        reaching = [p for p in points if p.quality >= goal.min_psnr]
        if reaching:
            best = max(reaching, key=lambda p: (p.speedup, p.quality))
            return Choice(best, True, f"the fastest of {len(reaching)} settings at >= {goal.min_psnr:g} dB")
        best = max(points, key=lambda p: (p.quality, p.speedup))
        return Choice(
            best, False,
            f"no candidate reached {goal.min_psnr:g} dB; the closest measured setting, {best.quality:.2f} dB",
        )  # fmt: skip
    on_front = front(points)
    best = min(on_front, key=lambda p: (goal_distance(p, goal, on_front), -p.speedup))
    return Choice(best, True, "the front's knee: nearest the ideal corner of the normalised front")


def rung_sizes(inputs: int, eta: int = ETA, first: int = FIRST_INPUTS) -> list[int]:
    """Inputs per rung: all ``inputs`` last, each rung before ``eta`` times fewer, none below
    ``first`` (8 inputs, eta 3: [3, 8])."""
    if inputs < 1 or eta < 2 or first < 1:
        raise ValueError(f"need inputs >= 1, eta >= 2, first >= 1; got {inputs}, {eta}, {first}")
    sizes = [inputs]
    while math.ceil(sizes[0] / eta) >= first and math.ceil(sizes[0] / eta) < sizes[0]:
        sizes.insert(0, math.ceil(sizes[0] / eta))
    return sizes


# measure(specs, rung index, inputs) -> spec: its point, or None where it failed to run; specs left
# out were not measured (the budget ran out)
Measure = Callable[[list[str], int, int], dict[str, "Point | None"]]


@dataclass
class SearchResult:
    """What the search measured, rung by rung, and what it recommends. ``final``: the index of the
    rung the front and the choice are read on (the deepest one measured in full)."""

    sizes: list[int]
    rungs: list[dict[str, Point]] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)
    final: int = 0
    choice: Choice | None = None
    complete: bool = True
    notes: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)

    @property
    def front(self) -> list[Point]:
        return front(list(self.rungs[self.final].values())) if self.rungs else []


def successive_halving(
    candidates: Sequence[str],
    sizes: Sequence[int],
    measure: Measure,
    goal: Goal,
    eta: int = ETA,
    extend: Callable[[dict[str, Point]], list[str]] | None = None,
    z: float = 0.0,
) -> SearchResult:
    """Measure ``candidates`` rung by rung (``sizes``: inputs per rung), keeping the front's
    neighbourhood each time. ``extend``: called with the first rung's points, returns further
    candidates (combinations of the settings on the front) measured on the first rung too. ``z``:
    how many standard errors of a point's noise a goal allows for when choosing the survivors."""
    if not candidates:
        raise ValueError("no candidate applies to this pipeline: nothing to tune")
    result = SearchResult(sizes=list(sizes))
    alive = list(dict.fromkeys(candidates))
    for index, count in enumerate(sizes):
        asked = list(alive)
        answers = measure(alive, index, count)
        if index == 0 and extend is not None and len(answers) == len(alive):
            ok = {spec: p for spec, p in answers.items() if p is not None}
            more = [s for s in extend(ok) if s not in answers]
            asked += more
            if more:
                answers = {**answers, **measure(more, index, count)}
        points = {spec: p for spec, p in answers.items() if p is not None}
        result.rungs.append(points)
        result.asked.append([s for s in asked if s not in answers or answers[s] is not None])
        result.failed.update(s for s, p in answers.items() if p is None)
        missing = [s for s in asked if s not in answers]
        if missing:  # the budget ran out within this rung
            result.complete = False
            result.notes.append(
                f"the time budget ran out on rung {index + 1} ({count} inputs): {len(points)} of "
                f"{len(asked)} candidates measured there"
            )
            break
        if not points:
            break
        if index + 1 < len(sizes):
            alive = survivors(list(points.values()), keep_count(list(points.values()), eta, goal), goal, z)
    complete_rungs = [i for i, (pts, asked) in enumerate(zip(result.rungs, result.asked, strict=True)) if pts and len(pts) == len(asked)]  # fmt: skip
    measured = [i for i, pts in enumerate(result.rungs) if pts]
    if not measured:
        if result.complete:
            raise ValueError("every candidate failed to run on this pipeline: nothing to recommend")
        raise ValueError("the time budget ran out before any candidate was measured")
    result.final = complete_rungs[-1] if complete_rungs else measured[0]
    if result.final < len(sizes) - 1 and not result.complete:
        result.notes.append(
            f"recommended from rung {result.final + 1} ({sizes[result.final]} inputs), the deepest measured in full; "
            "re-run with the same --out (and a larger budget) to continue"
        )
    result.choice = choose(list(result.rungs[result.final].values()), goal)
    return result
