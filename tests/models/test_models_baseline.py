"""The popularity ranker (models.baseline): what a worker serves before any model is promoted."""

from types import SimpleNamespace

import numpy as np
import pytest

from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec
from models.baseline import PopularityScorer, popularity_columns
from models.dataset import LabelConfig
from models.errors import ModelError
from models.rowsets import build_training_set
from tests.kit.records import world_records


def _row(spec=DEFAULT_SPEC, **values):
    x = np.zeros(len(spec.names), dtype=np.float32)
    for name, v in values.items():
        x[spec.names.index(name)] = v
    return x


def test_version_is_stable_and_names_the_feature_set():
    a, b = PopularityScorer(DEFAULT_SPEC), PopularityScorer(FeatureSpec())
    assert a.version == b.version == f"popularity-{DEFAULT_SPEC.version}"
    assert a.feature_set_version == DEFAULT_SPEC.version
    assert not a.version.startswith("v")  # never a registry version: a promoted model always replaces it
    other = PopularityScorer(DEFAULT_SPEC, ("REVIEW", "TIP"))
    assert other.version == f"popularity-{DEFAULT_SPEC.version}-review+tip"
    spec2 = FeatureSpec(rate_prior_a=2.0)
    assert PopularityScorer(spec2).version == f"popularity-{spec2.version}"


def test_columns_are_chosen_by_name_lifetime_then_longest_window_first():
    s = PopularityScorer(DEFAULT_SPEC)
    # the lifetime counts (count_<kind>_all): exactly the trainer's all-time popularity
    assert s.metadata["columns"] == ["count_bizsite_visit_all", "count_call_all", "count_directions_all"]
    assert s.metadata["tie_break_columns"][0] == ["count_bizsite_visit_28d", "count_call_28d", "count_directions_28d"]
    # Another window layout: the tie-breaks follow it, found by name.
    spec = FeatureSpec(windows_ms=(6 * HOUR_MS, 3 * DAY_MS, 90 * DAY_MS))
    primary, tie = popularity_columns(spec, ("CALL",))
    assert [spec.names[i] for i in primary] == ["count_call_all"]
    assert [spec.names[i] for i in tie[0]] == ["count_call_90d"]
    # A feature set without lifetime counts: the longest window.
    no_lifetime = SimpleNamespace(
        names=tuple(n for n in spec.names if not n.endswith("_all")), windows_ms=spec.windows_ms
    )
    primary, _ = popularity_columns(no_lifetime, ("CALL",))  # type: ignore[arg-type]
    assert [no_lifetime.names[i] for i in primary] == ["count_call_90d"]


def test_unknown_kinds_are_refused():
    with pytest.raises(ModelError):
        PopularityScorer(DEFAULT_SPEC, ("NOT_A_KIND",))
    with pytest.raises(ModelError):
        PopularityScorer(DEFAULT_SPEC, ())


def test_scores_order_by_lifetime_conversions_then_recency_deterministically():
    s = PopularityScorer(DEFAULT_SPEC)
    X = np.stack(
        [
            _row(count_call_all=2, count_call_28d=2),
            _row(count_call_all=1, count_directions_all=2, count_directions_28d=1),  # 3 conversions
            _row(count_call_all=3, count_call_28d=3, count_call_7d=3, count_call_1d=1),  # 3, more recent
            _row(count_page_view_all=500, count_page_view_28d=500),  # views are not conversions
            _row(count_bizsite_visit_all=4),
        ]
    )
    scores = s.score(X)
    assert list(np.argsort(-scores, kind="stable")) == [4, 2, 1, 0, 3]
    assert np.array_equal(np.floor(scores), [2, 3, 3, 0, 4])  # the tie-break never crosses an integer
    assert np.array_equal(s.score(X), scores) and np.array_equal(s.score(X[::-1]), scores[::-1])
    assert s.score(X[:0]).shape == (0,)
    with pytest.raises(ValueError, match="features"):
        s.score(X[:, :-1])


def test_equals_the_trainers_popularity_on_histories_shorter_than_the_window():
    """Through the same fold and extract as serving: the integer part of the score is the trainer's
    popularity baseline (all-time conversions so far) while the history fits in the longest window."""
    records = world_records(30, 6, seed=7, cities=2, categories=2)
    ts = build_training_set(records, DEFAULT_SPEC, LabelConfig())
    assert len(ts.popularity) > 500 and ts.popularity.max() >= 3
    scores = PopularityScorer(DEFAULT_SPEC, LabelConfig().kinds).score(ts.X)
    assert np.array_equal(np.floor(scores), ts.popularity)
