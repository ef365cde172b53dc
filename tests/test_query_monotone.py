"""The relaxed-monotonicity detector: batched observation equals the per-step definition."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unidb.query.monotone import MonotoneDetector, ReferenceDetector

distances = st.lists(st.floats(0, 100, allow_nan=False, width=32), min_size=0, max_size=120)


def reference_phase(ds, E, w):
    ref = ReferenceDetector(E, w)
    for x in ds:
        ref.step(x)
    return ref.phase_step


@settings(max_examples=300, deadline=None)
@given(ds=distances, E=st.integers(1, 12), w=st.one_of(st.none(), st.integers(1, 12)),
       cuts=st.lists(st.integers(0, 120), max_size=8))
def test_batched_equals_per_step(ds, E, w, cuts):
    det = MonotoneDetector(E, w)
    bounds = sorted({0, len(ds), *[c for c in cuts if c <= len(ds)]})
    for a, b in zip(bounds, bounds[1:]):
        det.observe(np.array(ds[a:b]))
    assert det.phase_step == reference_phase(ds, E, w)
    assert det.steps == len(ds)
    window = ds if w is None else ds[-w:]
    if ds and len(ds) >= (w or 1):
        assert det.window_median() == pytest.approx(float(np.median(window)))
        for x in (window[0], float(np.median(window)), 50.0):
            assert det.median_exceeds(x) == (float(np.median(window)) > x)


@settings(max_examples=100, deadline=None)
@given(ds=st.lists(st.integers(0, 5).map(float), max_size=60), E=st.integers(1, 5),
       w=st.one_of(st.none(), st.integers(1, 5)))
def test_ties_and_one_by_one(ds, E, w):
    det = MonotoneDetector(E, w)
    for x in ds:
        det.observe(np.array([x]))
    assert det.phase_step == reference_phase(ds, E, w)


def test_strictly_increasing_stream_is_monotone_at_step_two():
    det = MonotoneDetector(1, 1)
    det.observe(np.arange(10.0))
    assert det.phase_step == 2


def test_phase_is_sticky():
    det = MonotoneDetector(2, 3)
    det.observe(np.array([5.0, 4.0, 9.0, 9.0, 9.0]))
    assert det.monotone
    det.observe(np.zeros(50))
    assert det.monotone


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="E and w"):
        MonotoneDetector(0, 3)
