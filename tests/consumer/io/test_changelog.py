"""The state restore (``consumer.io.changelog.restore_partitions``): the latest value per key,
tombstones and deletion markers, stale values counted, each partition read to the high-water
mark of its first fetch and no further; on a broker, the same states with either transport from
a changelog several fetches long."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

import pytest
from kafka import KafkaProducer, TopicPartition

from consumer.config import TRANSPORTS
from consumer.io.changelog import restore_partitions
from consumer.io.clients import create_topics, iter_batches_to_highwater, iter_to_highwater, producer_kwargs
from consumer.io.transport import reader
from consumer.pipeline.store import Entry, deletion_marker, encode_entry
from features.state import new_state

TOPIC = "c-test"


class Rec(NamedTuple):
    key: bytes | None
    value: bytes | None
    offset: int
    partition: int


class ScriptedReader:
    """A reader whose polls return the batches given, then nothing; a partition's high-water
    mark is known once a poll has returned it (as after a real fetch)."""

    def __init__(self, polls: list[dict[int, list[tuple[bytes, bytes | None]]]], highwater: dict[int, int]):
        self._polls = list(polls)
        self._hw = highwater
        self._next: dict[int, int] = {}
        self.paused: set[int] = set()
        self.closed = False

    def assign(self, tps: list[Any]) -> None:
        self._next = {tp.partition: 0 for tp in tps}

    def seek_to_beginning(self, *tps: Any) -> None:
        pass

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Rec]]:
        if not self._polls:
            return {}
        out = {}
        for p, kvs in self._polls.pop(0).items():
            first = self._next[p]
            out[TopicPartition(TOPIC, p)] = [Rec(k, v, first + i, p) for i, (k, v) in enumerate(kvs)]
            self._next[p] = first + len(kvs)
        return out

    def highwater(self, tp: Any) -> int | None:
        return self._hw[tp.partition] if self._next.get(tp.partition) else None

    def position(self, tp: Any) -> int:
        return self._next[tp.partition]

    def pause(self, *tps: Any) -> None:
        self.paused.update(tp.partition for tp in tps)

    def close(self) -> None:
        self.closed = True


def _value(bid: str, applied: int) -> bytes:
    return encode_entry(Entry(new_state(bid), [applied, -1]))


STALE = b"XYZ" + _value("b4", 0)[3:]  # not our framing: counted, kept


def _script() -> tuple[list[dict[int, list[tuple[bytes, bytes | None]]]], dict[int, int]]:
    polls: list[dict[int, list[tuple[bytes, bytes | None]]]] = [
        {0: [(b"b1", _value("b1", 0)), (b"b2", _value("b2", 1)), (b"b1", None)], 1: [(b"c1", _value("c1", 0))]},
        {
            # offsets 3-5 of partition 0 are below its mark (6); 6 and 7 were written after it
            0: [(b"b3", deletion_marker([5, 9])), (b"b2", _value("b2", 4)), (b"b4", STALE)]
            + [(b"b5", _value("b5", 6)), (b"b2", None)],
            1: [(b"c2", _value("c2", 1))],
        },
    ]
    return polls, {0: 6, 1: 2}


def test_a_restore_keeps_the_latest_value_per_key_up_to_the_first_high_water_mark():
    polls, hw = _script()
    consumer = ScriptedReader(polls, hw)
    parts, stats = restore_partitions(lambda: consumer, TOPIC, [0, 1])
    p0, p1 = parts[0], parts[1]
    # b1: deleted by its tombstone; b2: its later value, not the tombstone past the mark; b5: past the mark
    assert p0.encoded == {"b2": _value("b2", 4), "b4": STALE}
    assert p0.deleted == {"b3": [5, 9]}
    assert p0.stale == 1
    assert p1.encoded == {"c1": _value("c1", 0), "c2": _value("c2", 1)} and p1.stale == 0 and not p1.deleted
    assert (stats.partitions, stats.records, stats.entities) == ([0, 1], 8, 4)
    assert consumer.paused == {0, 1} and consumer.closed


def test_batches_to_the_high_water_mark_are_the_records_cut_where_the_record_reader_stops():
    tps = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    polls, hw = _script()
    # Partition 1 goes on; partition 0, done and paused, still returns a batch (one fetched
    # before the pause), wholly past its mark: never yielded.
    hw[1] = 3
    polls.append({0: [(b"late", _value("late", 8))], 1: [(b"c3", _value("c3", 2))]})

    def consumer() -> ScriptedReader:
        c = ScriptedReader([dict(p) for p in polls], hw)
        c.assign(tps)
        return c

    batches = list(iter_batches_to_highwater(consumer(), tps, poll_ms=0, idle_timeout_s=5))
    records = list(iter_to_highwater(consumer(), tps, poll_ms=0, idle_timeout_s=5))
    assert [r for _, recs in batches for r in recs] == records
    assert all(recs and all(r.partition == tp.partition for r in recs) for tp, recs in batches)
    assert [(r.partition, r.offset) for r in records] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 1),
        (1, 2),
    ]


def test_a_restore_of_no_partitions_opens_no_consumer():
    def never() -> Any:
        raise AssertionError("no consumer needed")

    parts, stats = restore_partitions(never, TOPIC, [])
    assert parts == {} and stats.records == stats.entities == 0


@pytest.fixture
def long_changelog(kafka_config):
    """A changelog of 2 partitions, about 12 MB each (more than one restore fetch of 8 MB per
    partition): 3 writes of 40 kB per business, some businesses ending in a tombstone or a deletion
    marker. Returns the config, the topic, what a restore must give, and the record count."""
    topic = f"c-long-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_config, [(topic, 2, {"cleanup.policy": "compact"})])
    pad = bytes(range(256)) * 160
    want: dict[int, dict[str, bytes | None]] = {0: {}, 1: {}}
    producer = KafkaProducer(**producer_kwargs(kafka_config))
    n = 0
    try:
        for round_ in range(3):
            for i in range(100):
                bid, p = f"b{i:03d}", i % 2
                if round_ == 2 and i % 10 == 3:
                    value: bytes | None = None
                elif round_ == 2 and i % 10 == 7:
                    value = deletion_marker([round_, i])
                else:
                    value = _value(bid, round_) + pad
                producer.send(topic, key=bid.encode(), value=value, partition=p)
                want[p][bid] = value
                n += 1
        producer.flush()
    finally:
        producer.close()
    return kafka_config, topic, want, n


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_either_transport_restores_a_changelog_several_fetches_long(long_changelog, transport):
    cfg, topic, want, n = long_changelog
    parts, stats = restore_partitions(lambda: reader(cfg.with_overrides(transport=transport), "restore"), topic, [0, 1])
    for p in (0, 1):
        ps = parts[p]
        assert ps.encoded == {k: v for k, v in want[p].items() if v is not None and len(v) > 19}
        assert ps.deleted == {k: [2, int(k[1:])] for k, v in want[p].items() if v is not None and len(v) == 19}
        assert ps.stale == 0
    assert stats.records == n == 300
    assert stats.entities == 80
