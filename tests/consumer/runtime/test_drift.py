"""The worker's drift watch: PSI of the serving model's top features and score, per closed window."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from consumer.runtime import drift as drift_mod
from consumer.runtime.drift import DriftWatch
from models.drift import build_reference

NAMES = tuple(f"f{i}" for i in range(12))
RNG = np.random.default_rng(3)


def _model(version="v1", reference=True):
    X = RNG.normal(0, 1, (5000, len(NAMES)))
    scores = X[:, 0] + RNG.normal(0, 0.1, 5000)
    meta = {"importance": {n: float(len(NAMES) - i) for i, n in enumerate(NAMES)}}  # f0 most important
    if reference:
        meta["drift_reference"] = build_reference(X, NAMES, scores).to_dict()
    return SimpleNamespace(version=version, metadata=meta, spec=SimpleNamespace(names=NAMES))


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def _value(reg, name, labels=None):
    return reg.get_sample_value(name, labels or {})


def test_a_window_closes_with_enough_rows_and_time_and_a_shift_shows():
    reg, clock = CollectorRegistry(), Clock()
    w = DriftWatch(reg, clock)
    w.on_model(_model(), NAMES)
    X = RNG.normal(0, 1, (600, len(NAMES)))
    X[:, 1] += 2.0  # f1 shifted upstream
    w.observe(X, X[:, 0])
    assert _value(reg, "streamrank_score_psi") == 0.0  # open: not enough time yet
    clock.t = drift_mod.WINDOW_S
    w.observe(X[:1], X[:1, 0])
    assert _value(reg, "streamrank_drift_window_rows") == 601
    assert _value(reg, "streamrank_feature_psi", {"feature": "f1"}) > 0.25
    assert _value(reg, "streamrank_feature_psi", {"feature": "f0"}) < 0.1
    assert _value(reg, "streamrank_score_psi") < 0.1
    # only the top features by importance are exported (a bounded label set)
    assert _value(reg, "streamrank_feature_psi", {"feature": "f11"}) is None


def test_a_model_without_reference_exports_nothing_and_a_swap_drops_old_labels():
    reg, clock = CollectorRegistry(), Clock()
    w = DriftWatch(reg, clock)
    w.on_model(_model(), NAMES)
    w.observe(RNG.normal(0, 1, (drift_mod.MAX_ROWS, len(NAMES))), np.zeros(drift_mod.MAX_ROWS))  # closes at MAX_ROWS
    assert _value(reg, "streamrank_feature_psi", {"feature": "f0"}) is not None
    w.on_model(_model("baseline", reference=False), NAMES)
    assert _value(reg, "streamrank_feature_psi", {"feature": "f0"}) is None
    w.observe(RNG.normal(0, 1, (10, len(NAMES))), np.zeros(10))  # nothing to compare with: no error


def test_the_window_settings_and_excluded_clock_features():
    reg, clock = CollectorRegistry(), Clock()
    names = ("age_days", "hours_since_first_call", "count_call_all", *NAMES)
    X = RNG.normal(0, 1, (5000, len(names)))
    meta = {"importance": {n: float(len(names) - i) for i, n in enumerate(names)}}  # the clocks most important
    meta["drift_reference"] = build_reference(X, names, X[:, 3]).to_dict()
    model = SimpleNamespace(version="v1", metadata=meta, spec=SimpleNamespace(names=names))
    w = DriftWatch(reg, clock, window_s=0.0, min_rows=50)
    w.on_model(model, names)
    assert w.watched == NAMES[:10]  # the clock features are never watched, however important
    w.observe(X[:49], X[:49, 3])
    assert _value(reg, "streamrank_drift_window_rows") == 0.0  # open: 49 < min_rows
    w.observe(X[49:50], X[49:50, 3])
    assert _value(reg, "streamrank_drift_window_rows") == 50  # closed at min_rows, no time needed
    assert _value(reg, "streamrank_feature_psi", {"feature": "age_days"}) is None
    everything = DriftWatch(CollectorRegistry(), clock, exclude=())
    everything.on_model(model, names)
    assert everything.watched[:3] == names[:3]


def test_the_config_defaults_are_the_watch_defaults():
    from consumer.config import Config, ConfigError, drift_settings

    s = drift_settings(Config())
    assert (s["window_s"], s["min_rows"], s["exclude"]) == (drift_mod.WINDOW_S, drift_mod.MIN_ROWS, drift_mod.EXCLUDE)
    env = {"STREAMRANK_DRIFT_WINDOW_S": "0", "STREAMRANK_DRIFT_MIN_ROWS": "20", "STREAMRANK_DRIFT_EXCLUDE": " a*, b "}
    assert drift_settings(Config.from_env(env)) == {"window_s": 0.0, "min_rows": 20, "exclude": ("a*", "b")}
    with pytest.raises(ConfigError, match="STREAMRANK_DRIFT_MIN_ROWS"):
        Config.from_env({"STREAMRANK_DRIFT_MIN_ROWS": "0"})
