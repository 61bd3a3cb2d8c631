"""The sparse, Yelp-like preset: a few events per business and month, long gaps, deterministic."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from sim.world import DAY_MS, SPARSE, World, WorldConfig, generate_records
from tests.sim.test_sim_determinism import stream_hash

SPARSE_CFG = WorldConfig.sparse(businesses=400, days=365, seed=2)


@pytest.fixture(scope="module")
def sparse_world() -> World:
    return World(SPARSE_CFG)


@pytest.fixture(scope="module")
def sparse_records(sparse_world: World) -> list[tuple[str, dict]]:
    return list(sparse_world.records())


def test_preset_is_the_config_plus_overrides():
    assert SPARSE_CFG.businesses == 400 and SPARSE_CFG.days == 365 and SPARSE_CFG.seed == 2
    assert all(getattr(SPARSE_CFG, k) == v for k, v in SPARSE.items())
    assert WorldConfig.sparse(days=100, review_rate=0.05).review_rate == 0.05
    assert WorldConfig().page_view_events  # the default world still delivers its views


def test_a_few_events_per_business_and_month(sparse_records, sparse_world):
    cfg = sparse_world.cfg
    months = cfg.days * 12 / 365.25
    activity = [r for t, r in sparse_records if t == "activity"]
    kinds = collections.Counter(r["kind"] for r in activity)
    assert kinds["PAGE_VIEW"] == 0  # a review site's export: consequences of views, not views
    assert all(kinds[k] > 0 for k in ("REVIEW", "TIP", "CHECKIN", "BIZSITE_VISIT", "CALL", "DIRECTIONS"))
    assert kinds["REVIEW"] + kinds["TIP"] + kinds["CHECKIN"] > 0.4 * len(activity)
    per_biz = collections.Counter(r["business_id"] for r in activity)
    rate = np.array([per_biz.get(b, 0) for b in sparse_world.business_ids]) / months
    assert 1.0 < rate.mean() < 6.0  # a few a month on average ...
    assert np.median(rate) < rate.mean()  # ... heavy-tailed: the typical business sees fewer
    assert np.percentile(rate, 90) > 2 * np.median(rate)
    assert abs(len(sparse_records) - sparse_world.expected_event_count()) < 0.05 * len(sparse_records)


def test_most_businesses_are_quiet_most_days_with_long_gaps(sparse_records, sparse_world):
    times = collections.defaultdict(list)
    for t, r in sparse_records:
        if t == "activity":
            times[r["business_id"]].append(r["event_time"])
    days_active = {b: len({int(sparse_world.day_index(x)) for x in ts}) for b, ts in times.items()}
    active_share = np.array([days_active.get(b, 0) for b in sparse_world.business_ids]) / sparse_world.cfg.days
    assert np.median(active_share) < 0.1  # the typical business: silent on > 90 % of days
    # gaps between consecutive events of a business, pooled over the quiet half of businesses
    median_biz = np.median([len(ts) for ts in times.values()])
    gaps = np.concatenate([np.diff(sorted(ts)) / DAY_MS for ts in times.values() if 2 <= len(ts) <= median_biz])
    assert np.median(gaps) > 7  # weeks between events are common
    assert (gaps > 30).mean() > 0.1


def test_sparse_world_is_deterministic():
    cfg = WorldConfig.sparse(businesses=150, days=120, seed=7)
    assert stream_hash(generate_records(cfg)) == stream_hash(generate_records(cfg))
    w = World(cfg)
    assert stream_hash(w.records()) == stream_hash(w.records())
    other = WorldConfig.sparse(businesses=150, days=120, seed=8)
    assert stream_hash(generate_records(cfg)) != stream_hash(generate_records(other))


def test_sparse_world_spans_years_quickly():
    # A six-year world generates in seconds (measured: 2,000 businesses x 2,190 days, ~350k events,
    # ~4 s on 2 cores); here a smaller slice, checked for its span, not its speed.
    cfg = WorldConfig.sparse(businesses=60, days=6 * 365, seed=1)
    recs = list(generate_records(cfg))
    times = [r["event_time"] for t, r in recs if t == "activity"]
    assert max(times) - min(times) > 5.5 * 365 * DAY_MS
    assert len(recs) < 60 * 6 * 12 * 10
