"""Metrics: NDCG against sklearn, top-k capture with ties, random baseline, frame, importance shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from models.evaluate import (
    auc,
    evaluate,
    evaluation_frame,
    importance_shifts,
    ndcg_at_k,
    random_topk_capture,
    topk_capture,
)


def _random_groups(seed: int, n_groups: int = 60):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 16, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    y = rng.integers(0, 4, len(groups)) * (rng.random(len(groups)) < 0.5)
    s = np.round(rng.random(len(groups)), 1)  # coarse: plenty of ties
    perm = rng.permutation(len(groups))
    return y[perm].astype(float), s[perm], groups[perm]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndcg_matches_sklearn_with_ties(seed):
    y, s, g = _random_groups(seed)
    want = []
    for grp in np.unique(g):
        m = g == grp
        if m.sum() >= 2 and y[m].any():
            want.append(ndcg_score([y[m]], [s[m]], k=10))
    assert ndcg_at_k(y, s, g, 10) == pytest.approx(np.mean(want), abs=1e-12)


def test_topk_capture_by_hand():
    y = np.array([5, 0, 1, 0, 0, 2], float)
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.2])
    g = np.array([1, 1, 1, 1, 2, 2])
    # group 1: top-2 = {5, 0} of 6; group 2 has 2 items <= k: all 2. (5 + 2) / 8
    assert topk_capture(y, s, g, k=2) == pytest.approx(7 / 8)
    assert topk_capture(y, -s, g, k=2) == pytest.approx((0 + 1 + 2) / 8)


def test_topk_capture_ties_count_in_expectation():
    y = np.array([1.0, 0, 0, 0])
    g = np.zeros(4, int)
    assert topk_capture(y, np.zeros(4), g, k=1) == pytest.approx(0.25)
    # one clear winner, then a three-way tie for the second place
    assert topk_capture(np.array([0, 3.0, 0, 0]), np.array([1, 0.5, 0.5, 0.5]), g, k=2) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_capture_is_exact_expectation(seed):
    y, _, g = _random_groups(seed)
    exact = random_topk_capture(y, g, 3)
    # All scores tied == a uniformly random order, in expectation.
    assert topk_capture(y, np.zeros(len(y)), g, 3) == pytest.approx(exact)
    rng = np.random.default_rng(seed)
    mc = np.mean([topk_capture(y, rng.random(len(y)), g, 3) for _ in range(400)])
    assert mc == pytest.approx(exact, abs=0.02)


def test_capture_undefined_without_conversions():
    assert math.isnan(topk_capture(np.zeros(3), np.arange(3), np.zeros(3, int)))
    assert math.isnan(auc(np.zeros(3), np.arange(3)))


def test_evaluation_frame_keeps_latest_per_group_and_business():
    groups = np.array([0, 0, 0, 1, 0, 1])
    biz = np.array([7, 7, 8, 7, 7, 7])
    as_of = np.array([10, 30, 5, 1, 20, 2])
    assert evaluation_frame(groups, biz, as_of).tolist() == [1, 2, 5]


def test_evaluate_lifts():
    y = np.array([3, 0, 0, 0, 1, 0, 0, 0], float)
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.arange(8)
    t = np.zeros(8, int)
    model = np.array([4, 3, 2, 1, 4, 3, 2, 1], float)  # perfect
    pop = np.array([1, 4, 3, 2, 1, 4, 3, 2], float)  # worst
    ev = evaluate(model, y, g, b, t, pop, k=1)
    assert ev.model.capture == 1.0 and ev.popularity.capture == 0.0
    assert ev.random.capture == pytest.approx(0.25)
    assert ev.lift_vs_random == pytest.approx(4.0)
    assert math.isnan(ev.lift_vs_popularity)  # popularity captured nothing
    d = ev.to_dict()
    assert d["lift_vs_popularity"] is None and d["model"]["capture"] == 1.0 and d["n_groups"] == 2


def test_importance_shifts_threshold_and_order():
    prev = {"a": 0.5, "b": 0.3, "c": 0.2}
    cur = {"a": 0.3, "b": 0.33, "d": 0.37}
    shifts = importance_shifts(cur, prev, threshold=0.05)
    assert [(s.feature, round(s.delta, 2)) for s in shifts] == [("d", 0.37), ("a", -0.2), ("c", -0.2)]
    assert importance_shifts(cur, cur, 0.0) == []
