"""extract / extract_into / group_key, one family at a time, with their edge cases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from features.errors import SpecError
from features.extract import extract, extract_into, group_key
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS
from features.state import (
    from_bytes,
    new_state,
    stable_bucket,
    to_bytes,
    update,
    user_slot,
)
from tests.kit.events import BID, T0, L, act, biz, fold
from tests.kit.oracle import assert_vectors_equal, oracle_features

NAMES = DEFAULT_SPEC.names


def feats(state, as_of, spec=DEFAULT_SPEC) -> dict[str, float]:
    return dict(zip(spec.names, extract(state, as_of, spec), strict=True))


def test_empty_state_vector():
    f = feats(new_state(BID), T0)
    assert len(f) == len(NAMES)
    assert all(f[n] == 0.0 for n in NAMES if n.startswith(("count_", "uniq_users_"))) and f["review_count"] == 0.0
    assert f["rate_bizsite_1d"] == f["rate_call_28d"] == pytest.approx(0.1)  # the prior mean a / (a + b)
    nan = [n for n in NAMES if n.startswith("hours_since_")] + [
        "page_view_interval_mean_h",
        "rating_mean",
        "is_open",
        "price_range",
        "city_bucket",
        "category_bucket",
        "age_days",
    ]
    assert all(math.isnan(f[n]) for n in nan)
    assert all(isinstance(v, float) for v in f.values())


def test_window_boundaries_on_the_hourly_and_daily_grids():
    as_of = T0 + 30 * DAY_MS + 30 * 60_000  # inside hour bucket c = T0/h + 720
    c_h = as_of // HOUR_MS
    c_d = as_of // DAY_MS
    events = [
        act((c_h - 23) * HOUR_MS, eid="h_in"),  # first hour of the 1d window
        act((c_h - 23) * HOUR_MS - 1, eid="h_out"),  # just before it
        act((c_d - 6) * DAY_MS, eid="d7_in"),  # first day of the 7d window
        act((c_d - 6) * DAY_MS - 1, eid="d7_out"),
        act((c_d - 27) * DAY_MS, eid="d28_in"),
        act((c_d - 27) * DAY_MS - 1, eid="d28_out"),
    ]
    s = fold(sorted(events, key=lambda e: e.event_time))
    f = feats(s, as_of)
    assert f["count_page_view_1d"] == 1
    assert f["count_page_view_7d"] == 3  # h_in, h_out (both on the day before as_of's), d7_in
    assert f["count_page_view_28d"] == 5  # all but d28_out
    assert_vectors_equal(extract(s, as_of), oracle_features(events, as_of))


@pytest.mark.parametrize(
    "later", [0, 1, HOUR_MS, 5 * HOUR_MS, 23 * HOUR_MS, DAY_MS, 3 * DAY_MS + 7, 7 * DAY_MS, 27 * DAY_MS, 40 * DAY_MS]
)
def test_windows_slide_when_as_of_is_past_the_clock(later):
    events = [
        act(T0 + i * 37 * 60_000, ["PAGE_VIEW", "CALL", "BIZSITE_VISIT"][i % 3], eid=f"e{i}", user=f"u{i % 11}")
        for i in range(1200)
    ]
    s = fold(events)
    as_of = s.max_event_ms + later
    assert_vectors_equal(extract(s, as_of), oracle_features(events, as_of))


def test_as_of_before_the_clock_is_clamped_to_it():
    s = fold([act(T0, eid="e1"), act(T0 + 10 * HOUR_MS, eid="e2")])
    assert extract(s, T0) == extract(s, T0 + 10 * HOUR_MS)
    assert feats(s, T0)["hours_since_page_view"] == 0.0


def test_counts_per_kind_and_time_since():
    s = fold(
        [
            act(T0, "PAGE_VIEW", eid="v"),
            act(T0 + HOUR_MS, "CALL", eid="c"),
            act(T0 + 2 * HOUR_MS, "DIRECTIONS", eid="d"),
        ]
    )
    f = feats(s, T0 + 4 * HOUR_MS)
    assert (f["count_page_view_1d"], f["count_call_1d"], f["count_directions_28d"], f["count_tip_7d"]) == (1, 1, 1, 0)
    assert f["hours_since_page_view"] == 4.0 and f["hours_since_call"] == 3.0 and f["hours_since_directions"] == 2.0
    assert math.isnan(f["hours_since_checkin"])


def test_distinct_visitors_ignore_anonymous_and_repeat_users():
    events = [
        act(T0 + i * 60_000, eid=f"e{i}", user=u)
        for i, u in enumerate(["alice", "alice", "bob", None, "", "carol", "bob"])
    ]
    f = feats(fold(events), T0 + HOUR_MS)
    assert f["count_page_view_1d"] == 7
    assert f["uniq_users_1d"] == pytest.approx(3, abs=0.05) == f["uniq_users_28d"]


def test_distinct_visitors_leave_the_short_window_first():
    s = fold(
        [
            act(T0, eid="old", user="alice"),
            act(T0 + 3 * DAY_MS, eid="new", user="bob"),
            act(T0 + 3 * DAY_MS + 1, eid="again", user="bob"),
        ]
    )
    f = feats(s, T0 + 3 * DAY_MS)
    assert f["uniq_users_1d"] == pytest.approx(1, abs=0.01)
    assert f["uniq_users_7d"] == pytest.approx(2, abs=0.02)


def test_a_returning_user_moves_to_the_newer_bucket():
    s = fold([act(T0, eid="a1", user="alice"), act(T0 + 2 * DAY_MS, eid="a2", user="alice")])
    f = feats(s, T0 + 2 * DAY_MS)
    assert f["uniq_users_1d"] == pytest.approx(1, abs=0.01) and f["uniq_users_7d"] == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize("n", [10, 100, 250, 600])
def test_distinct_visitor_estimate_error(n):
    users = [f"user-{i:06d}" for i in range(n)]
    s = fold(act(T0 + i * 1000, eid=f"e{i}", user=u) for i, u in enumerate(users))
    est = feats(s, s.max_event_ms)["uniq_users_1d"]
    assert abs(est - n) <= max(2, 0.2 * n), est  # ~4 standard errors at m = 256
    z = len({user_slot(u) for u in users})
    assert est == pytest.approx(-256 * math.log(1 - z / 256))


def test_conversion_rates_are_smoothed():
    events = [act(T0 + i, "PAGE_VIEW", eid=f"v{i}") for i in range(10)]
    events += [act(T0 + 100 + i, "BIZSITE_VISIT", eid=f"b{i}") for i in range(5)]
    events += [act(T0 + 200, "CALL", eid="c0")]
    f = feats(fold(events), T0 + 300)
    assert f["rate_bizsite_1d"] == pytest.approx((5 + 1) / (10 + 1 + 9))
    assert f["rate_call_28d"] == pytest.approx((1 + 1) / (10 + 1 + 9))
    custom = dataclasses.replace(DEFAULT_SPEC, rate_prior_a=2.0, rate_prior_b=3.0)
    f = feats(fold(events, custom), T0 + 300, custom)
    assert f["rate_call_7d"] == pytest.approx((1 + 2) / (10 + 5))
    assert feats(fold(events), T0 + 300, custom) == f  # priors are read at extraction only


def test_page_view_interval():
    s = fold(
        [
            act(T0, eid="v0"),
            act(T0 + 2 * HOUR_MS, eid="v1"),
            act(T0 + 6 * HOUR_MS, eid="v2"),
            act(T0 + 7 * HOUR_MS, "CALL", eid="c"),
        ]
    )
    assert feats(s, T0 + 8 * HOUR_MS)["page_view_interval_mean_h"] == pytest.approx(3.0)
    assert math.isnan(feats(fold([act(T0, eid="v0")]), T0)["page_view_interval_mean_h"])


def test_reviews_and_ratings():
    s = fold(
        [
            act(T0, "REVIEW", eid="r1", rating=5),
            act(T0 + 1, "REVIEW", eid="r2", rating=2),
            act(T0 + 2, "REVIEW", eid="r3"),
        ]
    )
    f = feats(s, T0 + 3)
    assert f["review_count"] == 3 and f["count_review_1d"] == 3
    assert f["rating_mean"] == pytest.approx(3.5)
    assert math.isnan(feats(fold([act(T0, "REVIEW", eid="r")]), T0)["rating_mean"])


def test_static_attributes_and_age():
    s = fold(
        [
            act(T0 - 2 * DAY_MS, eid="e0"),
            biz(T0, eid="c", city="Phoenix", state="AZ", categories=("Bars", "Pubs"), price=3, is_open=True),
        ]
    )
    f = feats(s, T0 + 10 * DAY_MS)
    assert f["is_open"] == 1.0 and f["price_range"] == 3.0
    assert f["city_bucket"] == stable_bucket("Phoenix|AZ", DEFAULT_SPEC.city_buckets)
    assert f["category_bucket"] == stable_bucket("Bars", DEFAULT_SPEC.category_buckets)
    assert f["city_bucket"] != stable_bucket(
        "Phoenix|IL", DEFAULT_SPEC.city_buckets
    )  # distinct here; a hash could collide
    assert f["age_days"] == pytest.approx(10.0)  # from CREATED, not from the earlier activity
    update(s, biz(T0 + DAY_MS, "UPDATED", eid="u", categories=(), price=None, is_open=False))
    f = feats(s, T0 + 10 * DAY_MS)
    assert f["is_open"] == 0.0 and math.isnan(f["price_range"]) and math.isnan(f["category_bucket"])


def test_age_without_created_uses_first_seen_and_is_never_negative():
    s = fold([act(T0, eid="e0"), biz(T0 + DAY_MS, "UPDATED", eid="u")])
    assert feats(s, T0 + 2 * DAY_MS)["age_days"] == pytest.approx(2.0)
    s = fold([act(T0, eid="e0"), biz(T0 + 5 * DAY_MS, "CREATED", eid="c")])
    assert feats(s, T0)["age_days"] == 0.0


def test_static_features_are_nan_before_the_first_business_event():
    f = feats(fold([act(T0, eid="e0")]), T0)
    assert all(math.isnan(f[n]) for n in ("is_open", "price_range", "city_bucket", "category_bucket"))
    assert f["age_days"] == 0.0


def test_group_key():
    s = fold([act(T0, eid="e0")])
    assert group_key(s) == "unknown|unknown"
    update(s, biz(T0, eid="c", city="Phoenix", categories=("Restaurants", "Pizza")))
    assert group_key(s) == "Phoenix, AZ|Restaurants"
    update(s, biz(T0 + 1, "UPDATED", eid="u", city="", categories=()))
    assert group_key(s) == "unknown|unknown"


def test_a_market_is_a_city_in_its_state():
    """Springfield, IL and Springfield, MO are two markets: never ranked together (the city
    feature already hashes city|state)."""
    il = fold([biz(T0, bid="b-il", eid="a", city="Springfield", state="IL")])
    mo = fold([biz(T0, bid="b-mo", eid="b", city="Springfield", state="MO")])
    il2 = fold([biz(T0, bid="b-il2", eid="c", city="Springfield", state="IL")])
    assert group_key(il) != group_key(mo)
    assert group_key(il) == group_key(il2) == "Springfield, IL|Restaurants"
    assert group_key(fold([biz(T0, bid="b-x", eid="d", city="Nowhere", state="")])) == "Nowhere|Restaurants"


def test_extract_into_matches_extract_in_float32():
    s = fold(
        [biz(T0, eid="c")]
        + [
            act(T0 + i * 71_000, ["PAGE_VIEW", "REVIEW"][i % 2], eid=f"e{i}", user=f"u{i % 9}", rating=None)
            for i in range(400)
        ]
    )
    batch = np.full((3, len(NAMES)), -1.0, dtype=np.float32)
    extract_into(s, s.max_event_ms, batch[1])
    np.testing.assert_array_equal(batch[1], np.asarray(extract(s, s.max_event_ms), dtype=np.float32))
    assert (batch[0] == -1).all() and (batch[2] == -1).all()


def test_extract_into_refuses_wrong_rows():
    s = fold([act(T0, eid="e0")])
    with pytest.raises(ValueError):
        extract_into(s, T0, np.zeros(len(NAMES), dtype=np.float64))
    with pytest.raises(ValueError):
        extract_into(s, T0, np.zeros(len(NAMES) + 1, dtype=np.float32))
    with pytest.raises(ValueError):
        extract_into(s, T0, np.zeros((1, len(NAMES)), dtype=np.float32))


def test_extract_with_another_spec_is_refused():
    s = fold([act(T0, eid="e0")])
    with pytest.raises(SpecError):
        extract(s, T0, dataclasses.replace(DEFAULT_SPEC, city_buckets=7))


def test_custom_windows_including_fine_only_and_coarse_only_specs():
    events = [
        act(T0 + i * 23 * 60_000, ["PAGE_VIEW", "CALL"][i % 2], eid=f"e{i}", user=f"u{i % 13}") for i in range(500)
    ]
    for spec in (
        dataclasses.replace(DEFAULT_SPEC, windows_ms=(6 * HOUR_MS, DAY_MS)),
        dataclasses.replace(DEFAULT_SPEC, windows_ms=(2 * DAY_MS, 14 * DAY_MS), fine_horizon_ms=DAY_MS),
        dataclasses.replace(
            DEFAULT_SPEC, windows_ms=(3 * HOUR_MS, 12 * HOUR_MS, 3 * DAY_MS), allowed_lateness_ms=HOUR_MS
        ),
    ):
        s = fold(events, spec)
        assert from_bytes(to_bytes(s), spec) == s
        for later in (0, 2 * HOUR_MS, 2 * DAY_MS):
            as_of = s.max_event_ms + later
            assert_vectors_equal(extract(s, as_of, spec), oracle_features(events, as_of, spec), spec)


def test_lateness_edge_is_in_the_features_too():
    s = fold([act(T0 + L, eid="e1"), act(T0, "CALL", eid="e2")])
    assert feats(s, T0 + L)["count_call_1d"] == 1


@pytest.mark.parametrize("gap", [23 * HOUR_MS, 24 * HOUR_MS, 6 * DAY_MS, 7 * DAY_MS, 27 * DAY_MS, 28 * DAY_MS])
@pytest.mark.parametrize("restore", [False, True])
def test_a_user_returning_from_the_oldest_ring_bucket(gap, restore):
    """The slot's previous bucket is the oldest one a ring or window still holds: the move must
    take it out there (and a restored state must still know where it was)."""
    events = [act(T0, eid="a0", user="alice")]
    events += [act(T0 + i * (gap // 40), eid=f"b{i}", user="bob") for i in range(1, 41)]
    s = fold(events)
    if restore:
        s = from_bytes(to_bytes(s))
    back = act(T0 + gap + 1, eid="a1", user="alice")
    update(s, back)
    events.append(back)
    # the stale row must be right when it leaves the window, too: read past it, then move past it
    for later in (0, HOUR_MS, DAY_MS, 2 * DAY_MS):
        assert_vectors_equal(extract(s, s.max_event_ms + later), oracle_features(events, s.max_event_ms + later))
    events.append(act(T0 + gap + 2 * DAY_MS, eid="b99", user="bob"))
    update(s, events[-1])
    assert_vectors_equal(extract(s, s.max_event_ms), oracle_features(events, s.max_event_ms))
