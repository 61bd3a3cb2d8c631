"""The stream looks like a local-business site: valid events, realistic proportions, a sane lifecycle."""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from features.events import ActivityEvent, BusinessEvent
from sim.catalog import CATEGORIES, CITIES
from sim.world import HOUR_MS, WorldConfig, expected_event_count

CONVERSIONS = {"BIZSITE_VISIT", "CALL", "DIRECTIONS"}
SCHEMAS = Path(__file__).resolve().parents[2] / "consumer" / "pipeline" / "schemas"


def first_copies(records):
    seen: set[str] = set()
    for topic, rec in records:
        if rec["event_id"] not in seen:
            seen.add(rec["event_id"])
            yield topic, rec


@pytest.mark.parametrize("which", ["default", "churn"])
def test_every_event_validates(which, default_records, churn_records):
    records = default_records if which == "default" else churn_records
    for topic, rec in records:
        if topic == "activity":
            ev = ActivityEvent(**rec)
        else:
            ev = BusinessEvent(**{**rec, "categories": tuple(rec["categories"])})
        ev.validate()
        assert ev.to_record() == rec


def test_records_have_exactly_the_schema_fields(default_records):
    """Nothing hidden (quality, trend...) leaks into an event: the fields are the Avro contract's."""
    fields = {
        name: [f["name"] for f in json.loads((SCHEMAS / f"{name}_event.avsc").read_text())["fields"]]
        for name in ("business", "activity")
    }
    kinds = collections.Counter()
    for topic, rec in default_records:
        if kinds[topic] < 2_000:
            assert list(rec) == fields[topic]
            kinds[topic] += 1


def test_volumes_and_kinds(default_records, default_world):
    kinds = collections.Counter(r["kind"] for _, r in default_records)
    views = kinds["PAGE_VIEW"]
    conv = sum(kinds[k] for k in CONVERSIONS)
    assert all(
        kinds[k] > 0
        for k in ("PAGE_VIEW", "BIZSITE_VISIT", "CALL", "DIRECTIONS", "REVIEW", "TIP", "CHECKIN", "CREATED", "UPDATED")
    )
    assert 0.02 < conv / views < 0.12  # conversions are a few % of views
    assert kinds["REVIEW"] < conv / 5
    cfg = default_world.cfg
    per_business_day = len(default_records) / (cfg.businesses * cfg.days)
    assert 25 < per_business_day < 60  # 1000 x 60 -> ~1.5..3.6 million events
    assert abs(len(default_records) - default_world.expected_event_count()) < 0.05 * len(default_records)


def test_expected_event_count_for_the_reference_size():
    n = expected_event_count(WorldConfig(businesses=1_000, days=60))
    assert 1_000_000 <= n <= 3_000_000


def test_anonymous_share_and_sessions(default_records, default_world):
    views = [r for t, r in first_copies(default_records) if r["kind"] == "PAGE_VIEW"]
    anon = sum(r["user_id"] is None for r in views) / len(views)
    assert abs(anon - default_world.cfg.anonymous_share) < 0.02
    by_search = collections.defaultdict(list)
    for r in views:
        if r["search_id"] is not None:
            by_search[r["search_id"]].append(r)
    lengths = [len(v) for v in by_search.values()]
    assert 2.5 < np.mean(lengths) < 4.5 and max(lengths) > 8
    for rs in itertools.islice(by_search.values(), 3_000):
        assert len({r["user_id"] for r in rs}) == 1  # one session, one (possibly anonymous) user
        ts = [r["event_time"] for r in rs]
        assert max(ts) - min(ts) < 6 * HOUR_MS
    direct = sum(r["search_id"] is None for r in views) / len(views)
    assert 0.01 < direct < 0.15
    # identified users come back: many users have several sessions
    sessions_per_user = collections.Counter(rs[0]["user_id"] for rs in by_search.values() if rs[0]["user_id"])
    assert np.mean(list(sessions_per_user.values())) > 2


def test_reviews_tips_checkins_are_by_identified_users(default_records):
    for _, r in default_records:
        if r["kind"] in ("REVIEW", "TIP", "CHECKIN"):
            assert r["user_id"] is not None and r["search_id"] is None
            assert (r["rating"] is not None) == (r["kind"] == "REVIEW")
        elif r["kind"] in CONVERSIONS or r["kind"] == "PAGE_VIEW":
            assert r["rating"] is None


def test_ratings_follow_hidden_quality(default_records, default_world):
    w = default_world
    q, rating = [], []
    for _, r in first_copies(default_records):
        if r["kind"] == "REVIEW":
            q.append(w.quality(r["business_id"], r["event_time"]))
            rating.append(r["rating"])
    assert len(rating) > 300
    assert set(rating) == {1, 2, 3, 4, 5}
    assert np.corrcoef(q, rating)[0, 1] > 0.3


def test_duplicates_in_configured_proportion(default_records, default_world):
    ids = collections.Counter(r["event_id"] for _, r in default_records)
    dupes = sum(c - 1 for c in ids.values())
    share = dupes / len(ids)
    cfg = default_world.cfg
    assert abs(share - cfg.duplicate_share) < 0.4 * cfg.duplicate_share
    assert max(ids.values()) == 2


def test_out_of_order_in_configured_proportion(default_records, default_world):
    cfg = default_world.cfg
    high = -1
    late, lateness = 0, []
    n = 0
    for topic, r in first_copies(default_records):
        n += 1
        t = r["event_time"]
        if t < high:
            late += 1
            if topic == "activity":
                lateness.append(high - t)
        high = max(high, t)
    share = late / n
    assert 0.6 * cfg.late_share < share < 1.2 * cfg.late_share  # late events in a quiet hour stay in order
    assert max(lateness) <= cfg.late_max_ms
    assert np.median(lateness) > 60_000  # really late, not jitter


def test_popularity_is_heavy_tailed_and_varies_by_city_and_category(default_records, default_world):
    w = default_world
    views = collections.Counter(r["business_id"] for _, r in default_records if r["kind"] == "PAGE_VIEW")
    v = np.sort(np.array(list(views.values())))[::-1]
    assert v[: len(v) // 10].sum() > 0.2 * v.sum()  # top 10 % of businesses get > twice their share
    per_city = collections.defaultdict(list)
    per_cat = collections.defaultdict(list)
    for i, b in enumerate(w.business_ids):
        if not w.is_new[i]:
            per_city[int(w.b_city[i])].append(views[b])
            per_cat[int(w.b_cat[i])].append(views[b])
    city_means = [np.mean(x) for x in per_city.values() if len(x) >= 8]
    cat_means = [np.mean(x) for x in per_cat.values() if len(x) >= 8]
    assert max(city_means) > 1.3 * min(city_means)
    assert max(cat_means) > 1.5 * min(cat_means)


def test_daily_and_weekly_seasonality(default_records, default_world):
    offset = {(c.name, c.state): c.utc_offset_h for c in CITIES}
    leisure = {k.name: k.leisure for k in CATEGORIES}
    city_of, leisure_of = {}, {}
    for _topic, r in default_records:
        if r["kind"] == "CREATED":
            city_of[r["business_id"]] = offset[(r["city"], r["state"])]
            leisure_of[r["business_id"]] = leisure[r["categories"][0]]
    hours = np.zeros(24)
    weekday = np.zeros((2, 7))
    for _, r in default_records:
        if r["kind"] == "PAGE_VIEW":
            local = r["event_time"] + city_of[r["business_id"]] * HOUR_MS
            hours[(local // HOUR_MS) % 24] += 1
            weekday[int(leisure_of[r["business_id"]]), (local // 86_400_000 + 3) % 7] += 1  # 1970-01-01: Thu
    assert hours[2:5].sum() * 5 < hours[11:14].sum()  # nights are quiet
    weekday /= weekday.sum(axis=1, keepdims=True)
    services, leisure_ = weekday
    assert leisure_[5] > leisure_[1] and services[1] > services[6]  # Saturday fun, Tuesday chores


def test_lifecycle_no_activity_while_closed(churn_records, churn_world):
    w = churn_world
    closed_seen = reopened_seen = 0
    for topic, r in churn_records:
        if topic == "activity":
            assert w.is_open(r["business_id"], r["event_time"]), r
        elif r["kind"] == "CLOSED":
            closed_seen += 1
            created, closed, _ = w.lifecycle(r["business_id"])
            assert r["is_open"] is False and r["event_time"] == closed
        elif r["kind"] == "REOPENED":
            reopened_seen += 1
            assert r["is_open"] is True
    assert closed_seen >= 5 and reopened_seen >= 2


def test_closed_business_goes_quiet_after_closing(churn_records, churn_world):
    """After a CLOSED is delivered, only late deliveries of earlier events follow (until REOPENED)."""
    w = churn_world
    closed_at: dict[str, int] = {}
    activity_by = collections.Counter()
    for topic, r in churn_records:
        b = r["business_id"]
        if topic == "business":
            if r["kind"] == "CLOSED":
                closed_at[b] = r["event_time"]
            elif r["kind"] == "REOPENED":
                closed_at.pop(b, None)
        else:
            activity_by[b] += 1
            if b in closed_at and r["event_time"] >= w.lifecycle(b)[0]:
                reopened = w.lifecycle(b)[2]
                if reopened is None or r["event_time"] < reopened:
                    assert r["event_time"] < closed_at[b]
    # closed-for-good businesses had activity before closing
    for b, _t in closed_at.items():
        assert activity_by[b] > 0


def test_businesses_open_mid_period_and_created_precedes_activity(churn_records, churn_world):
    w = churn_world
    start = w.cfg.start_time_ms
    created_delivered: set[str] = set()
    activity_before_created: set[str] = set()
    created_time: dict[str, int] = {}
    for _topic, r in churn_records:
        b = r["business_id"]
        if r["kind"] == "CREATED":
            created_delivered.add(b)
            created_time[b] = r["event_time"]
        elif b not in created_delivered:
            activity_before_created.add(b)
    assert set(created_time) == set(w.business_ids)  # every business gets exactly its CREATED
    mid = [b for b, t in created_time.items() if t > start + 86_400_000]
    assert len(mid) >= 10
    # a tiny share of businesses see activity before their CREATED arrives (out-of-order delivery) ...
    assert 1 <= len(activity_before_created) <= 0.05 * len(w.business_ids)
    # ... and only businesses that opened mid-period, whose activity is still after their creation time
    for b in activity_before_created:
        assert b in mid
    for topic, r in churn_records:
        if topic == "activity":
            assert r["event_time"] >= created_time[r["business_id"]]


def test_updates_change_the_profile(churn_records):
    last: dict[str, dict] = {}
    changed = 0
    for topic, r in churn_records:
        if topic != "business":
            continue
        if r["kind"] == "UPDATED":
            prev = last.get(r["business_id"])
            if prev is not None:
                diff = {k for k in ("name", "categories", "price_range") if prev[k] != r[k]}
                changed += bool(diff)
        last[r["business_id"]] = r
    assert changed >= 5


def test_profiles_are_realistic(churn_records):
    cities = {(c.name, c.state) for c in CITIES}
    cats = {k.name: set(k.subcategories) for k in CATEGORIES}
    for topic, r in churn_records:
        if topic == "business":
            assert (r["city"], r["state"]) in cities
            primary, sub = r["categories"]
            assert sub in cats[primary]
            assert r["name"] and len(r["name"]) < 80


def test_hidden_truth_api(churn_world):
    w = churn_world
    b = w.business_ids[0]
    t = w.cfg.start_time_ms + 5 * 86_400_000
    assert -2.5 <= w.quality(b, t) <= 2.5
    assert isinstance(w.trend(b), float)
    truth = w.expected_day(3)
    assert truth.expected_views.shape == (w.cfg.businesses,)
    assert (truth.expected_conversions <= truth.expected_views).all()
    assert w.day_index(w.day_start(4)) == 4 and w.day_index(w.day_start(5) - 1) == 4
