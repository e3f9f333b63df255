"""Acceleration methods, one module each, registered under the names of the contract."""

from . import adaptive_cache as _adaptive_cache  # noqa: F401  (registers "adaptive-cache")
from . import block_external as _block_external  # noqa: F401  (registers "block-external")
from . import calibrated_cache as _calibrated_cache  # noqa: F401  (registers "calibrated-cache")
from . import context_prune as _context_prune  # noqa: F401  (registers "context-prune")
from . import deepcache as _deepcache  # noqa: F401  (registers "deepcache")
from . import none as _none  # noqa: F401  (registers "none")
from . import peer_dbcache as _peer_dbcache  # noqa: F401  (registers "peer-dbcache")
from . import peers as _peers  # noqa: F401  (registers "peer-fbcache", "peer-taylorseer", "peer-magcache")
from . import region_edit as _region_edit  # noqa: F401  (registers "region-edit")
from . import sparse_attention as _sparse_attention  # noqa: F401  (registers "sparse-attention")
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
