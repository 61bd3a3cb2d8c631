"""extract / extract_into / group_key, one family at a time, with their edge cases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from features_testkit import (
    BID,
    T0,
    L,
    act,
    assert_vectors_equal,
    biz,
    fold,
    oracle_features,
)

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

NAMES = DEFAULT_SPEC.names


def feats(state, as_of, spec=DEFAULT_SPEC) -> dict[str, float]:
    return dict(zip(spec.names, extract(state, as_of, spec)))


def test_empty_state_vector():
    f = feats(new_state(BID), T0)
    assert len(f) == len(NAMES)
    assert all(f[n] == 0.0 for n in NAMES if n.startswith(("count_", "uniq_users_"))) and f["review_count"] == 0.0
    assert f["rate_bizsite_1d"] == f["rate_call_28d"] == pytest.approx(0.1)  # the prior mean a / (a + b)
    nan = [n for n in NAMES if n.startswith("hours_since_")] + [
        "page_view_interval_mean_h", "rating_mean", "is_open", "price_range", "city_bucket", "category_bucket", "age_days"]
    assert all(math.isnan(f[n]) for n in nan)
    assert all(isinstance(v, float) for v in f.values())


def test_window_boundaries_on_the_hourly_and_daily_grids():
    as_of = T0 + 30 * DAY_MS + 30 * 60_000  # inside hour bucket c = T0/h + 720
    c_h = as_of // HOUR_MS
    c_d = as_of // DAY_MS
    events = [
        act("h_in", (c_h - 23) * HOUR_MS),          # first hour of the 1d window
        act("h_out", (c_h - 23) * HOUR_MS - 1),     # just before it
        act("d7_in", (c_d - 6) * DAY_MS),            # first day of the 7d window
        act("d7_out", (c_d - 6) * DAY_MS - 1),
        act("d28_in", (c_d - 27) * DAY_MS),
        act("d28_out", (c_d - 27) * DAY_MS - 1),
    ]
    s = fold(sorted(events, key=lambda e: e.event_time))
    f = feats(s, as_of)
    assert f["count_page_view_1d"] == 1
    assert f["count_page_view_7d"] == 3   # h_in, h_out (both on the day before as_of's), d7_in
    assert f["count_page_view_28d"] == 5  # all but d28_out
    assert_vectors_equal(extract(s, as_of), oracle_features(events, as_of))


@pytest.mark.parametrize("later", [0, 1, HOUR_MS, 5 * HOUR_MS, 23 * HOUR_MS, DAY_MS, 3 * DAY_MS + 7, 7 * DAY_MS, 27 * DAY_MS, 40 * DAY_MS])
def test_windows_slide_when_as_of_is_past_the_clock(later):
    events = [act(f"e{i}", T0 + i * 37 * 60_000, ["PAGE_VIEW", "CALL", "BIZSITE_VISIT"][i % 3], user=f"u{i % 11}") for i in range(1200)]
    s = fold(events)
    as_of = s.max_event_ms + later
    assert_vectors_equal(extract(s, as_of), oracle_features(events, as_of))


def test_as_of_before_the_clock_is_clamped_to_it():
    s = fold([act("e1", T0), act("e2", T0 + 10 * HOUR_MS)])
    assert extract(s, T0) == extract(s, T0 + 10 * HOUR_MS)
    assert feats(s, T0)["hours_since_page_view"] == 0.0


def test_counts_per_kind_and_time_since():
    s = fold([act("v", T0, "PAGE_VIEW"), act("c", T0 + HOUR_MS, "CALL"), act("d", T0 + 2 * HOUR_MS, "DIRECTIONS")])
    f = feats(s, T0 + 4 * HOUR_MS)
    assert (f["count_page_view_1d"], f["count_call_1d"], f["count_directions_28d"], f["count_tip_7d"]) == (1, 1, 1, 0)
    assert f["hours_since_page_view"] == 4.0 and f["hours_since_call"] == 3.0 and f["hours_since_directions"] == 2.0
    assert math.isnan(f["hours_since_checkin"])


def test_distinct_visitors_ignore_anonymous_and_repeat_users():
    events = [act(f"e{i}", T0 + i * 60_000, user=u) for i, u in enumerate(["alice", "alice", "bob", None, "", "carol", "bob"])]
    f = feats(fold(events), T0 + HOUR_MS)
    assert f["count_page_view_1d"] == 7
    assert f["uniq_users_1d"] == pytest.approx(3, abs=0.05) == f["uniq_users_28d"]


def test_distinct_visitors_leave_the_short_window_first():
    s = fold([act("old", T0, user="alice"), act("new", T0 + 3 * DAY_MS, user="bob"), act("again", T0 + 3 * DAY_MS + 1, user="bob")])
    f = feats(s, T0 + 3 * DAY_MS)
    assert f["uniq_users_1d"] == pytest.approx(1, abs=0.01)
    assert f["uniq_users_7d"] == pytest.approx(2, abs=0.02)


def test_a_returning_user_moves_to_the_newer_bucket():
    s = fold([act("a1", T0, user="alice"), act("a2", T0 + 2 * DAY_MS, user="alice")])
    f = feats(s, T0 + 2 * DAY_MS)
    assert f["uniq_users_1d"] == pytest.approx(1, abs=0.01) and f["uniq_users_7d"] == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize("n", [10, 100, 250, 600])
def test_distinct_visitor_estimate_error(n):
    users = [f"user-{i:06d}" for i in range(n)]
    s = fold(act(f"e{i}", T0 + i * 1000, user=u) for i, u in enumerate(users))
    est = feats(s, s.max_event_ms)["uniq_users_1d"]
    assert abs(est - n) <= max(2, 0.2 * n), est  # ~4 standard errors at m = 256
    z = len({user_slot(u) for u in users})
    assert est == pytest.approx(-256 * math.log(1 - z / 256))


def test_conversion_rates_are_smoothed():
    events = [act(f"v{i}", T0 + i, "PAGE_VIEW") for i in range(10)]
    events += [act(f"b{i}", T0 + 100 + i, "BIZSITE_VISIT") for i in range(5)]
    events += [act("c0", T0 + 200, "CALL")]
    f = feats(fold(events), T0 + 300)
    assert f["rate_bizsite_1d"] == pytest.approx((5 + 1) / (10 + 1 + 9))
    assert f["rate_call_28d"] == pytest.approx((1 + 1) / (10 + 1 + 9))
    custom = dataclasses.replace(DEFAULT_SPEC, rate_prior_a=2.0, rate_prior_b=3.0)
    f = feats(fold(events, custom), T0 + 300, custom)
    assert f["rate_call_7d"] == pytest.approx((1 + 2) / (10 + 5))
    assert feats(fold(events), T0 + 300, custom) == f  # priors are read at extraction only


def test_page_view_interval():
    s = fold([act("v0", T0), act("v1", T0 + 2 * HOUR_MS), act("v2", T0 + 6 * HOUR_MS), act("c", T0 + 7 * HOUR_MS, "CALL")])
    assert feats(s, T0 + 8 * HOUR_MS)["page_view_interval_mean_h"] == pytest.approx(3.0)
    assert math.isnan(feats(fold([act("v0", T0)]), T0)["page_view_interval_mean_h"])


def test_reviews_and_ratings():
    s = fold([act("r1", T0, "REVIEW", rating=5), act("r2", T0 + 1, "REVIEW", rating=2), act("r3", T0 + 2, "REVIEW")])
    f = feats(s, T0 + 3)
    assert f["review_count"] == 3 and f["count_review_1d"] == 3
    assert f["rating_mean"] == pytest.approx(3.5)
    assert math.isnan(feats(fold([act("r", T0, "REVIEW")]), T0)["rating_mean"])


def test_static_attributes_and_age():
    s = fold([act("e0", T0 - 2 * DAY_MS), biz("c", T0, city="Phoenix", state="AZ", cats=("Bars", "Pubs"), price=3, is_open=True)])
    f = feats(s, T0 + 10 * DAY_MS)
    assert f["is_open"] == 1.0 and f["price_range"] == 3.0
    assert f["city_bucket"] == stable_bucket("Phoenix|AZ", DEFAULT_SPEC.city_buckets)
    assert f["category_bucket"] == stable_bucket("Bars", DEFAULT_SPEC.category_buckets)
    assert f["city_bucket"] != stable_bucket("Phoenix|IL", DEFAULT_SPEC.city_buckets)  # distinct here; a hash could collide
    assert f["age_days"] == pytest.approx(10.0)  # from CREATED, not from the earlier activity
    update(s, biz("u", T0 + DAY_MS, "UPDATED", cats=(), price=None, is_open=False))
    f = feats(s, T0 + 10 * DAY_MS)
    assert f["is_open"] == 0.0 and math.isnan(f["price_range"]) and math.isnan(f["category_bucket"])


def test_age_without_created_uses_first_seen_and_is_never_negative():
    s = fold([act("e0", T0), biz("u", T0 + DAY_MS, "UPDATED")])
    assert feats(s, T0 + 2 * DAY_MS)["age_days"] == pytest.approx(2.0)
    s = fold([act("e0", T0), biz("c", T0 + 5 * DAY_MS, "CREATED")])
    assert feats(s, T0)["age_days"] == 0.0


def test_static_features_are_nan_before_the_first_business_event():
    f = feats(fold([act("e0", T0)]), T0)
    assert all(math.isnan(f[n]) for n in ("is_open", "price_range", "city_bucket", "category_bucket"))
    assert f["age_days"] == 0.0


def test_group_key():
    s = fold([act("e0", T0)])
    assert group_key(s) == "unknown|unknown"
    update(s, biz("c", T0, city="Phoenix", cats=("Restaurants", "Pizza")))
    assert group_key(s) == "Phoenix, AZ|Restaurants"
    update(s, biz("u", T0 + 1, "UPDATED", city="", cats=()))
    assert group_key(s) == "unknown|unknown"


def test_a_market_is_a_city_in_its_state():
    """Springfield, IL and Springfield, MO are two markets: never ranked together (the city
    feature already hashes city|state)."""
    il = fold([biz("a", T0, city="Springfield", state="IL", bid="b-il")])
    mo = fold([biz("b", T0, city="Springfield", state="MO", bid="b-mo")])
    il2 = fold([biz("c", T0, city="Springfield", state="IL", bid="b-il2")])
    assert group_key(il) != group_key(mo)
    assert group_key(il) == group_key(il2) == "Springfield, IL|Restaurants"
    assert group_key(fold([biz("d", T0, city="Nowhere", state="", bid="b-x")])) == "Nowhere|Restaurants"


def test_extract_into_matches_extract_in_float32():
    s = fold([biz("c", T0)] + [act(f"e{i}", T0 + i * 71_000, ["PAGE_VIEW", "REVIEW"][i % 2], f"u{i % 9}", None) for i in range(400)])
    batch = np.full((3, len(NAMES)), -1.0, dtype=np.float32)
    extract_into(s, s.max_event_ms, batch[1])
    np.testing.assert_array_equal(batch[1], np.asarray(extract(s, s.max_event_ms), dtype=np.float32))
    assert (batch[0] == -1).all() and (batch[2] == -1).all()


def test_extract_into_refuses_wrong_rows():
    s = fold([act("e0", T0)])
    with pytest.raises(ValueError):
        extract_into(s, T0, np.zeros(len(NAMES), dtype=np.float64))
    with pytest.raises(ValueError):
        extract_into(s, T0, np.zeros(len(NAMES) + 1, dtype=np.float32))
    with pytest.raises(ValueError):
        extract_into(s, T0, np.zeros((1, len(NAMES)), dtype=np.float32))


def test_extract_with_another_spec_is_refused():
    s = fold([act("e0", T0)])
    with pytest.raises(SpecError):
        extract(s, T0, dataclasses.replace(DEFAULT_SPEC, city_buckets=7))


def test_custom_windows_including_fine_only_and_coarse_only_specs():
    events = [act(f"e{i}", T0 + i * 23 * 60_000, ["PAGE_VIEW", "CALL"][i % 2], f"u{i % 13}") for i in range(500)]
    for spec in (
        dataclasses.replace(DEFAULT_SPEC, windows_ms=(6 * HOUR_MS, DAY_MS)),
        dataclasses.replace(DEFAULT_SPEC, windows_ms=(2 * DAY_MS, 14 * DAY_MS), fine_horizon_ms=DAY_MS),
        dataclasses.replace(DEFAULT_SPEC, windows_ms=(3 * HOUR_MS, 12 * HOUR_MS, 3 * DAY_MS), allowed_lateness_ms=HOUR_MS),
    ):
        s = fold(events, spec)
        assert from_bytes(to_bytes(s), spec) == s
        for later in (0, 2 * HOUR_MS, 2 * DAY_MS):
            as_of = s.max_event_ms + later
            assert_vectors_equal(extract(s, as_of, spec), oracle_features(events, as_of, spec), spec)


def test_lateness_edge_is_in_the_features_too():
    s = fold([act("e1", T0 + L), act("e2", T0, "CALL")])
    assert feats(s, T0 + L)["count_call_1d"] == 1


@pytest.mark.parametrize("gap", [23 * HOUR_MS, 24 * HOUR_MS, 6 * DAY_MS, 7 * DAY_MS, 27 * DAY_MS, 28 * DAY_MS])
@pytest.mark.parametrize("restore", [False, True])
def test_a_user_returning_from_the_oldest_ring_bucket(gap, restore):
    """The slot's previous bucket is the oldest one a ring or window still holds: the move must
    take it out there (and a restored state must still know where it was)."""
    events = [act("a0", T0, user="alice")]
    events += [act(f"b{i}", T0 + i * (gap // 40), user="bob") for i in range(1, 41)]
    s = fold(events)
    if restore:
        s = from_bytes(to_bytes(s))
    back = act("a1", T0 + gap + 1, user="alice")
    update(s, back)
    events.append(back)
    # the stale row must be right when it leaves the window, too: read past it, then move past it
    for later in (0, HOUR_MS, DAY_MS, 2 * DAY_MS):
        assert_vectors_equal(extract(s, s.max_event_ms + later), oracle_features(events, s.max_event_ms + later))
    events.append(act("b99", T0 + gap + 2 * DAY_MS, user="bob"))
    update(s, events[-1])
    assert_vectors_equal(extract(s, s.max_event_ms), oracle_features(events, s.max_event_ms))
