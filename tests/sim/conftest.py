"""Shared, session-scoped simulated worlds (generation is deterministic, so sharing is safe)."""

from __future__ import annotations

import pytest

from sim.world import World, WorldConfig

# Default knobs, small: the world the learnability and proportion tests look at.
DEFAULT_CFG = WorldConfig(businesses=200, days=30, seed=0)
# Small and churny: many closings/reopenings and openings, to exercise the lifecycle paths.
CHURN_CFG = WorldConfig(
    businesses=150,
    days=28,
    seed=3,
    close_rate_per_day=0.004,
    reopen_share=0.7,
    new_business_share=0.2,
    update_rate_per_day=0.02,
)


@pytest.fixture(scope="session")
def default_world() -> World:
    return World(DEFAULT_CFG)


@pytest.fixture(scope="session")
def default_records(default_world: World) -> list[tuple[str, dict]]:
    return list(default_world.records())


@pytest.fixture(scope="session")
def churn_world() -> World:
    return World(CHURN_CFG)


@pytest.fixture(scope="session")
def churn_records(churn_world: World) -> list[tuple[str, dict]]:
    return list(churn_world.records())
