"""The method protocol: a typed, validated config and the hooks it puts on one pipeline.

A method is registered under its contract name with :func:`ditaccel.methods.register_method`.
Its config is a frozen dataclass validated in ``__post_init__``; the same dataclass parses spec
strings (``deepcache:interval=3,warmup=2``), so a value that is wrong fails identically whether
it came from Python or the CLI.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from ..hooks.block_range import BlockRange
from ..hooks.context import DenoiseContext
from ..pipelines import Adapter

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method config. Subclasses add typed fields and check them in
    ``__post_init__`` (use :meth:`check_range`)."""

    method: ClassVar[str] = ""

    # --- validation helpers -------------------------------------------------------------------
    def check_range(self, name: str, low: float | None = None, high: float | None = None) -> None:
        value = getattr(self, name)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise ValueError(f"{self.method}: {name} must be in {bounds}, got {value}")

    # --- spec strings -------------------------------------------------------------------------
    @classmethod
    def parameters(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_params(cls, params: dict[str, str]) -> MethodConfig:
        """Build from string values, converting each to its field's type."""
        hints = typing.get_type_hints(cls)
        known = cls.parameters()
        values: dict[str, Any] = {}
        for key, text in params.items():
            if key not in known:
                listing = ", ".join(known) or "none"
                raise ValueError(f"{cls.method}: unknown parameter {key!r}; parameters: {listing}")
            values[key] = _convert(cls.method, key, text, hints[key])
        return cls(**values)

    def spec(self) -> str:
        """The canonical spec string: name plus the parameters that differ from the defaults."""
        changed = [
            f"{f.name}={_format(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != _default(f)
        ]
        return self.method + (":" + ",".join(changed) if changed else "")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


class Method:
    """A technique applied to one pipeline through hooks.

    ``exclusive`` names a group of methods that replace the same computation (e.g. two step
    caches) and so cannot be combined. ``tasks`` limits the pipeline tasks it applies to.
    """

    config_class: ClassVar[type[MethodConfig]]
    exclusive: ClassVar[str | None] = None
    tasks: ClassVar[frozenset[str] | None] = None
    # call keyword arguments the method reads (taken out of the call where the pipeline has none)
    call_arguments: ClassVar[frozenset[str]] = frozenset()
    # methods it may be combined with (None: any outside its exclusive group), and why not others
    combinable: ClassVar[frozenset[str] | None] = None
    combination_note: ClassVar[str] = ""
    # hooked inside the other methods' hooks (applied first), so that it sees the call as they
    # pass it on (e.g. a subset of the tokens) and they see its result
    inner: ClassVar[bool] = False
    # keeps the same decisions on every rank under context parallelism (each rank sees a shard of
    # the sequence): fixed schedules, or decisions from values reduced over the group
    context_parallel: ClassVar[bool] = False

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    def check(self, adapter: Adapter) -> None:
        """Raise ``ValueError`` when this method cannot run on the adapter's pipeline."""
        if self.tasks is not None and adapter.task not in self.tasks:
            raise ValueError(
                f"{self.config.method} applies to {sorted(self.tasks)} pipelines, "
                f"not {type(adapter.pipeline).__name__} ({adapter.task})"
            )

    def check_combination(self, configs: list[MethodConfig]) -> None:
        """Raise ``ValueError`` when a setting of this method cannot hold beside ``configs``."""

    def apply(self, context: DenoiseContext) -> None:
        """Register this method's hooks on the context's pipeline."""

    def prepare_call(self, context: DenoiseContext, arguments: dict[str, Any], call: dict[str, Any]) -> None:
        """Check this call's ``arguments`` (its :attr:`call_arguments`) before anything runs."""

    def remove(self, context: DenoiseContext) -> None:
        """Take this method's hooks off again."""


class RangeMethod(Method):
    """A method that stands in for block ranges (the step caches): it keeps the ranges it attached
    and takes them off again."""

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self._ranges: list[BlockRange] = []

    def attach_range(self, block_range: BlockRange) -> None:
        block_range.attach()
        self._ranges.append(block_range)

    def remove(self, context: DenoiseContext) -> None:
        for block_range in self._ranges:
            block_range.detach()
        self._ranges.clear()


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _convert(method: str, key: str, text: str, hint: Any) -> Any:
    """Convert a spec-string value to the type ``hint``; ValueError naming the parameter."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null") and len(options) < len(typing.get_args(hint)):
            return None
        errors = []
        for option in options:
            try:
                return _convert(method, key, text, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{method}: bad value for {key}: {text!r}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise ValueError(f"{method}: {key} must be one of {', '.join(map(str, choices))}; got {text!r}")
        return text
    if origin in (tuple, list):
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return origin(_convert(method, key, part, item) for part in text.split("/") if part)
    try:
        if hint is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is Path:
            return Path(text)
        if hint is str:
            return text
    except ValueError:
        kind = {bool: "a boolean", int: "an integer", float: "a number"}.get(hint, str(hint))
        raise ValueError(f"{method}: {key} must be {kind}, got {text!r}") from None
    raise TypeError(f"{method}: parameter {key} has a type spec strings cannot express: {hint}")


def _format(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "/".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
