"""Time split (gap >= horizon) and the deterministic fit."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from features.spec import DEFAULT_SPEC
from models.baseline import PopularityMargin
from models.errors import TrainingError
from models.registry import LoadedModel
from models.rowsets import build_training_set
from models.train import TrainOptions, concat, dmatrix, event_examples, fit, frame, inner_split, time_split
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
    with pytest.raises(TrainingError):
        TrainOptions(examples="moments")
    with pytest.raises(TrainingError):
        TrainOptions(base_margin="recent")
    with pytest.raises(TrainingError):
        TrainOptions(inner_validation_share=1.0)
    assert TrainOptions().sample_rate is None  # adapted to the log's size
    assert TrainOptions().examples == "snapshots" and TrainOptions().base_margin == "popularity"


@pytest.fixture(scope="module")
def split_sets(small_world):
    ts = build_training_set(small_world, sample_rate=0.2)
    sp = time_split(ts.as_of, DAY, 6)
    return ts.take(sp.train_idx), ts.take(sp.val_idx)


@pytest.mark.parametrize("objective", ["rank:ndcg", "binary:logistic"])
def test_fit_is_deterministic(split_sets, objective):
    train, _ = split_sets
    # The set is in build order, not grouped: the fit must sort by qid itself.
    assert np.any(np.diff(train.groups) < 0)
    opts = TrainOptions(objective=objective)
    ex = event_examples(train)
    a = fit(ex, opts, DAY)
    b = fit(ex, opts, DAY)
    assert bytes(a.booster.save_raw("ubj")) == bytes(b.booster.save_raw("ubj"))
    assert a.booster.num_boosted_rounds() == a.rounds == a.best_iteration + 1  # refit with the chosen rounds
    assert a.params["nthread"] == 2 and a.params["tree_method"] == "hist"
    assert "inner_validation:capture+auc" in a.history
    assert a.rounds in a.history["inner_validation:rounds"]


def test_rounds_are_chosen_on_an_inner_split_of_the_training_period(split_sets):
    """The inner validation is the training period's last days, after a gap >= H; the fit is
    refit on every training row. Nothing but the training rows reaches it."""
    train, _ = split_sets
    ex = event_examples(train)
    fr = fit(ex, TrainOptions(), DAY)
    inner = fr.inner
    assert inner["train_rows"] + inner["validation_rows"] <= len(ex)
    assert inner["validation_rows"] > 0 and inner["gap_ms"] >= DAY
    assert inner["val_start_ms"] <= ex.time.max() and inner["train_end_ms"] + DAY <= inner["val_start_ms"]
    assert inner["rounds_from"].startswith("early stopping")
    assert fr.examples["rows"] == len(ex)


def test_auto_objective_is_the_better_one_on_the_inner_split_and_is_what_is_trained(split_sets):
    train, _ = split_sets
    ex = event_examples(train)
    fr = fit(ex, TrainOptions(objective="auto"), DAY)
    assert set(fr.objectives) == {"rank:ndcg", "binary:logistic"}
    assert fr.objective == max(fr.objectives, key=lambda o: (fr.objectives[o], o == "rank:ndcg"))
    assert fr.best_score == fr.objectives[fr.objective]
    assert fr.params["objective"] == fr.objective
    assert xgb.Booster(model_file=bytearray(fr.booster.save_raw("json"))).save_config().count(fr.objective) > 0
    # an explicit objective is trained as asked, nothing else tried
    fixed = fit(ex, TrainOptions(objective="binary:logistic"), DAY)
    assert fixed.objective == "binary:logistic" and fixed.objectives == {}


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.integers(0, 60 * DAY), min_size=2, max_size=200),
    horizon=st.integers(1, 10 * DAY),
    share=st.floats(0.05, 0.5),
)
def test_inner_split_labels_close_before_the_inner_validation(times, horizon, share):
    t = np.array(times, dtype=np.int64) + T0
    sp = inner_split(t, horizon, TrainOptions(inner_validation_share=share))
    assert np.all(t[sp.train_idx] + horizon < sp.val_start_ms)
    assert np.all(t[sp.val_idx] >= sp.val_start_ms)


def test_a_base_margin_of_popularity_is_popularity_at_zero_rounds(split_sets):
    """With the margin, 0 rounds is a candidate of the inner choice, and a 0-round model scores
    exactly log1p(popularity) when served."""
    train, val = split_sets
    margin = PopularityMargin(DEFAULT_SPEC)
    fr = fit(event_examples(train), TrainOptions(), DAY, margin)
    assert fr.history["inner_validation:rounds"][0] == 0
    assert fr.base_margin == margin.to_dict()
    zero = fit(event_examples(train), TrainOptions(fallback_rounds=0), DAY, margin)
    zero.booster = xgb.train(zero.params, dmatrix(event_examples(train), "rank:ndcg", margin), num_boost_round=0)
    model = LoadedModel("m", DEFAULT_SPEC, zero.booster, {"model": {"base_margin": zero.base_margin}})
    np.testing.assert_allclose(model.score(val.X), margin.values(val.X), rtol=1e-6, atol=1e-6)


def test_fit_falls_back_when_the_inner_split_cannot_judge(split_sets):
    train, _ = split_sets
    ex = event_examples(train)
    none = ex.take(np.arange(len(ex)))
    none.y = np.zeros_like(none.y)  # no conversion anywhere: nothing to choose rounds by
    fr = fit(none, TrainOptions(fallback_rounds=7), DAY)
    assert fr.rounds == 7 and fr.inner["rounds_from"].startswith("fallback")


def test_frame_one_row_per_group_and_business(split_sets):
    train, _ = split_sets
    f = frame(train)
    pairs = list(zip(f.groups.tolist(), f.business.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) < len(train)
    assert frame(train, "all") is train


def test_fit_refuses_too_little_data(split_sets):
    train, _ = split_sets
    with pytest.raises(TrainingError):
        fit(event_examples(train.take(np.arange(5)), "all"), TrainOptions(frame="all"), DAY)


def test_concat_keeps_query_ids_apart(split_sets):
    train, _ = split_sets
    a = event_examples(train.take(np.arange(50)))
    b = event_examples(train.take(np.arange(50, 100)))
    both = concat(a, b)
    assert len(both) == len(a) + len(b)
    assert not set(both.groups[: len(a)].tolist()) & set(both.groups[len(a) :].tolist())
