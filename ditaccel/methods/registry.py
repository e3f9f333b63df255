"""Method names -> method classes, and the spec-string grammar of the CLI and the bench.

Grammar: ``spec := item ("+" item)*``, ``item := name [":" key=value ("," key=value)*]``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable

from .base import Method, MethodConfig

_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str):
    """Class decorator: register a :class:`Method` under its contract name."""

    def decorate(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        cls.config_class.method = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None


def _takes_plus(item: str) -> bool:
    """Whether ``item``'s last parameter is one whose choices contain ``+``
    (``block-external:external=reference+text``)."""
    name, _, params = item.partition(":")
    cls = _REGISTRY.get(name.strip())
    if cls is None or not params:
        return False
    key = params.split(",")[-1].partition("=")[0].strip()
    hint = typing.get_type_hints(cls.config_class).get(key)
    return typing.get_origin(hint) is typing.Literal and any("+" in str(c) for c in typing.get_args(hint))


def split_methods(spec: str) -> list[str]:
    """The method items of a spec: ``+`` joins methods, except inside a value that may hold one."""
    items: list[str] = []
    for part in spec.split("+"):
        name = part.strip().partition(":")[0].strip()
        if items and name not in _REGISTRY and _takes_plus(items[-1]):
            items[-1] += "+" + part
        else:
            items.append(part)
    return items


def parse_spec(spec: str) -> list[MethodConfig]:
    """Configs of a spec string such as ``deepcache:interval=3+sparse-attention``."""
    spec = spec.strip()
    if not spec:
        return []
    configs = []
    for item in split_methods(spec):
        name, _, params_text = item.strip().partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"malformed method spec {spec!r}: empty method name")
        params: dict[str, str] = {}
        if _:
            for pair in params_text.split(","):
                key, eq, value = (part.strip() for part in pair.partition("="))
                if not eq or not key or not value:
                    raise ValueError(
                        f"malformed method spec {item.strip()!r}: expected key=value, got {pair!r}"
                    )
                if key in params:
                    raise ValueError(f"malformed method spec {item.strip()!r}: {key} given twice")
                params[key] = value
        configs.append(method_class(name).config_class.from_params(params))
    return configs


def resolve_methods(methods: str | MethodConfig | Iterable[str | MethodConfig] | None) -> list[MethodConfig]:
    """Normalise what a user passes as ``methods`` to a checked list of configs.

    Accepts a spec string, a config object, or a list mixing both. ``none`` alone means the
    plain pipeline. Raises ``ValueError`` for unknown names, bad values, repeated methods and
    combinations that replace the same computation twice; ``TypeError`` for other objects.
    """
    if methods is None:
        return []
    if isinstance(methods, (str, MethodConfig)):
        methods = [methods]
    configs: list[MethodConfig] = []
    for item in methods:
        if isinstance(item, str):
            configs.extend(parse_spec(item))
        elif isinstance(item, MethodConfig):
            method_class(item.method)
            configs.append(item)
        else:
            raise TypeError(f"methods must be spec strings or method configs, got {type(item).__name__}")
    names = [c.method for c in configs]
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"'none' is the plain pipeline and cannot be combined with {names}")
        return []
    repeated = {n for n in names if names.count(n) > 1}
    if repeated:
        raise ValueError(f"method(s) given more than once: {', '.join(sorted(repeated))}")
    groups: dict[str, str] = {}
    for name in names:
        group = method_class(name).exclusive
        if group is None:
            continue
        if group in groups:
            raise ValueError(
                f"{groups[group]} and {name} cannot be combined: both are {group} methods "
                "and would replace the same computation"
            )
        groups[group] = name
    for name in names:
        allowed = method_class(name).combinable
        others = [other for other in names if other != name]
        refused = [other for other in others if allowed is not None and other not in allowed]
        if refused:
            note = method_class(name).combination_note
            raise ValueError(f"{name} cannot be combined with {refused[0]}" + (f": {note}" if note else ""))
    return configs
