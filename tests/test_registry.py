"""Method names, spec strings and typed configs: exact errors before any compute."""

import dataclasses
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ditaccel.methods import (
    Method,
    MethodConfig,
    available_methods,
    parse_spec,
    register_method,
    resolve_methods,
)
from ditaccel.methods.none import NoneConfig


@dataclasses.dataclass(frozen=True)
class _KnobsConfig(MethodConfig):
    """Test-only config exercising every field type the spec grammar supports."""

    interval: int = 3
    threshold: float = 0.1
    schedule: Literal["uniform", "nonuniform"] = "uniform"
    enabled: bool = True
    layers: tuple[int, ...] = ()
    profile: str | None = None

    def __post_init__(self):
        self.check_range("interval", 1)
        self.check_range("threshold", 0.0, 1.0)


@register_method("test-knobs")
class _Knobs(Method):
    config_class = _KnobsConfig


@register_method("test-cache-a")
class _CacheA(Method):
    config_class = type("CacheAConfig", (NoneConfig,), {})
    exclusive = "step-cache"


@register_method("test-cache-b")
class _CacheB(Method):
    config_class = type("CacheBConfig", (NoneConfig,), {})
    exclusive = "step-cache"


def test_none_is_registered():
    assert "none" in available_methods()
    assert resolve_methods("none") == []
    assert resolve_methods([]) == resolve_methods(None) == resolve_methods("") == []


def test_spec_parsing_converts_types():
    (config,) = parse_spec(
        "test-knobs:interval=5,threshold=0.25,schedule=nonuniform,enabled=false,layers=1/3"
    )
    assert config == _KnobsConfig(5, 0.25, "nonuniform", False, (1, 3))
    assert (
        config.spec() == "test-knobs:interval=5,threshold=0.25,schedule=nonuniform,enabled=false,layers=1/3"
    )
    assert parse_spec("test-knobs")[0] == _KnobsConfig()
    assert parse_spec(" test-knobs : interval = 2 ")[0].interval == 2
    assert parse_spec("test-knobs:profile=none")[0].profile is None


def test_combined_specs():
    configs = parse_spec("test-knobs:interval=2+test-cache-a")
    assert [c.method for c in configs] == ["test-knobs", "test-cache-a"]
    assert [c.method for c in resolve_methods(["test-knobs", _CacheA.config_class()])] == [
        "test-knobs",
        "test-cache-a",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch", "unknown method 'nosuch'; available:"),
        ("test-knobs:interval", "expected key=value"),
        ("test-knobs:", "expected key=value"),
        ("test-knobs:interval=", "expected key=value"),
        ("test-knobs:interval=2,interval=3", "interval given twice"),
        ("test-knobs+", "empty method name"),
        ("test-knobs:speed=2", "unknown parameter 'speed'; parameters: interval, threshold"),
        ("test-knobs:interval=abc", "interval must be an integer, got 'abc'"),
        ("test-knobs:interval=0", r"interval must be in [1, inf], got 0"),
        ("test-knobs:threshold=1.5", r"threshold must be in [0.0, 1.0], got 1.5"),
        ("test-knobs:schedule=random", "schedule must be one of uniform, nonuniform"),
        ("test-knobs:enabled=maybe", "enabled must be a boolean"),
        ("none+test-knobs", "'none' is the plain pipeline and cannot be combined"),
        ("test-knobs+test-knobs", "given more than once: test-knobs"),
        (
            "test-cache-a+test-cache-b",
            "test-cache-a and test-cache-b cannot be combined: both are step-cache",
        ),
    ],
)
def test_bad_specs_raise_clear_value_errors(spec, message):
    with pytest.raises(ValueError) as info:
        resolve_methods(spec)
    assert message in str(info.value)


def test_config_objects_validate_at_construction():
    with pytest.raises(ValueError, match="interval must be in"):
        _KnobsConfig(interval=-1)
    with pytest.raises(TypeError, match="spec strings or method configs"):
        resolve_methods([42])


@given(
    interval=st.integers(1, 1000),
    threshold=st.floats(0.0, 1.0, allow_nan=False),
    schedule=st.sampled_from(["uniform", "nonuniform"]),
    enabled=st.booleans(),
    layers=st.lists(st.integers(0, 99), max_size=4).map(tuple),
)
def test_spec_round_trip(interval, threshold, schedule, enabled, layers):
    config = _KnobsConfig(interval, threshold, schedule, enabled, layers)
    assert parse_spec(config.spec()) == [config]
