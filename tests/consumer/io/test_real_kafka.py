"""What the embedded Tansu broker cannot show, shown on Apache Kafka: topic configs read back,
compaction that really runs (changelog and business topic), exact ``offsets_for_times`` and
``end_offsets``, and event-time record timestamps accepted.

Every test here fails when compaction is switched off in the topic configs it creates: each waits
for the broker to have removed records, and asserts it did.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.errors import TopicLayoutError
from consumer.io.changelog import restore_partitions
from consumer.io.clients import check_compacted, consumer_kwargs, create_topics, producer_kwargs, topic_config
from consumer.io.transport import reader
from consumer.pipeline.store import decode_entry
from consumer.runtime.worker import Worker
from consumer.tools.parity import check_parity
from tests.kit.runs import expected_run
from tests.kit.topics import publish_world, read_predictions

pytestmark = [pytest.mark.broker, pytest.mark.real_kafka]

# Compaction as soon as the broker's cleaner looks: tiny segments, any dirt, tombstones kept 0 ms.
EAGER_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.001",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "0",
}


@pytest.fixture
def cfg(kafka_config, registry_copy):
    return kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=50)


def _fresh(cfg, business_configs=None, changelog_configs=None):
    """New topic names; the business topic and the changelog with the configs given."""
    s = uuid.uuid4().hex[:8]
    out = cfg.with_overrides(
        business_topic=f"be-{s}",
        activity_topic=f"ae-{s}",
        predictions_topic=f"p-{s}",
        dead_letter_topic=f"d-{s}",
        changelog_topic=f"c-{s}",
        group_id=f"g-{s}",
    )
    create_topics(
        out,
        [
            (out.business_topic, 2, business_configs or {"cleanup.policy": "compact"}),
            (out.changelog_topic, 2, changelog_configs or {"cleanup.policy": "compact"}),
        ],
    )
    create_topics(out)  # the rest, as `topics create` makes them
    return out


def _offsets_present(cfg, topic: str) -> tuple[int, int]:
    """(records readable, high-water sum) of ``topic``: fewer records than offsets = compacted."""
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen = 0
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            seen += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        return seen, sum(ends.values())
    finally:
        consumer.close()


def _nudge(cfg, topic: str, partitions: int = 2) -> None:
    """Compaction never touches the active segment: one record per partition after segment.ms
    rolls the segment that holds the data (a key of its own, so it changes no business)."""
    producer = KafkaProducer(**producer_kwargs(cfg))
    for p in range(partitions):
        producer.send(topic, key=b"__roll__", value=None, partition=p)
    producer.flush()
    producer.close()


def _wait_compacted(cfg, topic: str, timeout_s: float = 60.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        time.sleep(0.3)
        _nudge(cfg, topic)
        seen, ends = _offsets_present(cfg, topic)
        if seen < ends:
            return seen, ends
        assert time.monotonic() < deadline, (
            f"{topic}: the broker compacted nothing in {timeout_s:.0f}s ({seen} of {ends} offsets still there)"
        )


def test_topics_create_makes_the_business_topic_and_the_changelog_compacted(kafka_config):
    for topic in (kafka_config.business_topic, kafka_config.changelog_topic):
        assert topic_config(kafka_config, topic, "cleanup.policy") == "compact"
    for topic in (kafka_config.activity_topic, kafka_config.predictions_topic, kafka_config.dead_letter_topic):
        assert topic_config(kafka_config, topic, "cleanup.policy") == "delete"
    # The event log keeps its history: its records carry event times, which a 7-day retention
    # would delete minutes after they are published (seen in the outage test's broker).
    assert topic_config(kafka_config, kafka_config.activity_topic, "retention.ms") == "-1"
    assert topic_config(kafka_config, kafka_config.predictions_topic, "retention.ms") == "604800000"


def test_a_worker_refuses_a_changelog_that_is_not_compacted(cfg):
    out = _fresh(cfg, changelog_configs={"cleanup.policy": "delete"})
    with pytest.raises(TopicLayoutError, match=r"cleanup.policy=delete.*cleanup.policy=compact"):
        Worker(out, exit_when_idle_s=2).run()
    assert check_compacted(cfg, cfg.changelog_topic, "changelog") is True


def test_a_restore_from_a_compacted_changelog_is_the_state_of_an_uncompacted_run(cfg):
    out = _fresh(cfg, changelog_configs=EAGER_COMPACTION)
    publish_world(out, businesses=40, days=3, seed=71)
    _, store, _ = expected_run(out, out.registry_dir)
    Worker(out.with_overrides(checkpoint_interval_ms=0), exit_when_idle_s=2).run()  # a changelog write per batch
    seen, ends = _wait_compacted(out, out.changelog_topic)
    restored, stats = restore_partitions(lambda: reader(out, "restore"), out.changelog_topic, [0, 1])
    got = {
        bid: decode_entry(raw).state
        for part in restored.values()
        for bid, raw in part.encoded.items()
        if bid != "__roll__"
    }
    want = {bid: e.state for part in store.values() for bid, e in part.entries.items()}
    # The restore read a log with holes (the cleaner may have removed more since it was counted).
    assert seen < ends and stats.records <= seen
    assert got.keys() == want.keys() and len(got) == 40
    assert got == want


def test_workers_and_the_trainer_agree_on_a_compacted_business_topic_with_tombstones(cfg):
    """The business topic compacted by the broker, three businesses deleted by tombstones: the
    features the worker scores are the trainer's fold of the same log (``streamrank parity``)."""
    out = _fresh(cfg, business_configs=EAGER_COMPACTION)
    publish_world(out, businesses=40, days=3, seed=72)
    producer = KafkaProducer(**producer_kwargs(out))
    for bid in ("b1", "b2", "b3"):
        producer.send(out.business_topic, key=bid.encode(), value=None)
    producer.flush()
    producer.close()
    _wait_compacted(out, out.business_topic)
    Worker(out, exit_when_idle_s=2).run()
    preds = read_predictions(out)
    result = check_parity(out, preds, n=None)
    assert result.sampled == len(preds) > 500
    assert result.mismatch_rate == 0, result.examples


def test_offsets_for_times_and_end_offsets_are_exact_and_replay_trusts_them(cfg):
    from consumer.io.timeindex import offset_for_time

    out = _fresh(cfg)
    publish_world(out, businesses=20, days=2, seed=73)
    consumer = KafkaConsumer(**consumer_kwargs(out, None))
    tps = [TopicPartition(out.activity_topic, p) for p in (0, 1)]
    ends = consumer.end_offsets(tps)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records = []
    while len(records) < sum(ends.values()):
        for recs in consumer.poll(timeout_ms=500).values():
            records.extend(recs)
    assert {tp: max(r.offset for r in records if r.partition == tp.partition) + 1 for tp in tps} == ends
    stamps = sorted({r.timestamp for r in records})
    probes = stamps[:: max(1, len(stamps) // 25)] + [stamps[-1] + 1]
    methods = set()
    for tp in tps:
        part = sorted((r for r in records if r.partition == tp.partition), key=lambda r: r.offset)
        for ts in probes:
            first = next((r.offset for r in part if r.timestamp >= ts), ends[tp])
            answer = consumer.offsets_for_times({tp: ts})[tp]
            assert (answer.offset if answer else ends[tp]) == first, (tp, ts)
            found = offset_for_time(consumer, tp, ts)
            assert found.offset == first
            methods.add(found.method)
    consumer.close()
    assert methods == {"broker"}  # replay's lookup used the broker's answer every time, never the search


def test_event_time_timestamps_are_accepted_from_2005_to_an_hour_ahead(cfg):
    """Yelp history starts in 2004-2005; simulated worlds may run up to the present. A default
    broker accepts any past timestamp and rejects those more than an hour ahead
    (log.message.timestamp.after.max.ms): the publisher names that setting instead of failing
    obscurely."""
    from consumer.errors import PublishError
    from consumer.io.publish import publish_records

    out = _fresh(cfg)
    now = int(time.time() * 1000)
    profile = {
        "business_id": "b1",
        "kind": "CREATED",
        "name": "x",
        "city": "c",
        "state": "s",
        "categories": ["k"],
        "latitude": 0.0,
        "longitude": 0.0,
        "price_range": 1,
        "is_open": True,
    }
    recs = [
        ("business", {**profile, "event_id": "e-2005", "event_time": 1104537600000}),  # 2005-01-01
        ("business", {**profile, "event_id": "e-soon", "event_time": now + 30 * 60_000, "kind": "UPDATED"}),
    ]
    stats = publish_records(out, recs)
    assert stats.total == 2
    future = [("business", {**profile, "event_id": "e-later", "event_time": now + 3 * 3_600_000, "kind": "UPDATED"})]
    with pytest.raises(PublishError, match="log.message.timestamp.after.max.ms"):
        publish_records(out, future)
