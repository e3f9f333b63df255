"""Calibration: profile a model's per-block, per-step redundancy, attention density and context
sensitivity once, then let the profile drive its acceleration schedule."""

from .planner import CachePlan, PlannerConfig, plan_all, plan_cache
from .profile import Profile, shipped_profile
from .profiler import Profiler, ProfilerConfig, key_density

__all__ = [
    "CachePlan",
    "PlannerConfig",
    "Profile",
    "Profiler",
    "ProfilerConfig",
    "key_density",
    "plan_all",
    "plan_cache",
    "shipped_profile",
]
