"""The calibration profile: what a model's redundancy looks like, saved as JSON (never pickle).

Layout (DESIGN.md contract): ``model``, ``pipeline``, ``steps``, ``prompts``, ``blocks`` (ordered block
names), ``block_change`` (steps x blocks: relative L1 change of each block's output residual versus
the previous step, mean over prompts), ``attention`` (per attention layer: the key density that keeps
``mass`` of the attention), ``plans`` (method name -> recommended schedule). Besides: ``version``,
``fingerprint`` (of the transformer's config, so a profile of another model is refused),
``block_change_cv`` (spread across prompts), ``attention_by_head``, ``block_gflops`` /
``forward_gflops`` (counted), ``sigmas`` (the noise schedule profiled), ``context_sensitivity``
(per layer: output change when reference tokens are dropped there), ``external_drift`` (per kind
of external token, steps x attention layers: how fast their keys move, for ``block-external``),
``mag_ratios`` (per step, MagCache's magnitude ratio, for ``peer-magcache``), ``step_sensitivity``
(per step, how much of a predicted reuse error reaches the image, for the cache planner).

The planner's large tensors (``reuse_error``: the forecast error of serving a block from its
residuals ``gap`` steps back, per step and gap, for Taylor orders 0 and 1) live in a
``.safetensors`` file beside the JSON; without it the stored ``plans`` still work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

VERSION = 1
PROFILE_FILE = "ditaccel_profile.json"  # a profile shipped in a model's folder
ERROR_TENSORS = ("reuse_error_order0", "reuse_error_order1")


def fingerprint(config: Any) -> str:
    """A short hash of a transformer's config (its class and architecture fields)."""
    items = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    items["class"] = dict(config).get("_class_name", "")
    text = json.dumps(items, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_NUMBER = (int, float)
# JSON types of the fields, checked before anything reads them (a hand-edited file must fail clearly)
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str, "pipeline": str, "steps": int, "prompts": int, "blocks": list, "block_change": list,
    "block_change_cv": list, "fingerprint": str, "attention_layers": list, "attention": list,
    "attention_by_head": list, "mass": _NUMBER, "block_gflops": list, "forward_gflops": _NUMBER,
    "sigmas": list, "context_layers": list, "context_sensitivity": list, "external_drift": dict,
    "mag_ratios": list, "step_sensitivity": list, "plans": dict, "version": int,
}  # fmt: skip


@dataclass
class Profile:
    model: str
    pipeline: str
    steps: int
    prompts: int
    blocks: list[str]
    block_change: list[list[float]]
    block_change_cv: list[list[float]]
    fingerprint: str = ""
    attention_layers: list[str] = field(default_factory=list)
    attention: list[float] = field(default_factory=list)
    attention_by_head: list[list[float]] = field(default_factory=list)
    mass: float = 0.95
    block_gflops: list[float] = field(default_factory=list)
    forward_gflops: float = 0.0
    sigmas: list[float] = field(default_factory=list)
    context_layers: list[str] = field(default_factory=list)
    context_sensitivity: list[float] = field(default_factory=list)
    # kind ("reference", "text") -> steps x attention layers: relative L1 change of the external
    # tokens' keys since the previous step (mean over prompts; step 0: 0), for block-external
    external_drift: dict[str, list[list[float]]] = field(default_factory=dict)
    # per step: MagCache's magnitude ratio of the whole stack's residual (for peer-magcache)
    mag_ratios: list[float] = field(default_factory=list)
    # per step: how much of a predicted reuse error reaches the final image (measured by serving
    # every block at that step alone; the planner's ``weighting=measured``)
    step_sensitivity: list[float] = field(default_factory=list)
    plans: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION
    # planner tensors, kept in the .safetensors sidecar (not in the JSON)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def fail(why: str) -> None:
            raise ValueError(f"invalid calibration profile: {why}")

        for name, kinds in _FIELD_TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kinds):
                wanted = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
                fail(f"{name} must be {wanted}, got {type(value).__name__}")
        for name in ("block_change", "block_change_cv", "attention_by_head"):
            if any(not isinstance(row, list) for row in getattr(self, name)):
                fail(f"{name} must be a list of lists")
        if self.version != VERSION:
            fail(f"version {self.version}, this ditaccel reads version {VERSION}")
        if self.steps < 1 or self.prompts < 1:
            fail(f"steps ({self.steps}) and prompts ({self.prompts}) must be positive")
        if not self.blocks:
            fail("no blocks")
        for name, matrix in (("block_change", self.block_change), ("block_change_cv", self.block_change_cv)):
            if len(matrix) != self.steps or any(len(row) != len(self.blocks) for row in matrix):
                fail(f"{name} must be {self.steps} steps x {len(self.blocks)} blocks")
        if len(self.attention) != len(self.attention_layers):
            fail(f"{len(self.attention)} attention densities for {len(self.attention_layers)} layers")
        if any(not (0.0 < d <= 1.0) for d in self.attention):
            fail("attention densities must be in (0, 1]")
        if self.attention_by_head:
            if len(self.attention_by_head) != len(self.attention_layers):
                fail(f"{len(self.attention_by_head)} per-head lists for {len(self.attention_layers)} layers")
            if any(not heads or any(not (0.0 < d <= 1.0) for d in heads) for heads in self.attention_by_head):
                fail("per-head attention densities must be non-empty lists of values in (0, 1]")
        if self.block_gflops and len(self.block_gflops) != len(self.blocks):
            fail(f"{len(self.block_gflops)} block FLOP counts for {len(self.blocks)} blocks")
        if self.sigmas and len(self.sigmas) < self.steps:
            fail(f"{len(self.sigmas)} sigmas for {self.steps} steps")
        if self.mag_ratios and len(self.mag_ratios) != self.steps:
            fail(f"{len(self.mag_ratios)} magnitude ratios for {self.steps} steps")
        if any(isinstance(x, bool) or not isinstance(x, _NUMBER) or not x > 0 for x in self.mag_ratios):
            fail("magnitude ratios must be positive numbers")
        if self.step_sensitivity and len(self.step_sensitivity) != self.steps:
            fail(f"{len(self.step_sensitivity)} step sensitivities for {self.steps} steps")
        if any(isinstance(x, bool) or not isinstance(x, _NUMBER) or x < 0 for x in self.step_sensitivity):
            fail("step sensitivities must be non-negative numbers")
        if len(self.context_sensitivity) != len(self.context_layers):
            fail("context_sensitivity must give one value per context layer")
        for kind, matrix in self.external_drift.items():
            if kind not in ("reference", "text"):
                fail(f"external_drift is kept for 'reference' and 'text' tokens, not {kind!r}")
            if not isinstance(matrix, list) or any(not isinstance(row, list) for row in matrix):
                fail(f"external_drift[{kind!r}] must be a list of lists")
            if len(matrix) != self.steps or any(len(row) != len(self.attention_layers) for row in matrix):
                fail(
                    f"external_drift[{kind!r}] must be {self.steps} steps x {len(self.attention_layers)} layers"
                )
        for name, tensor in self.tensors.items():
            if name not in ERROR_TENSORS:
                fail(f"unknown tensor {name!r}")
            gaps = ERROR_TENSORS.index(name) + 1  # order 0: (gap,), order 1: (gap, gap)
            if tuple(tensor.shape[:2]) != (len(self.blocks), self.steps) or tensor.dim() != 2 + gaps:
                fail(f"{name} must be blocks x steps ({len(self.blocks)}, {self.steps}) x {gaps} gap axes")
            if len(set(tensor.shape[2:])) > 1:
                fail(f"{name}'s gap axes must be equal, got {tuple(tensor.shape[2:])}")
        for plan in self.plans.get("calibrated-cache", []):
            if any(not 0 <= b < len(self.blocks) for step in plan.get("reuse", []) for b in step):
                fail("a stored cache plan names a block the profile does not have")

    @property
    def has_errors(self) -> bool:
        """Whether the planner tensors are present (plans for any target can be made)."""
        return all(name in self.tensors for name in ERROR_TENSORS)

    def check_model(self, blocks: list[str], model_fingerprint: str | None = None) -> None:
        """Refuse a profile made for another model (other config or block layout)."""
        if model_fingerprint and self.fingerprint and model_fingerprint != self.fingerprint:
            raise ValueError(
                f"the profile is of {self.model} (transformer {self.fingerprint}), not of this "
                f"pipeline's transformer ({model_fingerprint}): profile it with `ditaccel calibrate`"
            )
        if blocks != self.blocks:
            raise ValueError(
                f"the profile is of {self.model} ({len(self.blocks)} blocks: {self.blocks[:2]}...), "
                f"this pipeline has {len(blocks)} blocks ({blocks[:2]}...): profile another model with "
                "`ditaccel calibrate`"
            )

    # --- files --------------------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        data.pop("tensors")
        return json.dumps(data, indent=1, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """Write the JSON and, when the planner tensors are present, the ``.safetensors`` beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        sidecar = tensor_path(path)
        if self.tensors:
            save_file({k: v.contiguous().float() for k, v in self.tensors.items()}, str(sidecar))
        elif sidecar.exists():
            sidecar.unlink()  # a stale sidecar of an earlier profile must not be read with this one
        return path

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read calibration profile {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a calibration profile (a JSON object)")
        required = ("model", "pipeline", "steps", "prompts", "blocks", "block_change")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{path} is not a calibration profile: missing {', '.join(missing)}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__) - {"tensors"})
        if unknown:
            raise ValueError(f"{path}: unknown calibration profile fields {unknown}")
        data.pop("tensors", None)
        data.setdefault("block_change_cv", [[0.0] * len(data["blocks"]) for _ in range(data["steps"])])
        sidecar = tensor_path(path)
        tensors = load_file(str(sidecar)) if sidecar.is_file() else {}
        try:
            return cls(**data, tensors=tensors)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None


def tensor_path(path: str | Path) -> Path:
    """Where the planner tensors of the profile at ``path`` are kept."""
    return Path(path).with_suffix(".safetensors")


def shipped_profile(pipeline: Any, task: str | None = None) -> Path | None:
    """The profile shipped in the folder ``pipeline`` was loaded from, if there is one; with
    ``task``, the one made on that task's pipeline (``ditaccel_profile_edit.json``) when shipped."""
    folder = getattr(pipeline, "name_or_path", None)
    if not folder:
        return None
    names = ([PROFILE_FILE.replace(".json", f"_{task}.json")] if task else []) + [PROFILE_FILE]
    return next((Path(folder) / name for name in names if (Path(folder) / name).is_file()), None)
