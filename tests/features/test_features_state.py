"""BusinessState and update: clock, lateness, dedup, lifecycle, bounds, encoding errors."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from features.errors import CorruptState, FeatureError, InvalidEvent, SpecError, StateVersionError
from features.events import ActivityEvent
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS
from features.state import (
    STATE_VERSION,
    BusinessState,
    from_bytes,
    is_scorable,
    new_state,
    to_bytes,
    update,
)
from tests.kit.events import BID, T0, L, act, biz, fold
from tests.kit.oracle import assert_states_equal


def test_empty_state():
    s = new_state(BID)
    assert s.max_event_ms == 0 and s.watermark_ms is None and s.late_dropped == 0
    assert not s.known and not is_scorable(s)
    assert from_bytes(to_bytes(s)) == s
    assert s == BusinessState(BID)


def test_update_mutates_and_returns_the_given_state_and_creates_one_for_none():
    s = update(None, act(T0, eid="e1"))
    assert isinstance(s, BusinessState) and s.business_id == BID
    assert update(s, act(T0 + 1, eid="e2")) is s
    assert s.totals[0] == 2


def test_copy_is_independent():
    s = fold([act(T0, eid="e1", user="alice"), biz(T0, eid="c")])
    c = s.copy()
    assert c == s
    update(c, act(T0 + HOUR_MS, eid="e2", user="bob"))
    assert c != s and s.totals[0] == 1 and len(s.seen) == 1


def test_wrong_business_or_spec_or_kind_is_refused():
    s = fold([act(T0, eid="e1")])
    with pytest.raises(FeatureError):
        update(s, act(T0, bid="other", eid="e2"))
    other = dataclasses.replace(DEFAULT_SPEC, allowed_lateness_ms=HOUR_MS)
    with pytest.raises(SpecError):
        update(s, act(T0, eid="e2"), other)
    with pytest.raises(InvalidEvent):
        update(s, ActivityEvent("e3", BID, None, T0, "TELEPORT", None, None))
    with pytest.raises(InvalidEvent):
        update(s, "not an event")  # type: ignore[arg-type]


def test_clock_and_watermark_follow_activity_only():
    s = fold([act(T0, eid="e1"), biz(T0 + 30 * DAY_MS, eid="c")])
    assert s.max_event_ms == T0 and s.watermark_ms == T0 - L
    update(s, act(T0 + 5 * HOUR_MS, eid="e2"))
    assert s.max_event_ms == T0 + 5 * HOUR_MS
    update(s, act(T0 + HOUR_MS, eid="e3"))  # older but within lateness: no clock change
    assert s.max_event_ms == T0 + 5 * HOUR_MS and s.totals[0] == 3 and s.late_dropped == 0


def test_late_activity_is_dropped_and_counted_at_the_exact_boundary():
    s = fold([act(T0 + 10 * HOUR_MS, eid="e1")])
    before = s.copy()
    update(s, act(T0 + 10 * HOUR_MS - L - 1, eid="late"))
    assert s.late_dropped == 1
    s.late_dropped = 0
    assert_states_equal(s, before)
    update(s, act(T0 + 10 * HOUR_MS - L, eid="edge"))  # exactly at the watermark: accepted
    assert s.late_dropped == 0 and s.totals[0] == 2


def test_business_events_are_never_late():
    s = fold(
        [
            act(T0 + 30 * DAY_MS, eid="e1"),
            biz(T0, "CREATED", eid="c"),
            biz(T0 + DAY_MS, "CLOSED", eid="x", is_open=True),
        ]
    )
    assert s.late_dropped == 0 and s.known and s.lifecycle == "CLOSED" and s.created_ms == T0


def test_duplicates_count_once():
    e = act(T0, "CALL", eid="e1", user="alice")
    s = fold([e, e, act(T0 + 1, eid="e2"), e])
    assert s.totals[2] == 1 and s.totals[0] == 1
    assert_states_equal(s, fold([e, act(T0 + 1, eid="e2")]))


def test_a_duplicate_after_the_watermark_passed_it_is_late_not_double_counted():
    e = act(T0, eid="e1")
    s = fold([e, act(T0 + L + HOUR_MS, eid="e2"), e])
    assert s.totals[0] == 2 and s.late_dropped == 1


def test_dedup_memory_is_bounded_by_the_lateness_not_the_history():
    """Only keys of buckets at or after the watermark's are held, whatever the history length."""
    events = [act(T0 + i * 10 * 60_000, eid=f"e{i}") for i in range(3000)]  # one every 10 minutes, ~21 days
    s = fold(events)
    held = sum(len(k) for k in s.seen.values())
    per_bucket = HOUR_MS // (10 * 60_000)
    assert held <= (L // HOUR_MS + 1) * per_bucket
    assert min(s.seen) == (s.max_event_ms - L) // HOUR_MS == s.seen_floor
    # ...and that is enough: replaying the whole history, every duplicate at or after the watermark
    # is recognised as one and every earlier one is dropped as late; nothing counts twice.
    before = s.copy()
    wm = s.watermark_ms
    for e in events:
        update(s, e)
    assert s.late_dropped == sum(e.event_time < wm for e in events)
    s.late_dropped = 0
    assert_states_equal(s, before)


def test_state_size_does_not_grow_with_history():
    sizes = []
    for n in (500, 5000):
        s = fold(
            act(T0 + i * 60 * 60_000 // 7, ["PAGE_VIEW", "CALL", "REVIEW"][i % 3], eid=f"e{i}", user=f"u{i % 97}")
            for i in range(n)
        )
        sizes.append(len(to_bytes(s)))
    assert abs(sizes[1] - sizes[0]) < 200, sizes


def test_activity_before_the_first_business_event():
    s = fold([act(T0, eid="e1", user="alice"), act(T0 + HOUR_MS, eid="e2")])
    assert not s.known and not is_scorable(s) and s.totals[0] == 2
    update(s, biz(T0 + 2 * HOUR_MS, eid="c"))
    assert s.known and is_scorable(s) and s.totals[0] == 2


@pytest.mark.parametrize(
    "kinds, scorable",
    [
        (["CREATED"], True),
        (["UPDATED"], True),
        (["CREATED", "CLOSED"], False),
        (["CREATED", "CLOSED", "REOPENED"], True),
        (["CREATED", "CLOSED", "UPDATED"], False),  # an update does not reopen
        (["CREATED", "CLOSED", "REOPENED", "CLOSED"], False),
    ],
)
def test_lifecycle(kinds, scorable):
    events = [biz(T0 + i * HOUR_MS, kind, eid=f"b{i}", is_open=True) for i, kind in enumerate(kinds)]
    assert is_scorable(fold(events)) is scorable
    assert is_scorable(fold(reversed(events))) is scorable  # order of arrival does not matter


def test_latest_profile_wins_by_event_time_and_updated_changes_attributes():
    s = fold(
        [
            biz(T0, eid="c", city="Phoenix", price=1),
            biz(T0 + DAY_MS, "UPDATED", eid="u", city="Tempe", categories=("Bars",), price=3),
        ]
    )
    assert (s.city, s.category, s.price_range) == ("Tempe", "Bars", 3)
    update(s, biz(T0 + HOUR_MS, "UPDATED", eid="stale", city="Mesa", price=4))  # older than the profile: ignored
    assert (s.city, s.price_range) == ("Tempe", 3)
    assert s.created_ms == T0


def test_equal_time_business_events_tie_break_deterministically():
    a = biz(T0, "CLOSED", eid="x", is_open=True)
    b = biz(T0, "REOPENED", eid="y")
    assert fold([a, b]) == fold([b, a])


def test_encoding_round_trip_and_canonical_bytes():
    s = fold(
        [biz(T0, eid="c", city="Zürich", state="ZH", categories=("Café",))]
        + [act(T0 + i * 999_983, "REVIEW", eid=f"e{i}", user=f"u{i}", rating=1 + i % 5) for i in range(300)]
    )
    b = to_bytes(s)
    r = from_bytes(b)
    assert_states_equal(r, s)
    assert to_bytes(r) == b
    assert r.city == "Zürich" and r.category == "Café"


def test_wide_counts_round_trip():
    s = fold(act(T0 + i, "CALL", eid=f"e{i}") for i in range(70_000))
    assert max(s.fine) > 0xFFFF
    assert from_bytes(to_bytes(s)) == s


def test_unknown_version_spec_or_corrupt_record_raises():
    b = to_bytes(fold([act(T0, eid="e1"), biz(T0, eid="c")]))
    with pytest.raises(StateVersionError, match="version"):
        from_bytes(b[:2] + bytes([STATE_VERSION + 1]) + b[3:])
    with pytest.raises(StateVersionError):
        from_bytes(b"XX" + b[2:])
    with pytest.raises(StateVersionError, match="spec"):
        from_bytes(b, dataclasses.replace(DEFAULT_SPEC, distinct_slots=512))
    for corrupt in (b[:-3], b + b"\0", b[:4]):  # this version's header, bytes that do not parse
        with pytest.raises(CorruptState):
            from_bytes(corrupt)
    assert struct.unpack_from("<2sB", b) == (b"SR", STATE_VERSION)


def test_slots_rebase_keeps_state_equal_to_a_fresh_fold():
    """The u16 slot base steps every 2**15 hours (~3.7 years); crossing it must not change meaning."""
    period = 1 << 15
    start = ((T0 // HOUR_MS) // period + 1) * period * HOUR_MS - 3 * HOUR_MS  # 3 h before a base step
    events = [act(start + i * 20 * 60_000, eid=f"e{i}", user=f"u{i % 5}") for i in range(20)]
    s = fold(events)
    assert_states_equal(from_bytes(to_bytes(s)), s)
    tail = fold(events[9:])  # users seen only after the step
    assert s.fine_sums[7] == tail.fine_sums[7] == 5


def test_specs_differing_only_in_priors_share_states():
    """A model retrained with other priors reuses the changelog; any other parameter does not."""
    s = fold([act(T0, eid="v"), act(T0 + 1, "CALL", eid="c"), biz(T0, eid="c")])
    priors = dataclasses.replace(DEFAULT_SPEC, rate_prior_a=3.0, rate_prior_b=5.0)
    assert priors.version != DEFAULT_SPEC.version
    r = from_bytes(to_bytes(s), priors)
    assert r == s
    update(r, act(T0 + 2, eid="v2"), priors)
    windows = dataclasses.replace(DEFAULT_SPEC, windows_ms=(DAY_MS, 14 * DAY_MS))
    with pytest.raises(StateVersionError):
        from_bytes(to_bytes(s), windows)
    with pytest.raises(SpecError):
        update(s, act(T0 + 3, eid="v3"), windows)
