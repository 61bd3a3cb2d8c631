"""Make ``models_testkit`` importable from the test modules beside it; shared fixtures."""

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from models_testkit import world_records


@pytest.fixture(scope="session")
def small_world():
    """150 businesses in 3 cities x 3 categories over 30 days (~180k events), as records."""
    return world_records(150, 30, seed=1)
