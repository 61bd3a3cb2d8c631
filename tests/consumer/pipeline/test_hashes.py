"""Prediction ids computed in bulk (``consumer.pipeline.hashes``) are ``prediction_id``'s, row for row."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.hashes import prediction_ids
from consumer.pipeline.predictions import prediction_id

texts = st.text(max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    topic=texts,
    model_version=texts,
    arm=st.one_of(st.just("default"), texts),
    coords=st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1)), max_size=40),
)
def test_bulk_ids_are_the_reference_ids(topic, model_version, arm, coords):
    parts = np.array([p for p, _ in coords], np.int64)
    offsets = np.array([o for _, o in coords], np.int64)
    want = [prediction_id(topic, p, o, model_version, arm) for p, o in coords]
    assert prediction_ids(topic, parts, offsets, model_version, arm) == want


def test_ids_at_the_digit_boundaries():
    offsets = np.array([0, 9, 10, 99, 100, 10**18, 2**63 - 1], np.int64)
    parts = np.array([0, 1, 9, 10, 11, 999, 2**31 - 1], np.int64)
    want = [prediction_id("activity-events", int(p), int(o), "v1") for p, o in zip(parts, offsets, strict=True)]
    assert prediction_ids("activity-events", parts, offsets, "v1", "default") == want
