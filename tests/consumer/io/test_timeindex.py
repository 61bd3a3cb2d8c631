"""Offset-by-time lookup: the broker's answer is verified against record timestamps, and searched
for when wrong. Unit tests drive the lookup logic through an in-memory stand-in for the consumer
(what a correct or a wrong broker would answer); the broker test runs on the session broker."""

import random
from dataclasses import dataclass

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import UnsupportedVersionError
from kafka.structs import OffsetAndTimestamp

from consumer.io.clients import consumer_kwargs, create_topics, producer_kwargs
from consumer.io.timeindex import offset_for_time
from tests.kit.events import T0

LATE = 600_000  # the largest lateness in the generated logs below


@dataclass
class _Rec:
    offset: int
    timestamp: int


class LogConsumer:
    """Just the consumer calls the lookup makes, over an in-memory partition.

    ``broker``: "right" answers offsets_for_times by the Kafka rule, "wrong" answers ``wrong_offset``,
    "error" raises like a broker without ListOffsets v1.
    """

    def __init__(self, timestamps, offsets=None, broker="right", wrong_offset=0, fetch=50):
        self.recs = [_Rec(o, t) for o, t in zip(offsets or range(len(timestamps)), timestamps, strict=True)]
        self.high = (self.recs[-1].offset + 1) if self.recs else 0
        self.broker, self.wrong_offset, self.fetch = broker, wrong_offset, fetch
        self.pos = 0
        self.polls = 0

    def assign(self, tps):
        self.tp = tps[0]

    def beginning_offsets(self, tps):
        return {tps[0]: self.recs[0].offset if self.recs else 0}

    def seek(self, tp, offset):
        self.pos = offset

    def position(self, tp):
        return self.pos

    def highwater(self, tp):
        return self.high if self.polls else None

    def poll(self, timeout_ms=0, max_records=500):
        self.polls += 1
        got = [r for r in self.recs if r.offset >= self.pos][: min(max_records, self.fetch)]
        if got:
            self.pos = got[-1].offset + 1
        elif self.pos < self.high:
            self.pos = self.high
        return {self.tp: got} if got else {}

    def offsets_for_times(self, query):
        ts = query[self.tp]
        if self.broker == "error":
            raise UnsupportedVersionError("ListOffsets v1")
        if self.broker == "wrong":
            return {self.tp: OffsetAndTimestamp(self.wrong_offset, 0, -1)}
        first = next((r for r in self.recs if r.timestamp >= ts), None)
        return {self.tp: None if first is None else OffsetAndTimestamp(first.offset, first.timestamp, -1)}


def expected_offset(recs, ts):
    """The rule, by brute force: the first record whose timestamp >= ts, else the high-water mark."""
    return next((r.offset for r in recs if r.timestamp >= ts), recs[-1].offset + 1 if recs else 0)


def near_monotonic(n, seed, late_share=0.05):
    rnd = random.Random(seed)
    return [T0 + i * 1000 - (rnd.randint(1_000, LATE) if rnd.random() < late_share else 0) for i in range(n)]


TP = TopicPartition("activity", 0)


def test_a_correct_broker_answer_is_accepted_after_verification():
    c = LogConsumer(near_monotonic(20_000, seed=1), broker="right")
    ts = T0 + 15_000_500
    got = offset_for_time(c, TP, ts, max_lateness_ms=LATE)
    assert got.method == "broker" and not got.searched
    assert got.offset == got.broker_offset == expected_offset(c.recs, ts)
    assert got.probes == 1  # the record at the answer; then the backward scan to an anchor ...
    assert got.records_read < 5_000  # ... which stops near ts - LATE, not at the start of the log


def test_a_wrong_broker_answer_is_replaced_by_a_search():
    c = LogConsumer(near_monotonic(3000, seed=2), broker="wrong", wrong_offset=0)
    ts = T0 + 2_222_200
    got = offset_for_time(c, TP, ts, max_lateness_ms=LATE)
    assert got.broker_offset == 0 and got.method == "search"
    assert got.offset == expected_offset(c.recs, ts)


def test_a_broker_that_cannot_answer_falls_back_to_the_search():
    c = LogConsumer(near_monotonic(500, seed=3), broker="error")
    got = offset_for_time(c, TP, T0 + 123_456, max_lateness_ms=LATE)
    assert got.method == "search" and "UnsupportedVersion" in got.broker_error
    assert got.offset == expected_offset(c.recs, T0 + 123_456)


@pytest.mark.parametrize("broker", ["right", "wrong"])
def test_the_rule_holds_on_many_near_monotonic_logs(broker):
    """Late records (up to LATE behind) make single-record checks ambiguous; the anchor scan must
    still find the first record >= ts, for times before, inside and after the log."""
    rnd = random.Random(7)
    for case in range(150):
        n = rnd.randint(1, 400)
        recs_ts = near_monotonic(n, seed=case, late_share=rnd.choice([0.0, 0.05, 0.3]))
        ts = T0 + rnd.randint(-5_000, n * 1000 + 5_000)
        c = LogConsumer(recs_ts, broker=broker, wrong_offset=rnd.randint(0, n), fetch=rnd.choice([1, 7, 50]))
        got = offset_for_time(c, TP, ts, max_lateness_ms=LATE)
        assert got.offset == expected_offset(c.recs, ts), (case, n, ts - T0, got)
        if broker == "right":
            assert got.method == "broker"


def test_a_broker_answer_that_is_a_later_boundary_is_rejected():
    # ts is crossed at offset 3, falls back below (a late record) at 4, crossed again at 5.
    stamps = [T0, T0 + 1000, T0 + 2000, T0 + 5000, T0 + 3000, T0 + 6000, T0 + 7000]
    c = LogConsumer(stamps, broker="wrong", wrong_offset=5)
    got = offset_for_time(c, TP, T0 + 4000, max_lateness_ms=LATE)
    assert (got.offset, got.method) == (3, "search")


def test_offset_gaps_and_times_past_the_end():
    # A compacted or transactional log: offsets with holes.
    offsets = [0, 1, 5, 6, 9, 20, 21]
    c = LogConsumer([T0 + i * 1000 for i in range(7)], offsets=offsets, broker="wrong", wrong_offset=2)
    assert offset_for_time(c, TP, T0 + 2500, max_lateness_ms=0).offset == 6
    assert offset_for_time(c, TP, T0 + 2000, max_lateness_ms=0).offset == 5
    past = offset_for_time(c, TP, T0 + 99_000, max_lateness_ms=0)
    assert past.offset == 22  # the high-water mark: no record that recent
    right = LogConsumer([T0 + i * 1000 for i in range(7)], offsets=offsets, broker="right")
    none = offset_for_time(right, TP, T0 + 99_000, max_lateness_ms=0)
    assert (none.offset, none.method, none.broker_offset) == (22, "broker", None)


def test_an_empty_partition_resolves_to_its_start():
    got = offset_for_time(LogConsumer([]), TP, T0)
    assert (got.offset, got.low, got.high) == (0, 0, 0)


@pytest.mark.tansu_smoke
@pytest.mark.broker
def test_on_the_broker_the_lookup_finds_the_first_record_at_or_after_the_time(kafka_config, broker):
    cfg = kafka_config
    topic = f"ti-{cfg.activity_topic}"
    create_topics(cfg, [(topic, 1, {})])
    stamps = near_monotonic(3000, seed=11)
    producer = KafkaProducer(**producer_kwargs(cfg))
    for i, t in enumerate(stamps):
        producer.send(topic, key=b"k", value=str(i).encode(), partition=0, timestamp_ms=t)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None, max_partition_fetch_bytes=16 * 1024))
    try:
        tp = TopicPartition(topic, 0)
        recs = [_Rec(i, t) for i, t in enumerate(stamps)]
        for ts in (T0 + 1_000_500, T0 + 2_345_000, T0 - 1, T0 + 10**9):
            got = offset_for_time(consumer, tp, ts, max_lateness_ms=LATE)
            want = expected_offset(recs, ts)
            assert got.offset == want, (ts - T0, got)
            if broker.kind == "tansu" and got.broker_offset != want:
                # The embedded broker's known-wrong answer: the search path must have been taken.
                assert got.method == "search"
        # At least the mid-log lookup must have met a wrong answer on Tansu (else this test
        # would not exercise the fallback on the real broker).
        mid = offset_for_time(consumer, tp, T0 + 1_000_500, max_lateness_ms=LATE)
        if broker.kind == "tansu":
            assert mid.broker_offset != mid.offset and mid.searched
        else:
            assert mid.method == "broker"
    finally:
        consumer.close()
