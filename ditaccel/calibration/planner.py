"""Turn a profile into schedules: a per-step, per-block cache plan, layer densities, pivotal layers.

Cache plan: start from computing every block at every step and, greedily, stop computing the
(block, step) whose reuse adds the least predicted error per FLOP saved, until the target
``flops_ratio`` is reached or the next choice would exceed the error ``budget``. The predicted
error of a plan is the sum, over served (block, step) pairs, of the profiled forecast error of that
block at that step given the gaps to its last computed steps (``reuse_error_order{0,1}``),
weighted per step: equally (``uniform``, the default) or by the step's share of the noise schedule
(``dt``: an error in the model output at step ``t`` moves the latent by ``sigma_t - sigma_{t+1}``
times it; measured worse on shapes-flux, since it moves reuse into the early steps where the
layout forms and errors persist). The first step is always computed.

``scope=drift`` instead takes whole steps from ``adaptive-cache``'s rate rule run on the profile's
measured per-step change (:mod:`.drift_schedule`), finishing in (block, step) pairs where no step
pattern lands within :data:`RATIO_TOLERANCE` of the target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .drift_schedule import call_drift, drift_patterns
from .error_model import ErrorModel
from .profile import Profile

DEFAULT_TARGETS = (0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3)
RATIO_TOLERANCE = 0.03  # a plan further than this above its target flops_ratio misses it
# pivotal layers: the most context-sensitive ones that together hold this share of the sensitivity
# (ToPi scores tokens at a few layers; half the total keeps the list short where one layer dominates)
PIVOTAL_SHARE = 0.5
# scope=drift: adaptive-cache's defaults (its most steps served in a row, its threshold's ramp)
DRIFT_MAX_GAP = 3
DRIFT_RAMP = 3.0
ATTENTION_BUDGETS = (0.5, 0.3, 0.15)
_SMALLEST_SHARE = 1e-6  # a head keeps at least one block anyway (top-k rounds up)  # mean key-block densities whose per-head split is stored


@dataclass(frozen=True)
class PlannerConfig:
    """``flops_ratio``: target share of the plain transformer FLOPs; ``budget``: largest predicted
    error (either or both; the plan stops at whichever comes first). ``order``: the forecast the
    cache uses (0 reuse, 1 linear). ``weighting``: ``uniform`` weighs steps equally, ``measured`` by
    the profile's step sensitivity (to the ``power``), ``dt`` by their
    noise-schedule step. ``max_gap``: longest run of served steps (default: the profile's).
    ``scope``: the greedy serves (block, step) pairs, or whole steps past the first ``front`` blocks
    (finishing in pairs where whole steps cannot land within :data:`RATIO_TOLERANCE` of the target);
    ``drift``: whole steps where ``adaptive-cache``'s rate rule, run on the profile's measured
    change with its threshold growing ``ramp`` times over the schedule, serves them (its most
    steps served in a row: ``max_gap``, default :data:`DRIFT_MAX_GAP`). ``protect``: the share of the first steps always computed."""

    flops_ratio: float | None = 0.5
    budget: float | None = None
    order: int = 1
    weighting: Literal["uniform", "dt", "measured"] = "uniform"
    max_gap: int | None = None
    power: float = 1.0
    scope: Literal["block", "step", "drift"] = "block"
    protect: float = 0.0
    front: int = 1
    ramp: float = DRIFT_RAMP

    def __post_init__(self) -> None:
        if self.scope not in ("block", "step", "drift"):
            raise ValueError(f"scope must be block, step or drift, got {self.scope!r}")
        if self.ramp < 0:
            raise ValueError(f"ramp must be >= 0, got {self.ramp}")
        if not 0.0 <= self.protect < 1.0:
            raise ValueError(f"protect must be in [0, 1), got {self.protect}")
        if self.front < 0:
            raise ValueError(f"front must be >= 0, got {self.front}")
        if self.flops_ratio is None and self.budget is None:
            raise ValueError("a cache plan needs a flops_ratio target or an error budget")
        if self.flops_ratio is not None and not 0.0 < self.flops_ratio <= 1.0:
            raise ValueError(f"flops_ratio must be in (0, 1], got {self.flops_ratio}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")
        if self.weighting not in ("uniform", "dt", "measured"):
            raise ValueError(f"weighting must be uniform, dt or measured, got {self.weighting!r}")
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        if self.order not in (0, 1):
            raise ValueError(f"order must be 0 or 1 (the profiled forecasts), got {self.order}")
        if self.max_gap is not None and self.max_gap < 1:
            raise ValueError(f"max_gap must be >= 1, got {self.max_gap}")


@dataclass
class CachePlan:
    """Which blocks (indices into the profile's ``blocks``) are served from the cache at each step."""

    steps: int
    order: int
    reuse: list[list[int]]
    flops_ratio: float
    predicted_error: float | None  # None for a plan mapped onto another step count
    target: dict[str, Any] = field(default_factory=dict)
    max_gap: int = 8  # longest run of served steps of one block
    # the planner settings that made it (PlannerConfig fields but the target), to make the same
    # kind of plan for another step count; empty for hand-made plans
    generator: dict[str, Any] = field(default_factory=dict)
    # what `ditaccel calibrate` measured running it (psnr_db against the plain images, prompts)
    measured: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.reuse) != self.steps:
            raise ValueError(f"a cache plan of {self.steps} steps lists {len(self.reuse)}")
        if self.reuse and self.reuse[0]:
            raise ValueError("a cache plan cannot serve blocks at the first step (nothing is cached yet)")
        if any(b < 0 for step in self.reuse for b in step):
            raise ValueError("a cache plan's block indices must be >= 0")

    @property
    def served(self) -> int:
        return sum(len(step) for step in self.reuse)

    def blocks(self) -> set[int]:
        """The blocks this plan ever serves."""
        return {b for step in self.reuse for b in step}

    @property
    def empty(self) -> bool:
        return not any(self.reuse)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CachePlan:
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a cache plan: {exc}") from None

    def for_steps(self, steps: int) -> CachePlan:
        """The plan for another step count: each step takes the decision of the nearest
        profiled step at the same point of the schedule (the first step stays computed), and a
        block's served runs are cut to ``max_gap``. Its FLOPs ratio is rescaled by the share of
        served (block, step) pairs; its predicted error is unknown (``None``)."""
        if steps == self.steps:
            return self
        scale = (self.steps - 1) / max(steps - 1, 1)
        reuse = [[] if i == 0 else list(self.reuse[round(i * scale)]) for i in range(steps)]
        run: dict[int, int] = {}
        for step in reuse:
            for b in list(step):
                run[b] = run.get(b, 0) + 1
                if run[b] > self.max_gap:  # compute this one instead
                    step.remove(b)
            for b in set(run) - set(step):
                run[b] = 0
        old_share = self.served / self.steps
        new_share = sum(map(len, reuse)) / steps
        ratio = 1.0 - (1.0 - self.flops_ratio) * (new_share / old_share) if old_share else 1.0
        target = {**self.target, "mapped_from_steps": self.steps}
        return dataclasses.replace(
            self, steps=steps, reuse=reuse, flops_ratio=round(ratio, 6), predicted_error=None, target=target
        )


def meets_target(plan: CachePlan, flops_ratio: float) -> bool:
    """Whether ``plan`` is no further than :data:`RATIO_TOLERANCE` above the ``flops_ratio`` target."""
    return plan.flops_ratio <= flops_ratio + RATIO_TOLERANCE


def step_weights(profile: Profile, weighting: str, steps: int | None = None,
                 sigmas: list[float] | None = None, power: float = 1.0) -> np.ndarray:  # fmt: skip
    """Each step's weight (mean 1): uniform; ``measured``: the profile's step sensitivity (how much
    of a predicted error reaches the final image), read at the call's noise levels, to ``power``;
    ``dt``: the step's share of the noise schedule."""
    steps = steps or profile.steps
    if weighting == "measured":
        if not profile.step_sensitivity:
            raise ValueError(
                "weighting=measured needs the profile's step sensitivity: re-run `ditaccel calibrate`"
            )
        positions = ErrorModel.positions_of(profile, steps, sigmas)
        measured = np.asarray(profile.step_sensitivity, dtype=np.float64)
        w = np.interp(positions, np.arange(profile.steps), measured) ** power
        return w / w.mean() if w.sum() > 0 else np.ones(steps)
    sigmas = np.asarray(profile.sigmas if sigmas is None else sigmas, dtype=np.float64)
    if weighting == "uniform" or len(sigmas) < steps + 1:
        return np.ones(steps)
    dt = np.abs(sigmas[:steps] - sigmas[1 : steps + 1])
    return dt / dt.mean() if dt.sum() > 0 else np.ones(steps)


def block_costs(profile: Profile) -> np.ndarray:
    """FLOPs of each block relative to one whole forward."""
    flops = np.asarray(profile.block_gflops, dtype=np.float64)
    if len(flops) != len(profile.blocks) or flops.sum() <= 0 or profile.forward_gflops <= 0:
        return np.full(len(profile.blocks), 1.0 / len(profile.blocks))
    return flops / profile.forward_gflops


class _Costs:
    """The predicted error of one block's schedule (a boolean row: computed at each step)."""

    def __init__(self, model: ErrorModel, config: PlannerConfig, weights: np.ndarray) -> None:
        self.order0, self.order1 = model.order0, model.order1
        self.order = config.order
        self.gap = min(config.max_gap or model.max_gap, model.max_gap)
        self.weights = weights

    def __call__(self, block: int, computed: np.ndarray) -> float:
        total, last, before = 0.0, None, None
        for t, run in enumerate(computed):
            if run:
                last, before = t, last
                continue
            if last is None or t - last > self.gap:
                return np.inf
            g0 = t - last
            if self.order == 1 and before is not None:
                if last - before > self.order1.shape[3]:
                    return np.inf
                error = self.order1[block, t, g0 - 1, last - before - 1]
            else:
                error = self.order0[block, t, g0 - 1]
            if not np.isfinite(error):
                return np.inf
            total += self.weights[t] * error
        return total


def _drift_start(
    profile: Profile,
    config: PlannerConfig,
    costs: _Costs,
    share: np.ndarray,
    steps: int,
    sigmas: list[float] | None,
    first: int,
) -> np.ndarray:
    """The drift rule's step pattern (True: computed) for ``config``: of the patterns within the
    predicted-error ``budget`` (computing every step when none is), the one nearest the
    ``flops_ratio`` target within :data:`RATIO_TOLERANCE` (the cheapest without a target); where
    none lands there, the cheapest one still above it, for the greedy to finish in (block, step)
    pairs."""
    gap = min(config.max_gap or DRIFT_MAX_GAP, costs.gap)
    patterns = drift_patterns(call_drift(profile, steps, sigmas), config.ramp, gap, first)
    whole = share.sum()

    def ratio(p: np.ndarray) -> float:
        return 1.0 - whole * float((~p).sum())

    def error(p: np.ndarray) -> float:
        return float(sum(costs(b, p) for b in range(len(share))))

    if config.budget is not None:
        patterns = [p for p in patterns if error(p) <= config.budget] or [np.ones(steps, dtype=bool)]
    if config.flops_ratio is None:
        preferred = patterns[::-1]  # the cheapest within the budget
    else:
        target = config.flops_ratio
        landing = [p for p in patterns if abs(ratio(p) - target) <= RATIO_TOLERANCE]
        above = [p for p in patterns if ratio(p) - target > RATIO_TOLERANCE]
        preferred = sorted(landing, key=lambda p: abs(ratio(p) - target)) + above[::-1]
    for p in preferred:
        if np.isfinite(error(p)):  # gaps the profile measured
            return p
    return np.ones(steps, dtype=bool)


def plan_cache(
    profile: Profile, config: PlannerConfig, steps: int | None = None, sigmas: list[float] | None = None
) -> CachePlan:
    """The greedy cache plan for ``config``'s target (see the module doc), for a call of ``steps``
    steps at noise levels ``sigmas`` (default: the profile's own)."""
    if not profile.has_errors:
        raise ValueError(
            "this profile has no reuse-error tensors (its .safetensors file); re-run `ditaccel calibrate` "
            "or use one of its stored plans"
        )
    model = ErrorModel(profile, steps, sigmas)
    steps = model.steps
    costs = _Costs(model, config, step_weights(profile, config.weighting, steps, sigmas, config.power))
    share = block_costs(profile) / steps  # FLOPs share of one (block, step)
    blocks = len(profile.blocks)
    computed = np.ones((blocks, steps), dtype=bool)
    current = np.zeros(blocks)
    first = max(1, int(np.ceil(config.protect * steps - 1e-9)))  # steps before this always run
    # the units the greedy serves: (block, step) pairs, or whole steps past the front blocks
    deep = list(range(min(config.front, blocks), blocks)) if config.scope == "step" else None
    ratio, error = 1.0, 0.0

    def pair_scores(b: int) -> np.ndarray:
        """Added error per FLOP saved of no longer computing each step of block ``b``."""
        scores = np.full(steps, np.inf)
        for t in range(first, steps):
            if computed[b, t]:
                computed[b, t] = False
                scores[t] = (costs(b, computed[b]) - current[b]) / share[b]
                computed[b, t] = True
        return scores

    def step_score(t: int) -> float:
        if not computed[deep, t].all():
            return np.inf
        computed[deep, t] = False
        added = sum(costs(b, computed[b]) - current[b] for b in deep)
        computed[deep, t] = True
        return added / share[deep].sum()

    landed = False  # scope=drift: its step pattern met the target, nothing left to the greedy
    if config.scope == "drift":
        pattern = _drift_start(profile, config, costs, share, steps, sigmas, first)
        computed[:, ~pattern] = False
        current = np.array([costs(b, computed[b]) for b in range(blocks)])
        ratio, error = 1.0 - share.sum() * float((~pattern).sum()), float(current.sum())
        # a budget alone: pairs spend what the pattern left of it
        landed = config.flops_ratio is not None and ratio <= config.flops_ratio + RATIO_TOLERANCE
    if landed:
        table = None  # nothing left for the greedy to choose
    elif deep is None:
        table = np.stack([pair_scores(b) for b in range(blocks)])
    else:
        if not deep:
            raise ValueError(f"a whole-step plan past {config.front} front blocks serves no block")
        table = np.array([[step_score(t) if t >= first else np.inf for t in range(steps)]])
    while not landed and (config.flops_ratio is None or ratio > config.flops_ratio + 1e-9):
        row, t = np.unravel_index(np.argmin(table), table.shape)
        if not np.isfinite(table[row, t]):
            break  # nothing more can be served within the longest gap
        units = [row] if deep is None else deep
        saved = share[units].sum()
        added = table[row, t] * saved
        if config.budget is not None and error + added > config.budget:
            break
        if (
            config.flops_ratio is not None
            and deep is not None
            and ratio - saved < config.flops_ratio - min(saved / 2, RATIO_TOLERANCE)
        ):
            if ratio <= config.flops_ratio + RATIO_TOLERANCE:
                break  # a whole step passes the target by more than half of it or the tolerance
            # stopping here misses the target (a coarse grid: a step of 14 is 0.07): the rest
            # in (block, step) pairs
            deep = None
            table = np.stack([pair_scores(b) for b in range(blocks)])
            continue
        computed[units, t] = False
        for b in units:
            current[b] = costs(b, computed[b])
        error += added
        ratio -= saved
        if deep is None:
            table[row] = pair_scores(row)
        else:
            table[0] = [step_score(u) if u >= first else np.inf for u in range(steps)]
    reuse = [[b for b in range(blocks) if not computed[b, t]] for t in range(steps)]
    target = {
        k: v for k, v in (("flops_ratio", config.flops_ratio), ("budget", config.budget)) if v is not None
    }
    generator = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("flops_ratio", "budget")}
    return CachePlan(steps, config.order, reuse, round(ratio, 6), round(float(error), 6), target,
                     costs.gap, generator)  # fmt: skip


def predicted_error(profile: Profile, plan: CachePlan, weighting: str = "uniform") -> float:
    """The error ``profile`` predicts for ``plan`` (e.g. a plan made from another profile)."""
    if plan.steps != profile.steps:
        raise ValueError(f"a plan of {plan.steps} steps against a profile of {profile.steps}")
    config = PlannerConfig(flops_ratio=1.0, order=plan.order, weighting=weighting)
    costs = _Costs(ErrorModel(profile), config, step_weights(profile, weighting))
    computed = np.ones((len(profile.blocks), profile.steps), dtype=bool)
    for t, blocks in enumerate(plan.reuse):
        computed[blocks, t] = False
    return float(sum(costs(b, computed[b]) for b in range(len(profile.blocks))))


def pivotal_layers(profile: Profile, share: float = PIVOTAL_SHARE) -> list[str]:
    """The most context-sensitive layers that together hold ``share`` of the total sensitivity."""
    values = np.asarray(profile.context_sensitivity, dtype=np.float64)
    if not len(values) or values.sum() <= 0:
        return []
    order = np.argsort(-values)
    held = np.cumsum(values[order]) / values.sum()
    count = int(np.searchsorted(held, share) + 1)
    return [profile.context_layers[i] for i in sorted(order[:count])]


def attention_allocation(
    profile: Profile, budget: float, layers: list[str] | None = None
) -> dict[str, list[float]]:
    """Per attention layer (``layers``, default all), per head: a share of key blocks to keep,
    proportional to the key density the profile measured for that head (its need), scaled so the
    mean over those heads is ``budget``; heads that would exceed 1 keep everything and their surplus
    goes to the others."""
    if not profile.attention_by_head:
        raise ValueError("the profile has no per-head attention densities")
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"the attention budget must be in (0, 1], got {budget}")
    chosen = profile.attention_layers if layers is None else layers
    by_layer = dict(zip(profile.attention_layers, profile.attention_by_head, strict=True))
    need = [by_layer[name] for name in chosen]
    flat = np.asarray([d for heads in need for d in heads], dtype=np.float64)
    share = np.ones_like(flat)
    free = np.ones(len(flat), dtype=bool)
    for _ in range(len(flat)):  # water-filling: cap at 1, spread what is left over the rest
        left = budget * len(flat) - share[~free].sum()
        share[free] = flat[free] * left / flat[free].sum()
        over = free & (share > 1.0)
        if not over.any():
            break
        share[over], free[over] = 1.0, False
    share = np.clip(share, _SMALLEST_SHARE, 1.0)  # rounding must not reach 0
    values, start = [], 0
    for heads in need:
        values.append([round(float(x), 6) for x in share[start : start + len(heads)]])
        start += len(heads)
    return dict(zip(chosen, values, strict=True))


def plan_all(
    profile: Profile,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    order: int = 1,
    pivotal_share: float = PIVOTAL_SHARE,
) -> Profile:
    """Write the recommended schedules into ``profile.plans`` (and return it): cache plans for
    each target ``flops_ratio``, per-layer attention densities, pivotal layers."""
    plans: dict[str, Any] = {}
    if profile.has_errors:
        plans["calibrated-cache"] = [
            plan_cache(profile, PlannerConfig(flops_ratio=target, order=order)).to_dict()
            for target in targets
        ]
    if profile.attention_layers:  # what sparse-attention:profile=... runs at a few budgets
        plans["sparse-attention"] = {
            str(budget): attention_allocation(profile, budget) for budget in ATTENTION_BUDGETS
        }
    pivotal = pivotal_layers(profile, pivotal_share)
    if pivotal:
        plans["context-prune"] = {"pivotal_layers": pivotal}
    profile.plans = plans
    return profile


def nearest_plan(plans: list[CachePlan], steps: int, flops_ratio: float) -> CachePlan | None:
    """Of ``plans``, those made for the step count nearest ``steps`` (by ratio: 14 is as far from
    28 as 56), and of those the one whose FLOPs ratio is nearest ``flops_ratio``."""
    if not plans:
        return None
    grid = min({p.steps for p in plans}, key=lambda n: (abs(np.log(n / steps)), -n))
    return min((p for p in plans if p.steps == grid), key=lambda p: abs(p.flops_ratio - flops_ratio))


def stored_plan(
    profile: Profile, flops_ratio: float, order: int | None, steps: int | None = None
) -> CachePlan:
    """The stored plan (of ``order``, any when None) nearest ``steps`` and ``flops_ratio`` (for
    profiles without their reuse-error tensors)."""
    stored = [CachePlan.from_dict(p) for p in profile.plans.get("calibrated-cache", [])]
    stored = [p for p in stored if order is None or p.order == order]
    if not stored:
        raise ValueError(
            f"the profile has neither reuse-error tensors nor a stored {'' if order is None else f'order-{order} '}"
            "cache plan; re-run `ditaccel calibrate`"
        )
    return nearest_plan(stored, steps or profile.steps, flops_ratio)
