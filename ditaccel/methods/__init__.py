"""Acceleration methods, one module each, registered under the names of the contract."""

from . import none as _none  # noqa: F401  (registers "none")
from .base import Method, MethodConfig
from .none import NoneConfig
from .registry import available_methods, method_class, parse_spec, register_method, resolve_methods

__all__ = [
    "Method",
    "MethodConfig",
    "NoneConfig",
    "available_methods",
    "method_class",
    "parse_spec",
    "register_method",
    "resolve_methods",
]
