"""The columnar kernel against the Python fold: same outcomes, same states, same feature bits.

The reference is ``features.scoring.apply`` + ``extract_into`` event by event (the worker's path);
the columnar path must give the same outcome per event, the same ``to_bytes`` for every business
after the stream, and bit-identical float32 rows at every scoring moment and at later as-of times.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import columnar as col
from features.errors import FeatureError, InvalidEvent
from features.events import BusinessEvent
from features.extract import extract_into
from features.extract import group_key as py_group_key
from features.scoring import OUTCOMES, apply, as_of
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS, FeatureSpec
from features.state import new_state, to_bytes
from tests.kit.events import T0, L, act, biz, time_order
from tests.kit.oracle import oracle_accept, oracle_features
from tests.kit.strategies import activity_events, business_events

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AS_OF_LATER = st.sampled_from([0, 1, HOUR_MS, DAY_MS, 7 * DAY_MS]) | st.integers(0, 30 * DAY_MS)
NF = len(DEFAULT_SPEC.names)


def python_path(events, spec=DEFAULT_SPEC, states=None):
    """The worker's per-event path: (states, [outcome codes, clocks] per event, feature rows of the
    scoring moments); a clock is ``scoring.as_of`` of the business right after the event."""
    states = {} if states is None else states
    codes, clocks, rows = [], [], []
    for ev in events:
        s, outcome = apply(states.get(ev.business_id), ev, spec)
        states[ev.business_id] = s
        codes.append(OUTCOMES.index(outcome))
        clocks.append(as_of(s))
        if outcome == "scored":
            row = np.empty(len(spec.names), np.float32)
            extract_into(s, as_of(s), row, spec)
            rows.append(row)
    codes_clocks = np.array([codes, clocks], np.int64).reshape(2, -1)
    return states, codes_clocks, np.array(rows, np.float32).reshape(-1, len(spec.names))


def columnar_path(events, spec=DEFAULT_SPEC, table=None, chunk=None):
    """The same stream through the columnar table, in chunks of ``chunk`` events (all at once)."""
    table = col.ColumnarTable(spec) if table is None else table
    out = np.empty((len(events), len(spec.names)), np.float32)
    codes, n = [np.empty((2, 0), np.int64)], 0
    step = chunk or max(len(events), 1)
    for i in range(0, len(events), step):
        f = col.fold_events(table, events[i : i + step], out[n:])
        codes.append(np.array([f.outcomes, f.clocks], np.int64))
        n += f.n
    return table, np.concatenate(codes, axis=1), out[:n]


def assert_same(events, spec=DEFAULT_SPEC, chunk=None):
    states, codes, rows = python_path(events, spec)
    table, got_codes, got_rows = columnar_path(events, spec, chunk=chunk)
    np.testing.assert_array_equal(got_codes, codes)
    assert got_rows.shape == rows.shape
    # bits, not values: NaN == NaN and no tolerance
    np.testing.assert_array_equal(got_rows.view(np.uint32), rows.view(np.uint32))
    assert sorted(table.ids) == sorted(states)
    for bid, s in states.items():
        r = table.rows[bid]
        assert to_bytes(col.to_state(table, r)) == to_bytes(s), col.to_state(table, r).diff(s)
        assert col.group_key(table, r) == py_group_key(s)
    return states, table


def assert_rows_at(states, table, as_of_ms, spec=DEFAULT_SPEC):
    """``extract_rows`` at ``as_of_ms(state)`` equals ``extract_into`` for every business."""
    bids = sorted(states)
    times = np.array([as_of_ms(states[b]) for b in bids], np.int64)
    got = np.empty((len(bids), len(spec.names)), np.float32)
    col.extract_rows(table, np.array([table.rows[b] for b in bids]), times, got)
    want = np.empty_like(got)
    for i, b in enumerate(bids):
        extract_into(states[b], int(times[i]), want[i], spec)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def two_businesses(acts, bizs, more, picks):
    """One history as ``biz-1``, another as ``biz-2``; same event ids in both (distinct keys per row)."""
    other = [dataclasses.replace(e, business_id="biz-2") for e in more]
    return acts + bizs + other + picks


@PROPS
@given(
    data=st.data(),
    acts=activity_events(),
    bizs=business_events(),
    more=activity_events(),
    later=AS_OF_LATER,
)
def test_any_arrival_order_gives_the_python_outcomes_states_and_rows(data, acts, bizs, more, later):
    picks = data.draw(st.lists(st.sampled_from(acts + bizs), max_size=8))  # duplicates, maybe late
    events = data.draw(st.permutations(two_businesses(acts, bizs, more, picks)))
    states, table = assert_same(events)
    assert_rows_at(states, table, lambda s: s.max_event_ms + later)
    assert_rows_at(states, table, lambda s: s.max_event_ms - later)  # clamped up to the clock


@PROPS
@given(data=st.data(), acts=activity_events(), bizs=business_events())
def test_time_order_and_within_lateness_deliveries(data, acts, bizs):
    assert_same(time_order(acts + bizs))
    delays = data.draw(st.lists(st.integers(0, L), min_size=len(acts), max_size=len(acts)))
    shifted = sorted(range(len(acts)), key=lambda i: acts[i].event_time + delays[i])
    assert_same(bizs + [acts[i] for i in shifted])


@PROPS
@given(data=st.data(), acts=activity_events(), bizs=business_events(), later=AS_OF_LATER)
def test_rows_match_the_brute_force_oracle(data, acts, bizs, later):
    arrivals = data.draw(st.permutations(acts + bizs + data.draw(st.lists(st.sampled_from(acts), max_size=5))))
    accepted, late = oracle_accept(arrivals)
    table, _, _ = columnar_path(arrivals)
    st_ = col.to_state(table, 0)
    assert st_.late_dropped == late
    t = st_.max_event_ms + later
    row = np.empty((1, NF), np.float32)
    col.extract_rows(table, np.array([0]), np.array([t]), row)
    # float32 rows: equal up to float32 rounding of the oracle's float64 values
    np.testing.assert_allclose(row[0], oracle_features(accepted, t), rtol=1e-6, atol=1e-6)


@PROPS
@given(data=st.data(), acts=activity_events(), more=activity_events(prefix="m"), bizs=business_events())
def test_from_state_then_keep_folding(data, acts, more, bizs):
    """A state restored into the table (the changelog path) folds on exactly like the original."""
    head = data.draw(st.permutations(acts + bizs))
    tail = data.draw(st.permutations(more + data.draw(st.lists(st.sampled_from(acts), max_size=5))))
    states, _, _ = python_path(head)
    table = col.ColumnarTable()
    for s in states.values():
        r = col.from_state(table, s)
        assert to_bytes(col.to_state(table, r)) == to_bytes(s)
        col.from_state(table, s)  # overwriting a row forgets its old dedup memory
    _, codes, rows = python_path(tail, states=states)
    table, got_codes, got_rows = columnar_path(tail, table=table)
    np.testing.assert_array_equal(got_codes, codes)
    np.testing.assert_array_equal(got_rows.view(np.uint32), rows.view(np.uint32))
    for bid, s in states.items():
        assert to_bytes(col.to_state(table, table.rows[bid])) == to_bytes(s)


def test_lateness_dedup_and_clock_edges():
    """Hand-placed events on the edges the fold branches on, in two businesses sharing event ids."""
    t = T0 + 40 * DAY_MS + 30 * 60_000
    events = [biz(T0, bid="b1"), biz(T0, "CLOSED", bid="b2")]
    for bid in ("b1", "b2"):
        events += [
            act(t, bid=bid, eid="x", user="alice"),
            act(t - L, "CALL", bid=bid, eid="at-watermark", user="bob"),
            act(t - L - 1, bid=bid, eid="just-late"),
            act(t - L, "CALL", bid=bid, eid="at-watermark", user="bob"),  # a duplicate, not late
            act(t + 1, "REVIEW", bid=bid, eid="y", rating=4),
            act(t + L + HOUR_MS, bid=bid, eid="z", user="alice"),  # the clock jumps: x's hour expires
            act(t, bid=bid, eid="x", user="alice"),  # now late: counted as late, not as a duplicate
            act(t + 30 * DAY_MS, "TIP", bid=bid, eid="w", user="carol"),  # decay epochs, ring wipe
            act(t + 400 * DAY_MS, bid=bid, eid="v", user="alice"),  # slot rebase
        ]
    _, codes, _ = python_path(events)
    assert {OUTCOMES[c] for c in codes[0]} == set(OUTCOMES)
    states, table = assert_same(events)
    assert_rows_at(states, table, lambda s: s.max_event_ms + 2 * DAY_MS + 1)


@pytest.fixture(scope="module")
def world():
    from tests.kit.records import world_records

    return [r.event for r in world_records(60, 20, seed=3)]


@pytest.mark.parametrize("chunk", [None, 257], ids=["one-batch", "chunks"])
def test_simulated_world(world, chunk):
    """Activity and business events, late and duplicate deliveries; in chunks the dedup memory is
    compacted many times."""
    assert any(type(e) is BusinessEvent for e in world)
    states, table = assert_same(world, chunk=chunk)
    assert_rows_at(states, table, lambda s: s.max_event_ms + 3 * DAY_MS + 5 * HOUR_MS)


def test_other_spec(world):
    """A spec with two fine windows, no decay, other priors and slots: the geometry is data."""
    spec = FeatureSpec(
        windows_ms=(6 * HOUR_MS, DAY_MS, 3 * DAY_MS),
        allowed_lateness_ms=2 * HOUR_MS,
        distinct_slots=64,
        half_lives_ms=(),
        rate_prior_a=2.0,
        rate_prior_b=3.0,
    )
    states, table = assert_same(world[:8000], spec)
    assert_rows_at(states, table, lambda s: s.max_event_ms + 7 * HOUR_MS, spec)


def test_empty_rows_and_argument_checks():
    table = col.ColumnarTable()
    r = table.row("x")
    assert to_bytes(col.to_state(table, r)) == to_bytes(new_state("x"))
    with pytest.raises(ValueError):
        col.extract_rows(table, np.array([r]), np.array([0]), np.empty((1, NF), np.float64))
    with pytest.raises(InvalidEvent, match="unknown kind"):
        col.activity_batch(table, [act(T0), act(T0, "SNEEZE")])
    batch = col.activity_batch(table, [act(T0)])
    with pytest.raises(ValueError):
        col.fold_batch(table, batch, np.empty((0, NF), np.float32))
    for bad in ({"rows": np.array([2])}, {"kinds": np.array([7])}, {"slots": np.array([256])}, {"times": np.arange(2)}):
        with pytest.raises(FeatureError):
            col.fold_batch(table, batch._replace(**bad))


def test_bench_runs_on_a_tiny_workload(capsys):
    from features import bench_columnar

    bench_columnar.main(["--businesses", "3", "--events", "30", "--runs", "1"])
    out = capsys.readouterr().out
    assert "bit-identical to python: True" in out and "fold_batch on prebuilt arrays" in out
