"""The training set: compacted table, scoring moments, labels, sampling, start time, throughput."""

from __future__ import annotations

import random

import numpy as np

from features.spec import DEFAULT_SPEC
from features.state import update
from models.dataset import LabelConfig, Tombstone, sampled, scoring_moments
from models.rowsets import build_training_set
from tests.kit.events import DAY, HOUR, T0, act, biz
from tests.kit.records import Rec, to_records, world_records

H = DAY


# ---------------------------------------------------------------------- scoring moments
def test_scoring_moment_rule():
    events = [
        act(T0 + 1, bid="x"),  # unknown business: folded, not a moment
        biz(T0 + 2, bid="x"),
        act(T0 + 10 * HOUR, bid="x", eid="e1"),  # moment
        act(T0 + 10 * HOUR, bid="x", eid="e1"),  # duplicate delivery: not a moment
        act(T0 + 2 * HOUR, bid="x", eid="late"),  # older than the 6 h allowed lateness: dropped
        act(T0 + 9 * HOUR, bid="x", eid="e2"),  # out of order but in time: a moment, as_of stays at the clock
        biz(T0 + 11 * HOUR, "CLOSED", bid="x", is_open=False),
        act(T0 + 12 * HOUR, bid="x", eid="e3"),  # closed: not a moment
        biz(T0 + 13 * HOUR, "REOPENED", bid="x"),
        act(T0 + 14 * HOUR, bid="x", eid="e4"),  # moment again
        Tombstone("x"),
        act(T0 + 15 * HOUR, bid="x", eid="e5"),  # forgotten: unknown again
    ]
    moments = [(ev.event_id, st.max_event_ms) for ev, st in scoring_moments(events)]
    assert moments == [("e1", T0 + 10 * HOUR), ("e2", T0 + 10 * HOUR), ("e4", T0 + 14 * HOUR)]


# -------------------------------------------------------------------------------- labels
def _label_log():
    a = T0 + 10 * HOUR
    events = [
        biz(T0, bid="b1"),
        act(a, "PAGE_VIEW", bid="b1"),
        act(a + 1, "CALL", bid="b1", eid="call"),
        act(a + 2, "PAGE_VIEW", bid="b1"),
        act(a + 5, "CALL", bid="b2"),  # another (unknown) business: never in b1's label
        act(a + 1, "CALL", bid="b1", eid="call"),  # duplicate delivery: counts once
        act(a + H, "DIRECTIONS", bid="b1"),  # exactly at the horizon: included
        act(a + H + 1, "BIZSITE_VISIT", bid="b1"),  # just past it: excluded
        act(a + 3 * H, "PAGE_VIEW", bid="b1"),  # the end of the data
    ]
    return a, to_records(events)


def test_labels_window_dedup_and_popularity():
    a, records = _label_log()
    ts = build_training_set(records, label_cfg=LabelConfig(horizon_ms=H))
    got = {(int(t), float(y), float(p)) for t, y, p in zip(ts.as_of, ts.y, ts.popularity, strict=True)}
    assert got == {
        (a, 2.0, 0.0),  # call@a+1 and directions@a+H; nothing converted before
        (a + 1, 2.0, 1.0),  # directions@a+H and bizsite@a+H+1; the call at as_of is past
        (a + 2, 2.0, 1.0),
        (a + H, 1.0, 2.0),  # bizsite@a+H+1
        (a + H + 1, 0.0, 3.0),
    }
    assert set(ts.business_ids) == {"b1"}
    assert ts.stats.conversions == 4  # the duplicate counted once, b2's call included in the log
    # The last moment's horizon runs past the end of the data: dropped, not labelled 0.
    assert ts.stats.dropped_incomplete == 1
    assert ts.stats.data_end_ms == a + 3 * H
    assert np.all(ts.as_of + H <= ts.stats.data_end_ms)


def test_label_kinds_and_horizon_configurable():
    a, records = _label_log()
    ts = build_training_set(records, label_cfg=LabelConfig(kinds=("CALL",), horizon_ms=2 * HOUR))
    first = int(np.flatnonzero(ts.as_of == a)[0])
    assert ts.y[first] == 1.0  # only the call, within 2 h
    assert ts.y[ts.as_of == a + 2].tolist() == [0.0]


def test_features_and_labels_never_use_data_after_as_of():
    """Cutting the log at T changes no feature and no label of an example whose horizon ends before T."""
    records = world_records(60, 12, seed=5)
    T = T0 + 8 * DAY
    cut = [r for r in records if r.event.event_time <= T]
    full = build_training_set(records, sample_rate=0.3)
    part = build_training_set(cut, sample_rate=0.3)
    assert part.stats.data_end_ms <= T
    assert np.all(part.as_of + H <= part.stats.data_end_ms)
    # Labels are complete only once the allowed lateness has passed after their horizon.
    limit = part.stats.data_end_ms - H - DEFAULT_SPEC.allowed_lateness_ms

    def rows(ts):
        sel = np.flatnonzero(ts.as_of <= limit)
        return sorted(
            (ts.business_table[ts.business[i]], int(ts.as_of[i]), ts.X[i].tobytes(), float(ts.y[i])) for i in sel
        )

    a, b = rows(full), rows(part)
    assert len(a) > 500
    assert a == b


def test_input_order_within_partition_does_not_matter():
    records = world_records(20, 6, seed=2)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    a = build_training_set(records)
    b = build_training_set(shuffled)
    assert len(a) == len(b) > 0
    assert np.array_equal(a.X, b.X, equal_nan=True)
    assert np.array_equal(a.y, b.y) and np.array_equal(a.as_of, b.as_of)


# ------------------------------------------------------------------------------ sampling
def test_sampling_is_deterministic_and_at_rate():
    ids = [f"e{i}" for i in range(20_000)]
    picked = [sampled(i, 0.3, seed=7) for i in ids]
    assert picked == [sampled(i, 0.3, seed=7) for i in ids]
    assert abs(sum(picked) / len(ids) - 0.3) < 0.02
    assert picked != [sampled(i, 0.3, seed=8) for i in ids]
    assert all(sampled(i, 1.0) for i in ids[:100])


def test_sampled_training_set_is_a_subset():
    records = world_records(20, 6, seed=2)
    full = build_training_set(records)
    half = build_training_set(records, sample_rate=0.5, seed=1)
    again = build_training_set(records, sample_rate=0.5, seed=1)
    assert 0.4 * len(full) < len(half) < 0.6 * len(full)
    assert np.array_equal(half.X, again.X, equal_nan=True)

    def key(ts):
        return {(ts.business_table[b], int(t)) for b, t in zip(ts.business, ts.as_of, strict=True)}

    assert key(half) <= key(full)


# ---------------------------------------------------------------------------- start time
def test_start_gives_the_workers_features_not_a_truncated_history():
    """``start_ms`` picks which moments become examples; it does not cut the history the state is
    built from. A worker that has run since the beginning scores a business with its lifetime
    counts, its age and its lifecycle, so the examples from ``start_ms`` on are exactly the full
    build's examples from ``start_ms`` on: features, labels and the popularity baseline."""
    records = world_records(40, 10, seed=9)
    start = T0 + 6 * DAY
    full = build_training_set(records)
    part = build_training_set(records, start_ms=start)

    def rows(ts, sel):
        return sorted(
            (
                ts.business_table[ts.business[i]],
                int(ts.as_of[i]),
                ts.X[i].tobytes(),
                float(ts.y[i]),
                float(ts.popularity[i]),
            )
            for i in sel
        )

    want = rows(full, np.flatnonzero(full.as_of >= start))
    assert len(want) > 200
    assert rows(part, range(len(part.y))) == want
    assert part.stats.records == full.stats.records  # the whole log folded, not the part after start


def test_tombstone_without_key_is_counted():
    records = to_records([biz(T0, bid="a"), act(T0 + 1, bid="a")])
    records.append(Rec(0, 0, 99, None))
    ts = build_training_set(records)
    assert ts.stats.unkeyed_tombstones == 1 and ts.stats.tombstones == 1


# ---------------------------------------------------------------------------- throughput
def test_throughput_is_measured(small_world):
    ts = build_training_set(small_world, sample_rate=0.1)
    s = ts.stats
    print(
        f"\ntraining-set build: {s.records} events in {s.seconds:.2f} s = {s.events_per_s:,.0f} events/s "
        f"{s.scoring_moments} moments, {len(ts)} examples"
    )
    assert s.events_per_s > 0
    assert ts.X.dtype == np.float32 and ts.X.shape == (len(ts), len(DEFAULT_SPEC.names))


def test_features_match_extract_on_a_replayed_state():
    """Each row equals ``extract`` of the state folded up to that moment (no reordering by the build)."""
    from features.extract import extract

    events = [biz(T0, bid="z")] + [
        act(T0 + i * 37 * 60_000, k, bid="z")
        for i, k in enumerate(["PAGE_VIEW", "CALL", "PAGE_VIEW", "DIRECTIONS"] * 10)
    ]
    events.append(act(T0 + 5 * DAY, bid="z"))
    ts = build_training_set(to_records(events))
    st = None
    want = []
    for e in events:
        st = update(st, e)
        if e.__class__.__name__ == "ActivityEvent" and st.max_event_ms + H <= T0 + 5 * DAY:
            want.append(np.array(extract(st, st.max_event_ms), dtype=np.float32))
    assert np.array_equal(ts.X, np.array(want), equal_nan=True)


def test_a_label_is_emitted_only_once_no_late_conversion_can_change_it():
    """Activity may arrive up to the allowed lateness behind the newest event time. A label whose
    horizon ends within that lateness of the log's end could still gain a conversion, so such an
    example is incomplete (dropped), never labelled 0 and later 1."""
    lateness = DEFAULT_SPEC.allowed_lateness_ms
    a = T0 + 10 * HOUR
    early = [biz(T0, bid="b1"), act(a, "PAGE_VIEW", bid="b1"), act(a + 2 * HOUR, "PAGE_VIEW", bid="b2")]
    head = [
        biz(T0, bid="b2"),
        *early,
        act(a + H + lateness // 2, "PAGE_VIEW", bid="b2"),
    ]  # the log's end, as read first
    late_call = act(a + H - 1, "CALL", bid="b1", eid="late-call")  # delivered after, within the lateness
    first = build_training_set(to_records(head), label_cfg=LabelConfig(horizon_ms=H))
    later = build_training_set(
        to_records(head + [late_call, act(a + 3 * H, "PAGE_VIEW", bid="b2")]), label_cfg=LabelConfig(horizon_ms=H)
    )

    def label(ts):
        return {(b, int(t)): float(y) for b, t, y in zip(ts.business_ids[ts.business], ts.as_of, ts.y, strict=True)}

    got_first, got_later = label(first), label(later)
    assert got_later[("b1", a)] == 1.0  # the late call is in b1's horizon
    assert all(got_later[k] == y for k, y in got_first.items()), (got_first, got_later)
    assert ("b1", a) not in got_first and first.stats.dropped_incomplete >= 1
