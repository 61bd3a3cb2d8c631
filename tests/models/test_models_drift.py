"""Drift references and PSI (models.drift): stable data reads ~0, a shifted one more than the alert's 0.25."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.drift import DriftReference, Histogram, build_reference, histogram, psi

RNG = np.random.default_rng(7)


def test_the_same_distribution_is_stable_and_a_shift_is_not():
    ref = histogram(RNG.normal(0, 1, 20_000))
    same = psi(ref.shares, ref.counts(RNG.normal(0, 1, 5_000)))
    shifted = psi(ref.shares, ref.counts(RNG.normal(1, 1, 5_000)))
    assert same < 0.02
    assert shifted > 0.25


def test_missing_values_have_their_own_bin():
    v = RNG.normal(0, 1, 1000)
    v[:100] = np.nan
    h = histogram(v)
    assert h.shares[-1] == pytest.approx(0.1)
    # upstream stops sending the field: everything missing is a large shift
    assert psi(h.shares, h.counts(np.full(500, np.nan))) > 1.0


def test_counts_skewed_data_and_constant_features():
    counts = RNG.poisson(0.3, 5000).astype(float)  # mostly zeros, like sparse activity counts
    h = histogram(counts)
    assert h.counts(counts).sum() == 5000 and np.all(np.diff(h.edges) > 0)
    assert psi(h.shares, h.counts(counts)) < 1e-9
    c = histogram(np.full(100, 3.0))
    assert len(c.edges) == 0 and psi(c.shares, c.counts(np.full(50, 3.0))) < 1e-9


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), min_size=1, max_size=300), st.integers(2, 20))
def test_histogram_shares_sum_to_one_and_round_trip(values, bins):
    h = histogram(np.asarray(values), bins)
    assert h.shares.sum() == pytest.approx(1.0)
    back = Histogram.from_dict(h.to_dict())
    assert np.array_equal(back.edges, h.edges) and np.allclose(back.shares, h.shares)
    assert psi(h.shares, h.counts(np.asarray(values))) == pytest.approx(0.0, abs=1e-9)


def test_reference_samples_large_inputs_and_round_trips():
    X = RNG.normal(0, 1, (1000, 3)).astype(np.float32)
    ref = build_reference(X, ("a", "b", "c"), RNG.normal(0, 1, 1000), max_rows=200)
    assert ref.rows == 200 and set(ref.features) == {"a", "b", "c"}
    again = DriftReference.from_dict(ref.to_dict())
    assert again.to_dict() == ref.to_dict()
