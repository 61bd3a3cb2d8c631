"""The broker-free core: process(items, store, scorer) -> predictions."""

import numpy as np
import pytest

from consumer.pipeline.decode import DeadLetter
from consumer.pipeline.predictions import prediction_id
from consumer.pipeline.process import ALREADY_APPLIED, DEAD_LETTER, RowBuffer, Tombstone, process
from consumer.pipeline.store import decode_entry, encode_entry
from features.scoring import BUSINESS_UPDATE, DUPLICATE, NOT_SCORABLE, SCORED
from features.spec import DEFAULT_SPEC
from tests.kit.events import T0, act, biz
from tests.kit.records import item


class SumScorer:
    """Scores a row by the sum of its finite features: enough to see rows reach the scorer."""

    version = "vtest"
    feature_set_version = DEFAULT_SPEC.version

    def __init__(self):
        self.calls = []

    def score(self, X):
        self.calls.append(X.shape[0])
        return np.nansum(X, axis=1).astype(np.float64)


def biz_item(bid, t, kind="CREATED", offset=0):
    """A business event as a merge item (category Food: the group key the tests read)."""
    return item(biz(t, kind, bid=bid, name="n", categories=("Food",), latitude=33.0), offset)


def act_item(bid, t, offset, kind="PAGE_VIEW", eid=None):
    """An activity as a merge item; its id is unique per offset unless ``eid`` names it."""
    return item(act(t, kind, bid=bid, eid=eid or f"{bid}-{t}-{offset}", user="u1"), offset)


def test_one_prediction_per_scored_activity_and_one_model_call_per_batch():
    scorer = SumScorer()
    items = [
        biz_item("b1", T0),
        act_item("b1", T0 + 1, 0),
        act_item("b1", T0 + 2, 1, "CALL"),
        act_item("b2", T0 + 3, 2),
    ]
    out = process(items, {}, scorer)
    assert scorer.calls == [2]
    assert [p["source_offset"] for p in out.predictions] == [0, 1]
    assert out.outcomes == {BUSINESS_UPDATE: 1, SCORED: 2, NOT_SCORABLE: 1}
    p = out.predictions[1]
    assert p["prediction_id"] == prediction_id("activity-events", 0, 1, "vtest")
    assert p["model_version"] == "vtest" and p["feature_set_version"] == DEFAULT_SPEC.version
    assert p["group_key"] == "Phoenix, AZ|Food" and p["event_time"] == T0 + 2
    assert p["score"] == float(np.nansum(out.features[1]))


def test_prediction_ids_are_deterministic_and_model_specific():
    a = prediction_id("t", 1, 42, "v1")
    assert a == prediction_id("t", 1, 42, "v1")
    assert (
        len({a, prediction_id("t", 1, 43, "v1"), prediction_id("t", 2, 42, "v1"), prediction_id("t", 1, 42, "v2")}) == 4
    )


def test_closed_business_is_not_scored_and_reopened_is():
    items = [
        biz_item("b1", T0),
        biz_item("b1", T0 + 10, "CLOSED", 1),
        act_item("b1", T0 + 20, 0),
        biz_item("b1", T0 + 30, "REOPENED", 2),
        act_item("b1", T0 + 40, 1),
    ]
    out = process(items, {}, SumScorer())
    assert [p["source_offset"] for p in out.predictions] == [1]
    assert out.outcomes[NOT_SCORABLE] == 1


def test_duplicates_are_not_scored_twice():
    items = [biz_item("b1", T0), act_item("b1", T0 + 1, 0, eid="same"), act_item("b1", T0 + 1, 1, eid="same")]
    out = process(items, {}, SumScorer())
    assert len(out.predictions) == 1 and out.outcomes[DUPLICATE] == 1


def test_dead_letters_pass_through_and_every_item_has_an_outcome():
    dl = DeadLetter("activity-events", 0, 5, b"k", b"junk", 0, "undecodable", "activity-events[0]@5: bad")
    items = [
        biz_item("b1", T0),
        dl,
        act_item("b1", T0 + 1, 0),
        Tombstone("business-events", 0, 1, "b1"),
        act_item("b1", T0 + 2, 1),
    ]
    out = process(items, {}, SumScorer())
    assert out.dead_letters == [dl]
    assert sum(out.outcomes.values()) == len(items)
    assert out.outcomes[DEAD_LETTER] == 1 and out.outcomes["business_deleted"] == 1
    assert out.deleted == [(0, "b1")]
    # After the tombstone the business is unknown again: not scored.
    assert [p["source_offset"] for p in out.predictions] == [0]


def test_restored_state_skips_records_it_already_reflects():
    store = {}
    items = [biz_item("b1", T0), act_item("b1", T0 + 1, 0), act_item("b1", T0 + 2, 1)]
    process(items, store, SumScorer())
    # The changelog round-trip keeps the applied offsets; a re-read of the same records is skipped.
    entry = decode_entry(encode_entry(store[0].entries["b1"]))
    assert entry.applied == [0, 1]
    restored = {0: type(store[0])(0, {"b1": entry})}
    again = process(items + [act_item("b1", T0 + 3, 2)], restored, SumScorer())
    assert again.outcomes[ALREADY_APPLIED] == 3
    assert [p["source_offset"] for p in again.predictions] == [2]
    assert restored[0].entries["b1"].state == _fold_all(items + [act_item("b1", T0 + 3, 2)])


def test_restored_entries_stay_encoded_until_their_business_is_next_seen():
    from consumer.pipeline.store import PartitionState

    store = {}
    items = [biz_item("b1", T0), act_item("b1", T0 + 1, 0), biz_item("b2", T0, offset=1), act_item("b2", T0 + 1, 1)]
    process(items, store, SumScorer())
    restored = {0: PartitionState(0, encoded={b: encode_entry(e) for b, e in store[0].entries.items()})}
    assert len(restored[0]) == 2 and not restored[0].entries
    # Re-read records are recognised through the lazily decoded entry; a new one is folded into it.
    again = process(items[:2] + [act_item("b1", T0 + 3, 2)], restored, SumScorer())
    assert again.outcomes[ALREADY_APPLIED] == 2 and [p["source_offset"] for p in again.predictions] == [2]
    assert set(restored[0].entries) == {"b1"} and set(restored[0].encoded) == {"b2"}  # b2 never decoded
    assert restored[0].entries["b1"].state == _fold_all(items[:2] + [act_item("b1", T0 + 3, 2)])
    # A tombstone deletes a state that was never decoded.
    process([Tombstone("business-events", 0, 2, "b2")], restored, SumScorer())
    assert len(restored[0]) == 1 and "b2" in restored[0].dirty


def _fold_all(items):
    store = {}
    process(items, store, SumScorer())
    return store[0].entries["b1"].state


def test_row_buffer_grows_without_losing_rows():
    buf = RowBuffer(len(DEFAULT_SPEC.names), capacity=2)
    items = [biz_item("b1", T0)] + [act_item("b1", T0 + i, i) for i in range(1, 6)]
    out = process(items, {}, SumScorer(), rows=buf)
    assert len(out.predictions) == 5 and len(buf.rows) >= 5
    unbuffered = process(items, {}, SumScorer(), rows=RowBuffer(len(DEFAULT_SPEC.names), capacity=64))
    assert [p["feature_hash"] for p in out.predictions] == [p["feature_hash"] for p in unbuffered.predictions]


def _checkpoint_and_restore(store):
    """What a crash right after a checkpoint leaves: the changelog's latest values, restored."""
    from consumer.pipeline.store import from_changelog

    return {p: from_changelog(p, dict(part.drain_changes())) for p, part in store.items()}


def test_a_deleted_business_is_written_as_a_marker_and_records_before_its_tombstone_stay_applied():
    items = [
        biz_item("b1", T0),
        act_item("b1", T0 + 1, 0),
        act_item("b1", T0 + 2, 1),
        Tombstone("business-events", 0, 1, "b1"),
        biz_item("b2", T0, offset=2),
        act_item("b2", T0 + 3, 2),
    ]
    store = {}
    first = process(items, store, SumScorer())
    assert "b1" not in store[0].entries and store[0].deleted == {"b1": [1, 1]}
    # A crash after the changelog write, before the commit: everything is re-read, nothing re-scored,
    # and no state comes back for the deleted business.
    restored = _checkpoint_and_restore(store)
    assert restored[0].deleted == {"b1": [1, 1]}
    again = process(items, restored, SumScorer())
    assert again.outcomes == {ALREADY_APPLIED: len(items)} and not again.predictions
    assert set(restored[0].entries) | set(restored[0].encoded) == {"b2"} and not restored[0].dirty
    # Once the offsets are committed, the marker gives way to a real tombstone (null).
    assert restored[0].forget_deleted(1, 1) == [] and restored[0].forget_deleted(2, 2) == ["b1"]
    assert len(first.predictions) == 3


def test_a_business_recreated_after_its_tombstone_keeps_its_new_state_when_the_tombstone_is_re_read():
    items = [
        biz_item("b1", T0),
        act_item("b1", T0 + 1, 0),
        Tombstone("business-events", 0, 1, "b1"),
        biz_item("b1", T0 + 5, offset=2),
        act_item("b1", T0 + 6, 1),
    ]
    store = {}
    process(items, store, SumScorer())
    restored = _checkpoint_and_restore(store)
    again = process(items, restored, SumScorer())
    assert again.outcomes == {ALREADY_APPLIED: len(items)}
    assert restored[0].decode_all()["b1"].state == store[0].entries["b1"].state
    assert store[0].entries["b1"].applied == [2, 1]


def test_a_record_that_breaks_the_fold_is_dead_lettered_and_its_business_state_kept(monkeypatch):
    """The error policy for records (consumer.pipeline.process.process_isolated): a legal-looking event
    that makes our own code raise is dead-lettered with the reason "unprocessable" and its
    coordinates; its business's state is as before it; every other record is processed."""
    import consumer.pipeline.process as proc
    from consumer.pipeline.process import UNPROCESSABLE, process_isolated
    from features.state import event_key

    real_fold = proc.fold_batch
    bad_key = event_key("b1-bad")

    def fold_batch(table, batch, *args):
        folded = real_fold(table, batch, *args)  # the state changes half-way, then the bug: it must not keep them
        if bad_key in batch.keys.tolist():
            raise ZeroDivisionError("a bug in feature code")
        return folded

    monkeypatch.setattr(proc, "fold_batch", fold_batch)
    bad = act_item("b1", T0 + 2, 2, eid="b1-bad")
    items = [
        biz_item("b1", T0),
        act_item("b1", T0 + 1, 1),
        bad,
        act_item("b1", T0 + 3, 3),
        biz_item("b2", T0 + 4, offset=1),
        act_item("b2", T0 + 5, 4),
    ]
    store = {}
    out = process_isolated(items, store, SumScorer())
    assert [(d.topic, d.partition, d.offset, d.reason) for d in out.dead_letters] == [
        ("activity-events", 0, 2, UNPROCESSABLE)
    ]
    assert "activity-events[0]@2" in out.dead_letters[0].detail and "ZeroDivisionError" in out.dead_letters[0].detail
    assert [p["source_offset"] for p in out.predictions] == [1, 3, 4]
    # b1's state is the fold of its other records: the bad one's changes (its dedup key too) undone
    assert store[0].entries["b1"].state == _fold_all(items[:2] + items[3:4])
    assert sum(out.outcomes.values()) == len(items) and out.outcomes[DEAD_LETTER] == 1
    # Same outputs as processing the batch without the bad record, apart from the dead letter.
    clean_store = {}
    clean = process([i for i in items if i is not bad], clean_store, SumScorer())
    assert [p["score"] for p in out.predictions] == [p["score"] for p in clean.predictions]


def test_a_bug_that_hits_every_record_stops_instead_of_dead_lettering_everything(monkeypatch):
    import consumer.pipeline.process as proc
    from consumer.errors import ProcessingHalted
    from consumer.pipeline.process import process_isolated

    def fold_batch(*args):
        raise RuntimeError("every record")

    monkeypatch.setattr(proc, "fold_batch", fold_batch)
    items = [act_item("b1", T0 + i, i) for i in range(100)]
    with pytest.raises(ProcessingHalted, match="consecutive records"):
        process_isolated(items, {}, SumScorer())
    # Small batches: the count spans them (a batch of 20 alone would never reach the limit).
    failed = 0
    with pytest.raises(ProcessingHalted):
        for start in range(0, 100, 20):
            failed = process_isolated(items[start : start + 20], {}, SumScorer(), failed_before=failed).failed_in_a_row


def _python_fold(items, spec=DEFAULT_SPEC):
    """The reference: ``scoring.apply`` and ``extract_into`` item by item (what ``process`` did before
    the columnar kernel), per (partition, business); a tombstone drops the state."""
    from features.extract import extract_into, group_key
    from features.scoring import apply, as_of
    from features.state import new_state

    states, scored = {}, []
    for it in items:
        if isinstance(it, Tombstone):
            states.pop((it.partition, it.business_id), None)
            continue
        key = (it.partition, it.event.business_id)
        state, outcome = apply(states.get(key) or new_state(key[1], spec), it.event, spec)
        states[key] = state
        if outcome == SCORED:
            row = np.empty(len(spec.names), np.float32)
            extract_into(state, as_of(state), row, spec)
            scored.append(((it.partition, it.offset), group_key(state), as_of(state), row))
    return states, scored


@pytest.mark.parametrize("batch", [1, 37, 500, 100_000])
def test_the_columnar_fold_matches_the_python_fold_across_partitions_batches_and_tombstones(batch):
    """Three partitions interleaved in each batch, tombstones (their businesses come back as new
    states): predictions in item order, the same feature bits, group keys and as-of times, and the
    same states, as the Python fold of the same items."""
    import zlib

    from tests.kit.records import world_records

    recs = world_records(24, 4, 17, partition=lambda b: zlib.crc32(b.encode()) % 3)
    items = [item(r.event, r.offset, r.partition) for r in recs]
    top = {p: max(r.offset for r in recs if r.rank == 0 and r.partition == p) for p in range(3)}
    bids = sorted({r.event.business_id for r in recs})
    for k, at in enumerate((len(items) // 3, len(items) // 2, 2 * len(items) // 3)):
        b = bids[k]
        p = zlib.crc32(b.encode()) % 3
        top[p] += 1
        items.insert(at, Tombstone("business-events", p, top[p], b))
    states, want = _python_fold(items)
    store, got, rows = {}, [], []
    for i in range(0, len(items), batch):
        out = process(items[i : i + batch], store, SumScorer())
        got += out.predictions
        if out.features is not None:
            rows.append(np.array(out.features))
    assert [(p["source_partition"], p["source_offset"]) for p in got] == [w[0] for w in want]
    assert [(p["group_key"], p["as_of"]) for p in got] == [(w[1], w[2]) for w in want]
    X = np.vstack(rows)
    assert X.view(np.uint32).tolist() == np.vstack([w[3] for w in want]).view(np.uint32).tolist()
    assert {(p, b): e.state for p, part in store.items() for b, e in part.entries.items()} == states
