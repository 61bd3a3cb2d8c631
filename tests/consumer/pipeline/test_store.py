"""The changelog's value format and the partition state: corrupt values raise ``CorruptChangelog``
(a ``StaleState``: the worker rebuilds the partition), naming the partition and key."""

from __future__ import annotations

import dataclasses

import pytest

from consumer.errors import CorruptChangelog, StaleState
from consumer.pipeline.decode import Decoded
from consumer.pipeline.process import Tombstone, process, process_isolated
from consumer.pipeline.store import HEADER, Entry, applied_offsets, decode_entry, encode_entry, from_changelog
from features.events import ActivityEvent
from features.order import ACTIVITY_RANK
from features.spec import DEFAULT_SPEC
from features.state import new_state, to_bytes, update

T0 = 1_767_225_600_000
TOPIC = "streamrank-changelog"
HOUR = 3_600_000


def _value(bid: str = "b1") -> bytes:
    state = new_state(bid)
    for i in range(5):
        update(state, ActivityEvent(f"e{i}", bid, f"u{i}", T0 + i * 60_000, "PAGE_VIEW", None, None))
    return encode_entry(Entry(state, [3, 7]))


CORRUPT = {
    "truncated body": _value()[:-3],
    "trailing bytes": _value() + b"\0",
    "not our framing": b"XYZ" + _value()[3:],
    "shorter than the header": b"SR1\0\0",
}


def test_a_good_value_round_trips():
    entry = decode_entry(_value())
    assert entry.applied == [3, 7] and entry.state.business_id == "b1"
    assert applied_offsets(_value()) == [3, 7]


@pytest.mark.parametrize("what", list(CORRUPT))
def test_a_corrupt_value_raises_corrupt_changelog(what):
    with pytest.raises(CorruptChangelog):
        decode_entry(CORRUPT[what])


def test_a_header_too_short_for_its_offsets_raises_corrupt_changelog():
    with pytest.raises(CorruptChangelog, match="header"):
        applied_offsets(b"SR1\0")


def test_restoring_a_corrupt_body_names_topic_partition_and_key():
    ps = from_changelog(4, {"b1": CORRUPT["truncated body"], "b2": _value("b2")}, topic=TOPIC)
    assert ps.stale == 0  # the headers are fine: only the decode finds the body corrupt
    with pytest.raises(CorruptChangelog, match=rf"^{TOPIC}\[4\] key 'b1': corrupt state record") as info:
        ps.restored("b1")
    assert (info.value.partition, info.value.business_id, info.value.topic) == (4, "b1", TOPIC)
    assert isinstance(info.value, StaleState)  # the worker's treatment: rebuild the partition
    assert isinstance(info.value.__cause__, Exception)
    assert ps.restored("b2").state.business_id == "b2"


def test_another_feature_set_is_stale_not_corrupt():
    other = dataclasses.replace(DEFAULT_SPEC, distinct_slots=512)
    value = HEADER.pack(b"SR1", 1, 2) + to_bytes(new_state("b1", other))
    with pytest.raises(StaleState, match="another feature spec") as info:
        decode_entry(value)
    assert not isinstance(info.value, CorruptChangelog)


def test_a_tombstone_for_a_corrupt_entry_raises_corrupt_changelog():
    ps = from_changelog(1, {"b1": _value()}, topic=TOPIC)
    ps.encoded["b1"] = b"SR1\0\0"  # what a bit flip in the length would leave
    with pytest.raises(CorruptChangelog, match=rf"^{TOPIC}\[1\] key 'b1'"):
        ps.delete("b1", 10)


def test_process_hands_a_corrupt_entry_to_the_worker_not_to_the_dead_letters():
    """The worker catches ``StaleState`` and rebuilds the partition from the input topics (see
    ``Worker._loop``); ``process_isolated`` must not dead-letter the record for it."""
    ev = ActivityEvent("e9", "b1", "u9", T0 + HOUR, "PAGE_VIEW", None, None)
    item = Decoded("activity-events", ACTIVITY_RANK, 0, 20, ev)
    for run in (process, process_isolated):
        store = {0: from_changelog(0, {"b1": CORRUPT["truncated body"]}, topic=TOPIC)}
        with pytest.raises(CorruptChangelog):
            run([item], store, None)
    store = {0: from_changelog(0, {"b1": b"SR1" + CORRUPT["shorter than the header"]}, topic=TOPIC)}
    with pytest.raises(CorruptChangelog):
        process([Tombstone("business-events", 0, 5, "b1")], store, None)


def test_a_changelog_written_with_another_spec_restores_under_that_spec():
    """A worker running a non-default feature set reads back its own changelog: the entry decodes
    with the partition's spec, not the default one (it used to raise StaleState on the business's
    next event, and every restart rebuilt the partition from the input topics)."""
    from features.spec import FeatureSpec

    spec = FeatureSpec(distinct_slots=128)
    assert spec != DEFAULT_SPEC
    state = new_state("b1", spec)
    update(state, ActivityEvent("e1", "b1", "u1", T0, "PAGE_VIEW", None, None), spec)
    part = from_changelog(0, {"b1": encode_entry(Entry(state, [-1, 0]))}, spec, TOPIC)
    assert part.stale == 0
    entry = part.restored("b1")
    assert entry is not None and entry.state == state and entry.applied == [-1, 0]
