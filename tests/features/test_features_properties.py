"""Property tests: the event-time rules of ``features.state`` hold for generated histories.

Every test compares against either a fold in time order or the brute-force oracle in
``tests.kit.oracle``, never against numbers written by hand.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.extract import extract
from features.spec import DAY_MS, HOUR_MS
from features.state import from_bytes, is_scorable, to_bytes
from tests.kit.events import L, fold, time_order
from tests.kit.oracle import (
    assert_states_equal,
    assert_vectors_equal,
    oracle_accept,
    oracle_features,
    oracle_scorable,
    without_late_count,
)
from tests.kit.strategies import activity_events, business_events, deliver_within_lateness

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AS_OF_LATER = st.sampled_from([0, 1, HOUR_MS, DAY_MS, 7 * DAY_MS]) | st.integers(0, 30 * DAY_MS)


def _delivery(draw, events):
    n = len(events)
    delays = draw(st.lists(st.sampled_from([0, L]) | st.integers(0, L), min_size=n, max_size=n))
    ties = draw(st.permutations(range(n)))
    return deliver_within_lateness(events, delays, ties)


@PROPS
@given(acts=activity_events(), bizs=business_events(), later=AS_OF_LATER)
def test_time_order_fold_matches_the_oracle(acts, bizs, later):
    events = time_order(acts + bizs)
    s = fold(events)
    assert s.late_dropped == 0
    as_of = s.max_event_ms + later
    assert_vectors_equal(extract(s, as_of), oracle_features(events, as_of))
    assert is_scorable(s) == oracle_scorable(events)


@PROPS
@given(data=st.data(), acts=activity_events(), bizs=business_events(), later=AS_OF_LATER)
def test_any_order_within_lateness_gives_the_same_state_and_vector(data, acts, bizs, later):
    events = acts + bizs
    in_order = fold(time_order(events))
    shuffled = fold(_delivery(data.draw, events))
    assert shuffled.late_dropped == 0
    assert_states_equal(shuffled, in_order)
    as_of = in_order.max_event_ms + later
    assert_vectors_equal(extract(shuffled, as_of), extract(in_order, as_of))


@PROPS
@given(data=st.data(), acts=activity_events(), bizs=business_events())
def test_duplicates_within_lateness_leave_the_state_unchanged(data, acts, bizs):
    picks = data.draw(st.lists(st.sampled_from(acts + bizs), max_size=15))
    with_dups = fold(_delivery(data.draw, acts + bizs + picks))
    assert_states_equal(with_dups, fold(time_order(acts + bizs)))


@PROPS
@given(data=st.data(), acts=activity_events(), later=AS_OF_LATER)
def test_duplicates_anywhere_never_count_twice(data, acts, later):
    """Held ids cover everything not yet late; a duplicate arriving later than that is dropped as
    late. Either way features are those without duplicates, and only late_dropped may differ."""
    stream = time_order(acts)
    for dup in data.draw(st.lists(st.sampled_from(acts), max_size=15)):
        stream.insert(data.draw(st.integers(stream.index(dup) + 1, len(stream))), dup)
    s = fold(stream)
    clean = fold(time_order(acts))
    assert_states_equal(without_late_count(s), clean)
    assert s.late_dropped == oracle_accept(stream)[1]
    as_of = clean.max_event_ms + later
    assert_vectors_equal(extract(s, as_of), extract(clean, as_of))


@PROPS
@given(data=st.data(), acts=activity_events(), bizs=business_events(), later=AS_OF_LATER)
def test_late_events_are_dropped_counted_and_nothing_else(data, acts, bizs, later):
    arrivals = data.draw(st.permutations(acts + bizs + data.draw(st.lists(st.sampled_from(acts), max_size=5))))
    accepted, late = oracle_accept(arrivals)
    s = fold(arrivals)
    assert s.late_dropped == late
    assert_states_equal(without_late_count(s), fold(time_order(accepted)))
    as_of = s.max_event_ms + later
    assert_vectors_equal(extract(s, as_of), oracle_features(accepted, as_of))


@PROPS
@given(data=st.data(), acts=activity_events(), more=activity_events(prefix="m"), bizs=business_events())
def test_encoding_round_trip_then_keep_folding(data, acts, more, bizs):
    arrivals = data.draw(st.permutations(acts + bizs))
    s = fold(arrivals)
    b = to_bytes(s)
    r = from_bytes(b)
    assert_states_equal(r, s)
    assert to_bytes(r) == b
    assert_vectors_equal(extract(r, s.max_event_ms), extract(s, s.max_event_ms))
    # a restored state behaves exactly like the original from here on, and both stay right
    tail = data.draw(st.permutations(more))
    fold(tail, state=s)
    fold(tail, state=r)
    assert_states_equal(r, s)
    assert to_bytes(r) == to_bytes(s)
    accepted, _ = oracle_accept(list(arrivals) + list(tail))
    assert_vectors_equal(extract(r, r.max_event_ms), oracle_features(accepted, r.max_event_ms))


@PROPS
@given(data=st.data(), bizs=business_events(max_events=6))
def test_scorability_is_order_free(data, bizs):
    s = fold(data.draw(st.permutations(bizs)))
    assert is_scorable(s) == oracle_scorable(bizs)
