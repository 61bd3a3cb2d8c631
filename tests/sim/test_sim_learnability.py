"""The world is learnable but not trivial.

Per simulated day ``d`` (from day 7 on), over the businesses known by then, three predictors of the
day's conversions (BIZSITE_VISIT + CALL + DIRECTIONS, duplicates counted once):

* ``recent``: conversions in days d-3..d-1;
* ``all_time``: conversions in days 0..d-1;
* ``oracle``: the hidden expected conversions of day d (``World.expected_day``).

Recent must beat all-time (quality drifts, businesses open and close), and even the oracle is far
from perfect (Poisson noise), with a clear gap between recent and oracle left for a model to learn.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.world import World, WorldConfig

CONVERSIONS = {"BIZSITE_VISIT", "CALL", "DIRECTIONS"}


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), like scipy.stats.rankdata."""
    order = np.argsort(a, kind="stable")
    _, first, counts = np.unique(a[order], return_index=True, return_counts=True)
    ranks = np.empty(len(a))
    ranks[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def top_capture(pred: np.ndarray, y: np.ndarray, frac: float = 0.1) -> float:
    """Share of the day's conversions that the top ``frac`` businesses by ``pred`` got."""
    k = max(1, int(len(y) * frac))
    top = np.lexsort((np.arange(len(pred)), -pred))[:k]
    return float(y[top].sum() / max(y.sum(), 1))


def daily_conversions(world: World, records) -> np.ndarray:
    cfg = world.cfg
    m = np.zeros((cfg.days, cfg.businesses))
    seen: set[str] = set()
    for _topic, r in records:
        if r["kind"] in CONVERSIONS and r["event_id"] not in seen:
            seen.add(r["event_id"])
            d = world.day_index(r["event_time"])
            if 0 <= d < cfg.days:
                m[d, world.index_of(r["business_id"])] += 1
    return m


def scores(world: World, records) -> np.ndarray:
    """Rows: days; columns: spearman recent/all-time/oracle, top-10 % capture recent/all-time/oracle."""
    m = daily_conversions(world, records)
    out = []
    for d in range(7, world.cfg.days):
        known = world.created < world.day_start(d)
        y = m[d, known]
        recent = m[d - 3 : d, known].sum(axis=0)
        all_time = m[:d, known].sum(axis=0)
        oracle = world.expected_day(d).expected_conversions[known]
        out.append(
            [
                spearman(recent, y),
                spearman(all_time, y),
                spearman(oracle, y),
                top_capture(recent, y),
                top_capture(all_time, y),
                top_capture(oracle, y),
            ]
        )
    return np.array(out)


def check(s: np.ndarray) -> None:
    rec, allt, orc, top_rec, top_all, top_orc = s.mean(axis=0)
    # learnable: recent behaviour beats all-time popularity, on average and on most days
    assert rec > allt + 0.02, (rec, allt)
    assert (s[:, 0] > s[:, 1]).mean() >= 0.65
    assert top_rec > top_all
    # not trivial: the best simple predictor is far from perfect, and the truth is well ahead of it
    assert rec < 0.8 and top_rec < 0.6
    assert orc > rec + 0.07
    assert orc < 0.9


def test_recent_beats_all_time_but_is_far_from_perfect(default_world, default_records):
    check(scores(default_world, default_records))


@pytest.mark.parametrize("seed", [1, 2])
def test_learnability_holds_for_other_seeds(seed):
    world = World(WorldConfig(businesses=200, days=30, seed=seed))
    check(scores(world, world.records()))
