"""Shared fixtures of the models tests."""

import pytest

from tests.kit.records import world_records


@pytest.fixture(scope="session")
def small_world():
    """150 businesses in 3 cities x 3 categories over 30 days (~180k events), as records."""
    return world_records(150, 30, seed=1)
