"""Time split (gap >= horizon) and the deterministic fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dataset import build_training_set
from models.errors import TrainingError
from models.train import TrainOptions, fit, frame, time_split
from tests.kit.events import DAY, T0


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.integers(0, 30 * DAY), min_size=1, max_size=200),
    horizon=st.integers(1, 3 * DAY),
    validation_days=st.integers(1, 6),
    gap=st.one_of(st.none(), st.integers(0, 4 * DAY)),
)
def test_time_split_gap_at_least_horizon(times, horizon, validation_days, gap):
    as_of = np.array(times, dtype=np.int64) + T0
    sp = time_split(as_of, horizon, validation_days, gap)
    assert sp.gap_ms >= horizon and (gap is None or sp.gap_ms >= gap)
    assert sp.val_start_ms % DAY == 0 and sp.train_end_ms % DAY == 0
    assert not set(sp.train_idx) & set(sp.val_idx)
    if len(sp.train_idx) and len(sp.val_idx):
        assert as_of[sp.val_idx].min() - as_of[sp.train_idx].max() > horizon
    # validation is exactly the last ``validation_days`` days present
    last_day = as_of.max() // DAY
    assert set(sp.val_idx) == set(np.flatnonzero(as_of // DAY > last_day - validation_days))
    assert np.all(as_of[sp.train_idx] + horizon < sp.val_start_ms)


def test_time_split_empty_raises():
    with pytest.raises(TrainingError):
        time_split(np.zeros(0, np.int64), DAY)


def test_options_validated():
    with pytest.raises(TrainingError):
        TrainOptions(objective="reg:squarederror")
    with pytest.raises(TrainingError):
        TrainOptions(sample_rate=0)
    with pytest.raises(TrainingError):
        TrainOptions(frame="some")


@pytest.fixture(scope="module")
def split_sets(small_world):
    ts = build_training_set(small_world, sample_rate=0.2)
    sp = time_split(ts.as_of, DAY, 6)
    return ts.take(sp.train_idx), ts.take(sp.val_idx)


@pytest.mark.parametrize("objective", ["rank:ndcg", "binary:logistic"])
def test_fit_is_deterministic(split_sets, objective):
    train, val = split_sets
    # The set is in build order, not grouped: the fit must sort by qid itself.
    assert np.any(np.diff(train.groups) < 0)
    opts = TrainOptions(objective=objective)
    a = fit(train, val, opts)
    b = fit(train, val, opts)
    assert bytes(a.booster.save_raw("ubj")) == bytes(b.booster.save_raw("ubj"))
    assert a.booster.num_boosted_rounds() == a.best_iteration + 1  # cut at the best round
    assert a.params["nthread"] == 2 and a.params["tree_method"] == "hist"
    key = "validation:ndcg@10" if objective == "rank:ndcg" else "validation:logloss"
    assert key in a.history


def test_frame_one_row_per_group_and_business(split_sets):
    train, _ = split_sets
    f = frame(train)
    pairs = list(zip(f.groups.tolist(), f.business.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) < len(train)
    assert frame(train, "all") is train


def test_fit_refuses_too_little_data(split_sets):
    train, val = split_sets
    with pytest.raises(TrainingError):
        fit(train.take(np.arange(5)), val, TrainOptions(frame="all"))
