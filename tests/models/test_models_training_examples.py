"""Training examples: snapshot examples of the training period, the gap before validation, the
adaptive sample rate, and a fit that never sees the gates' validation data (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

import models.trainer as trainer_mod
from features.events import ActivityEvent
from features.spec import DEFAULT_SPEC
from models.dataset import EVENT_EXAMPLE_BUDGET, LabelConfig, auto_sample_rate
from models.registry import ModelRegistry
from models.rowsets import build_training_set
from models.snapshots import training_snapshot_times
from models.train import TrainOptions, time_split
from models.trainer import train_and_register
from tests.kit.events import DAY, T0
from tests.kit.records import world_records

H = 2 * DAY  # a horizon longer than a day: the gap must cover it
LABEL = LabelConfig(horizon_ms=H)


@pytest.fixture(scope="module")
def world():
    return world_records(60, 24, seed=4)


@pytest.fixture(scope="module")
def frames(world, tmp_path_factory):
    """The trainer's split and its two snapshot frames (training, validation)."""
    opts = TrainOptions(validation_days=5, examples="both")
    decide = trainer_mod._Decisions()
    built = trainer_mod._build(world, tmp_path_factory.mktemp("build"), DEFAULT_SPEC, LABEL, opts, 1, None, None)
    ts = trainer_mod._event_set(built, opts, decide)
    split = time_split(ts.as_of, H, opts.validation_days)
    train_frame, val_frame = trainer_mod._snapshot_frames(built, DEFAULT_SPEC, LABEL, ts.stats, split, opts, decide)
    return split, train_frame, val_frame


def test_training_snapshot_labels_are_after_t_and_close_before_validation(world, frames):
    split, train_frame, val_frame = frames
    assert train_frame is not None and len(train_frame) > 0 and len(val_frame) > 0
    # every training label window (T, T + H] closes before the first validation day
    assert np.all(train_frame.snapshot + H < split.val_start_ms)
    assert np.all(val_frame.snapshot >= split.val_start_ms)
    # features as of the state's clock, at or before T
    assert np.all(train_frame.as_of <= train_frame.snapshot)
    # labels: the business's distinct conversions strictly after T, up to T + H (brute force)
    conv: dict[str, set[tuple[str, int]]] = {}
    for r in world:
        ev = r.event
        if type(ev) is ActivityEvent and ev.kind in LABEL.kinds:
            conv.setdefault(ev.business_id, set()).add((ev.event_id, ev.event_time))
    for i in range(0, len(train_frame), max(1, len(train_frame) // 200)):
        t, b = int(train_frame.snapshot[i]), train_frame.business[i]
        want = len({e for e, et in conv.get(b, ()) if t < et <= t + H})
        assert train_frame.y[i] == want


def test_a_training_snapshot_group_ranks_several_businesses(frames):
    _, train_frame, _ = frames
    _, sizes = np.unique(train_frame.groups, return_counts=True)
    assert sizes.max() > 1 and np.mean(sizes > 1) > 0.8  # markets, not single businesses


def test_training_snapshot_times_stay_within_the_row_budget():
    first, end = T0 + 3 * 3_600_000, T0 + 100 * DAY
    times = training_snapshot_times(first, end, businesses=500, row_budget=10_000)
    assert len(times) <= 10_000 // 500 and times[-1] == T0 + 99 * DAY  # the latest is kept
    assert all(first <= t < end and t % DAY == 0 for t in times)
    assert len(set(np.diff(times).tolist())) == 1  # evenly spaced
    assert training_snapshot_times(first, end, businesses=10, row_budget=10_000) == list(
        range(T0 + DAY, T0 + 100 * DAY, DAY)
    )  # within budget: daily
    assert len(training_snapshot_times(first, end, businesses=10**6, row_budget=10)) == 1
    assert training_snapshot_times(end, first, 1, 1) == []


def test_sample_rate_adapts_to_the_log_size(world):
    assert auto_sample_rate(24_000) == 1.0  # a small log is never thinned
    assert auto_sample_rate(10 * EVENT_EXAMPLE_BUDGET) == pytest.approx(0.1)
    ts = build_training_set(world, sample_rate=None)
    assert ts.stats.sample_rate == auto_sample_rate(ts.stats.activity_records)
    assert ts.stats.active_businesses > 0
    assert build_training_set(world, sample_rate=0.3).stats.sample_rate == 0.3


@pytest.mark.parametrize("examples", ["snapshots", "events", "both"])
def test_the_fit_never_sees_validation_rows(world, tmp_path, monkeypatch, examples):
    """Everything the fit gets ends before the split's training end: labels close before the
    validation the gates judge, and rounds are chosen on the training period."""
    seen = {}
    real_fit = trainer_mod.fit

    def spy(ex, options, horizon_ms, margin=None, **kw):
        seen["examples"] = ex
        return real_fit(ex, options, horizon_ms, margin, **kw)

    monkeypatch.setattr(trainer_mod, "fit", spy)
    monkeypatch.setattr(trainer_mod, "check_sanity", lambda *a, **k: [])
    opts = TrainOptions(validation_days=5, examples=examples, num_boost_round=20)
    out = train_and_register(world, ModelRegistry(tmp_path), label_cfg=LABEL, options=opts)
    split = out.metadata["data"]["split"]
    ex = seen["examples"]
    assert len(ex) > 0
    assert np.all(ex.time < split["train_end_ms"]) and np.all(ex.time + H < split["val_start_ms"])
    assert set(np.unique(ex.source)) == ({"events", "snapshots"} if examples == "both" else {examples})
    training = out.metadata["training"]
    assert training["inner_split"]["val_start_ms"] < split["train_end_ms"]
    assert out.metadata["model"]["rounds"] == training["rounds"] == out.fit.booster.num_boosted_rounds()
    assert out.metadata["data"]["examples"] == examples and out.metadata["options"]["examples"] == examples
    assert out.metadata["data"]["training_examples"]["rows"] == len(ex)
    report = (ModelRegistry(tmp_path).version_dir(out.version) / "report.md").read_text()
    assert "chosen on the training period" in report


def test_a_popularity_margin_is_recorded_and_served(world, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "check_sanity", lambda *a, **k: [])
    reg = ModelRegistry(tmp_path)
    opts = TrainOptions(validation_days=5, base_margin="popularity", num_boost_round=10)
    out = train_and_register(world, reg, label_cfg=LABEL, options=opts)
    record = out.metadata["model"]["base_margin"]
    assert record["kind"] == "log1p_popularity" and record["conversion_kinds"] == list(LABEL.kinds)
    model = reg.load(out.version)
    assert model.margin is not None
    X = build_training_set(world, label_cfg=LABEL, sample_rate=0.05).X[:50]
    trees = out.fit.booster.inplace_predict(X, base_margin=np.zeros(len(X), np.float32))
    np.testing.assert_allclose(model.score(X), trees + model.margin.values(X), rtol=1e-5, atol=1e-5)
