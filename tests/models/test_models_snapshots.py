"""The snapshot frame (what a reader of the predictions topic sees) and its metrics with CIs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from features.events import ActivityEvent
from features.extract import extract, group_key
from features.spec import DEFAULT_SPEC
from features.state import is_scorable
from models.dataset import LabelConfig, scoring_moments
from models.evaluate import (
    _weighted_auc,
    evaluate_snapshots,
    ndcg_at_k,
    sufficiency,
    topk_capture,
)
from models.rowsets import build_snapshot_frame
from models.snapshots import snapshot_times
from sim.world import WorldConfig, generate
from tests.kit.events import DAY, HOUR, T0, act, biz
from tests.kit.records import Rec, to_records

H = DAY
L = DEFAULT_SPEC.allowed_lateness_ms
T = T0 + 2 * DAY


# ------------------------------------------------------------------------------ the frame
def _market_log() -> list[Rec]:
    events = [
        biz(T0, bid="b1"),
        biz(T0, bid="b2"),
        biz(T0, bid="b3"),
        biz(T0, bid="b4", city="Tempe"),  # another market
        biz(T0, bid="closed"),
        biz(T0, bid="idle"),  # known, never active: never scored, no prediction to serve
        biz(T0, bid="gone"),
        act(T0 + HOUR, bid="b1", eid="b1-a"),
        act(T0 + 2 * HOUR, "CALL", bid="b1", eid="b1-c0"),  # before T: popularity, not label
        act(T0 + 3 * HOUR, bid="b2"),
        act(T0 + 4 * HOUR, bid="b3"),
        act(T0 + 5 * HOUR, bid="b4"),
        act(T0 + 6 * HOUR, bid="closed"),
        act(T0 + 7 * HOUR, bid="gone"),
        act(T0 + 8 * HOUR, bid="unknown"),  # activity without a business record: not scorable
        biz(T0 + DAY, "CLOSED", bid="closed"),
        act(T, "CALL", bid="b1", eid="b1-at-T"),  # at T: in the features, not in the label
        act(T + 1, "CALL", bid="b1", eid="b1-c1"),  # the label: strictly after T ...
        act(T + 1, "CALL", bid="b1", eid="b1-c1"),  # (a duplicate delivery counts once)
        act(T + H, "DIRECTIONS", bid="b1", eid="b1-c2"),  # ... up to T + H included
        act(T + H + 1, "CALL", bid="b1", eid="b1-c3"),  # past the horizon
        act(T + HOUR, bid="b2", eid="b2-after"),  # after T: must not reach b2's features
        act(T + 5 * DAY, bid="b3"),  # the data's end
    ]
    records = to_records(events, partition=lambda bid: 0)
    # a tombstone for "gone" before T (a deleted business), keyed as on the compacted topic
    n_biz = sum(1 for r in records if r.rank == 0)
    records.insert(8, Rec(0, 0, n_biz, None, "gone"))
    return records


def test_frame_has_every_served_business_of_each_market_and_no_other():
    fr = build_snapshot_frame(_market_log(), times=[T], label_cfg=LabelConfig(horizon_ms=H))
    assert fr.times == [T]
    rows = {b: i for i, b in enumerate(fr.business)}
    assert set(rows) == {"b1", "b2", "b3", "b4"}  # not closed, idle (never scored), gone, unknown
    markets = {b: fr.market_table[fr.market[i]] for b, i in rows.items()}
    assert markets == {
        "b1": "Phoenix, AZ|Restaurants",
        "b2": "Phoenix, AZ|Restaurants",
        "b3": "Phoenix, AZ|Restaurants",
        "b4": "Tempe, AZ|Restaurants",
    }
    assert len(np.unique(fr.groups)) == 2
    # labels: distinct conversions in (T, T + H]
    assert fr.y[rows["b1"]] == 2.0 and fr.y[rows["b2"]] == 0.0
    # the baselines see what happened up to T, no more
    assert fr.popularity[rows["b1"]] == 2.0  # the call before T and the one at T
    assert 1.0 < fr.recent_popularity[rows["b1"]] < 2.0  # decayed, both within a day of T
    # features: extract at the state's own clock, never anything after T
    assert np.all(fr.as_of <= T)
    assert fr.as_of[rows["b1"]] == T and fr.as_of[rows["b2"]] == T0 + 3 * HOUR


def test_frame_features_are_the_state_at_its_latest_moment_before_t():
    records = _market_log()
    fr = build_snapshot_frame(records, times=[T], label_cfg=LabelConfig(horizon_ms=H))
    # fold exactly the events stamped <= T, in time order, and extract at each state's clock
    events = sorted((r.event for r in records if r.event is not None), key=lambda e: e.event_time)
    states: dict = {}
    for _ in scoring_moments([e for e in events if e.event_time <= T], DEFAULT_SPEC, states):
        pass
    for i, b in enumerate(fr.business):
        st = states[b]
        want = np.asarray(extract(st, st.max_event_ms), dtype=np.float32)
        np.testing.assert_array_equal(fr.X[i], want)
        assert fr.market_table[fr.market[i]] == group_key(st)


def test_snapshots_whose_horizon_runs_past_the_data_are_dropped():
    end = T + 5 * DAY
    last_ok = end - H - L
    fr = build_snapshot_frame(_market_log(), times=[T, last_ok, last_ok + 1], label_cfg=LabelConfig(horizon_ms=H))
    assert fr.times == [T, last_ok] and fr.dropped_times == [last_ok + 1]
    assert set(fr.snapshot.tolist()) == {T, last_ok}


def test_snapshot_times_daily_and_finer_when_the_period_is_short():
    assert snapshot_times(T0, T0 + 10 * DAY) == [T0 + i * DAY for i in range(11)]
    short = snapshot_times(T0, T0 + DAY)
    assert len(short) >= 4 and short[0] == T0 and short[-1] <= T0 + DAY
    assert snapshot_times(T0 + DAY, T0) == []


@pytest.fixture(scope="module")
def world_events():
    # No late delivery: then "everything stamped <= T" is exactly what the merge released by T.
    cfg = WorldConfig(businesses=60, days=12, seed=5, cities=2, categories=2, late_share=0.0)
    return list(generate(cfg))


def test_world_frame_matches_a_brute_force_at_each_snapshot(world_events):
    records = to_records(world_events)
    times = [T0 + d * DAY + 7 * HOUR for d in (4, 6, 9)]
    fr = build_snapshot_frame(records, times=times, label_cfg=LabelConfig(horizon_ms=H))
    assert fr.times == times and len(fr) > 100
    kinds = set(LabelConfig().kinds)
    conv = {}
    for e in world_events:
        if isinstance(e, ActivityEvent) and e.kind in kinds:
            conv[e.event_id] = (e.business_id, e.event_time)
    ordered = sorted(world_events, key=lambda e: e.event_time)  # stable: delivery order on ties
    for t in times:
        states: dict = {}
        scored = {st.business_id for _, st in scoring_moments([e for e in ordered if e.event_time <= t], states=states)}
        want = {b for b in scored if is_scorable(states[b])}
        sel = fr.snapshot == t
        got = fr.business[sel].tolist()
        assert sorted(got) == sorted(want) and len(got) == len(set(got))
        for i in np.flatnonzero(sel):
            b = fr.business[i]
            st = states[b]
            assert fr.as_of[i] == st.max_event_ms <= t
            np.testing.assert_array_equal(fr.X[i], np.asarray(extract(st, st.max_event_ms), dtype=np.float32))
            label = sum(1 for cb, ct in conv.values() if cb == b and t < ct <= t + H)
            assert fr.y[i] == label


def test_late_delivery_never_leaks_into_a_snapshot():
    cfg = WorldConfig(businesses=40, days=8, seed=2, cities=2, categories=2, late_share=0.2)
    fr = build_snapshot_frame(to_records(generate(cfg)), times=[T0 + d * DAY for d in (3, 5)])
    assert len(fr) > 0 and np.all(fr.as_of <= fr.snapshot)


# ---------------------------------------------------------------------------- the metrics
def _synthetic(markets: int, seed: int, snapshots: int = 5, size: int = 8, signal: float = 1.0):
    rng = np.random.default_rng(seed)
    m = np.repeat(np.arange(markets), size * snapshots)
    snap = np.tile(np.repeat(np.arange(snapshots), size), markets)
    rate = rng.gamma(1.0, 1.0, len(m))
    y = rng.poisson(rate).astype(float)
    model = signal * rate + rng.normal(0, 1, len(m))
    pop = rate + rng.normal(0, 2, len(m))
    recent = rate + rng.normal(0, 1.5, len(m))
    groups = m * snapshots + snap
    return model, y, groups, m, snap, pop, recent


def test_point_estimates_are_the_plain_metrics():
    model, y, g, m, snap, pop, recent = _synthetic(12, seed=1)
    ev = evaluate_snapshots(model, y, g, m, snap, pop, recent, k=3, samples=50)
    assert ev.metric("model", "capture") == pytest.approx(topk_capture(y, model, g, 3))
    assert ev.metric("popularity", "ndcg10") == pytest.approx(ndcg_at_k(y, pop, g, 10))
    per_snap = [roc_auc_score(y[snap == s] > 0, model[snap == s]) for s in np.unique(snap)]
    assert ev.metric("model", "auc") == pytest.approx(np.mean(per_snap))
    assert ev.metric("random", "auc") == 0.5
    one = g == g[0]
    assert ndcg_at_k(y[one], model[one], g[one]) == pytest.approx(ndcg_score([y[one]], [model[one]], k=10))
    assert ev.bootstrap["over"] == "markets" and ev.n_markets == 12 and ev.n_snapshots == 5


def test_weighted_auc_matches_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(4)
    pos = rng.random(300) < 0.3
    s = np.round(rng.random(300), 1)
    w = rng.integers(0, 4, (300, 3)).astype(float)
    got = _weighted_auc(pos, s, w)
    for j in range(3):
        assert got[j] == pytest.approx(roc_auc_score(pos, s, sample_weight=w[:, j]))


def test_ci_contains_the_point_estimate_is_deterministic_and_narrows_with_more_markets():
    small = evaluate_snapshots(*_synthetic(8, seed=2), seed=3)
    again = evaluate_snapshots(*_synthetic(8, seed=2), seed=3)
    large = evaluate_snapshots(*_synthetic(128, seed=2), seed=3)
    assert small.to_dict() == again.to_dict()
    for ev in (small, large):
        for scorer in ("model", "popularity", "recent_popularity"):
            for metric in ("capture", "ndcg10", "auc"):
                iv = ev.scores[scorer][metric]
                assert iv.low <= iv.value <= iv.high, (scorer, metric, iv)
                assert iv.high > iv.low
    for metric in ("capture", "ndcg10", "auc"):
        w_small = small.scores["model"][metric].high - small.scores["model"][metric].low
        w_large = large.scores["model"][metric].high - large.scores["model"][metric].low
        assert w_large < 0.5 * w_small, metric  # ~1/sqrt(16) in theory
    d = large.diff_vs_popularity["capture"]
    assert d.low <= d.value <= d.high and d.low > 0  # the model sees the rate with less noise


def test_sufficiency_on_a_tiny_frame():
    model, y, g, m, snap, pop, recent = _synthetic(2, seed=5, snapshots=1, size=6)
    ev = evaluate_snapshots(model, y, g, m, snap, pop, recent)
    assert not ev.sufficiency.enough and "need >=" in ev.sufficiency.detail
    # groups no larger than k decide nothing: a frame of singletons is insufficient at any size
    n = 500
    s = sufficiency(np.ones(n), np.arange(n), np.arange(n), k=3)
    assert not s.enough and s.conversions == 0
    big = evaluate_snapshots(*_synthetic(12, seed=5))
    assert big.sufficiency.enough


# ------------------------------------------------------------------------------- the gates
def test_gates_judge_the_snapshot_frame_and_say_insufficient_on_a_tiny_one():
    from models.train import TrainOptions
    from models.trainer import _gates

    current = {"version": "v0", "metrics": {"capture": 0.1}}
    tiny = evaluate_snapshots(*_synthetic(2, seed=5, snapshots=1, size=6))
    gates = {g.name: g for g in _gates(tiny, current, [], TrainOptions())}
    for name in ("beats_popularity", "not_worse_than_current"):
        assert gates[name].passed is None and gates[name].insufficient
        assert gates[name].result == "insufficient validation data"
        assert gates[name].detail.startswith("insufficient validation data")
    assert gates["sanity"].passed is True
    # enough data: a model that ranks worse than popularity fails, one that ranks better passes
    model, y, g, m, snap, pop, recent = _synthetic(40, seed=6)
    worse = evaluate_snapshots(pop + np.random.default_rng(1).normal(0, 5, len(y)), y, g, m, snap, pop, recent)
    better = evaluate_snapshots(model, y, g, m, snap, pop, recent)
    assert worse.sufficiency.enough and better.sufficiency.enough
    assert {x.name: x.result for x in _gates(worse, None, [], TrainOptions())}["beats_popularity"] == "FAIL"
    got = {x.name: x for x in _gates(better, None, [], TrainOptions())}
    assert got["beats_popularity"].result == "pass"
    assert got["beats_popularity"].value == pytest.approx(better.metric("model", "capture"))
    assert got["not_worse_than_current"].result == "skipped"
