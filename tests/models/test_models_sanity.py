"""The hand-written sanity set and check_sanity, independently of any training."""

from __future__ import annotations

import numpy as np
import pytest

from features.events import ActivityEvent
from features.spec import DEFAULT_SPEC
from models.sanity import case_matrix, check_sanity, load_cases

NAMES = DEFAULT_SPEC.names


class Scorer:
    spec = DEFAULT_SPEC

    def __init__(self, fn):
        self.fn = fn

    def score(self, X):
        return np.asarray(self.fn(X), dtype=np.float64)


def _col(X, name):
    return X[:, NAMES.index(name)].astype(np.float64)


def heuristic(X):
    """Recent conversions first, then recent page views: what a sane model learns."""
    conv = ("bizsite_visit", "call", "directions")
    s = sum(3 * _col(X, f"count_{k}_1d") + _col(X, f"count_{k}_7d") for k in conv)
    return s + 0.01 * _col(X, "count_page_view_7d")


def test_cases_load_and_are_well_formed():
    cases = load_cases()
    assert {c.name for c in cases} >= {"activity-ladder", "trend", "closed"}
    for c in cases:
        assert c.expect
        for events in c.histories.values():
            times = [e.event_time for e in events]
            assert times == sorted(times) and all(t < c.as_of_ms for t in times)
        ids, X, _ = case_matrix(c)
        assert X.shape == (len(ids), len(NAMES)) and X.dtype == np.float32
    ladder = next(c for c in cases if c.name == "activity-ladder")
    # "dead": nothing but the page view that triggers the scoring moment
    dead = [e for e in ladder.histories["dead"] if isinstance(e, ActivityEvent)]
    assert [(e.kind, ladder.as_of_ms - e.event_time) for e in dead] == [("PAGE_VIEW", 60_000)]
    closed = next(c for c in cases if c.name == "closed")
    assert case_matrix(closed)[2] == {"open": True, "closed": False}


def test_a_sane_scorer_passes():
    assert check_sanity(Scorer(heuristic)) == []


@pytest.mark.parametrize(
    "fn",
    [
        lambda X: np.zeros(len(X)),  # learned nothing: ties everywhere
        lambda X: -heuristic(X),  # learned backwards
        lambda X, _rng=np.random.default_rng(1): _rng.random(len(X)),  # noqa: B008 - one generator: fresh noise per case
        lambda X: np.full(len(X), np.nan),
    ],
    ids=["constant", "reversed", "random", "nan"],
)
def test_insane_scorers_fail(fn):
    assert check_sanity(Scorer(fn))


def test_a_scorer_that_raises_is_reported_not_raised():
    def boom(X):
        raise RuntimeError("kaput")

    failures = check_sanity(Scorer(boom))
    assert failures and all("scoring failed" in f for f in failures)


def review_heuristic(X):
    kinds = ("review", "tip", "checkin")
    return sum(_col(X, f"count_{k}_28d") for k in kinds)


def test_cases_judge_only_models_of_their_label():
    review_label = ("REVIEW", "TIP", "CHECKIN")
    # The review-site case judges a model trained on reviews/tips/check-ins ...
    assert check_sanity(Scorer(review_heuristic), label_kinds=review_label) == []
    assert check_sanity(Scorer(lambda X: -review_heuristic(X)), label_kinds=review_label)
    # ... and the default cases do not (a review model knows nothing of site visits).
    assert check_sanity(Scorer(review_heuristic), label_kinds=("REVIEW", "CHECKIN", "TIP")) == []


def test_a_label_no_case_covers_fails_instead_of_passing_vacuously():
    failures = check_sanity(Scorer(heuristic), label_kinds=("CALL",))
    assert failures and "no sanity case" in failures[0]


def test_the_label_recorded_in_a_models_metadata_selects_the_cases():
    class WithMeta(Scorer):
        metadata = {"label": {"kinds": ["REVIEW", "TIP", "CHECKIN"], "horizon_ms": 30 * 86_400_000}}

    assert check_sanity(WithMeta(review_heuristic)) == []
    assert check_sanity(WithMeta(heuristic))  # the site-visit heuristic cannot rank review histories
