"""Ops tests: the Prometheus alert rules (promtool) and a real Prometheus scraping a running worker.
(The metrics and health code itself is tested beside it: tests/consumer/runtime, tests/consumer/trainer.)

``prometheus`` and ``promtool`` come from the Debian package ``prometheus``, installed by
``make test`` (``scripts/install-prometheus.sh``). Where they cannot be installed the tests that
need them skip with the reason; with ``STREAMRANK_REQUIRE_PROMETHEUS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import pytest

from tests.kit.ops import binary


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return binary("prometheus")
