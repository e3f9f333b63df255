"""Fronts of bench sweeps."""

from hypothesis import given
from hypothesis import strategies as st

from ditaccel.plots import method_name, pareto_front


def test_method_name():
    assert method_name("deepcache:interval=3,front=2") == "deepcache"
    assert method_name("none") == "none"
    assert (
        method_name("deepcache:interval=3+sparse-attention:density=0.3,block=32")
        == "deepcache+sparse-attention"
    )


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 30.0), (2.0, 28.0), (1.5, 27.0), (3.0, 20.0), (2.0, 25.0)]
    assert pareto_front(points) == [(1.0, 30.0), (2.0, 28.0), (3.0, 20.0)]
    # for the FLOPs ratio smaller is better
    assert pareto_front(points, larger_x_is_better=False) == [(1.0, 30.0)]


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 50)), min_size=1, max_size=20))
def test_every_point_is_on_or_below_the_front(points):
    front = pareto_front(points)
    assert front
    for x, y in points:
        assert any(fx >= x and fy >= y for fx, fy in front)
