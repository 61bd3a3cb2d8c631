"""The suite's fault-free expectation (``tests.kit.runs.Expected``) is the worker's: it reads the log through
the worker's own order step (``consumer.pipeline.order``), so a tombstone is queued where the worker queues
it and wrongly keyed records are dropped as the worker dead-letters them. The other scenarios
compare a faulty run against this expectation; it must not be wrong itself."""

import pytest
from kafka import KafkaProducer

from consumer.runtime.worker import Worker
from tests.kit.runs import Expected, check_invariant, expected_run
from tests.kit.topics import publish_world

pytestmark = [pytest.mark.reliability, pytest.mark.broker]


def _send(cfg, topic, key, value, timestamp_ms):
    producer = KafkaProducer(bootstrap_servers=cfg.bootstrap)
    md = producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms).get(timeout=30)
    producer.close()
    return md


def test_the_expectation_is_the_workers_with_tombstones_and_wrong_keys(cfg, tally):
    # Between two worlds: a tombstone, and a copy of a real activity record under another key (then
    # under none). The worker deletes the business, and dead-letters both copies.
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from tests.kit.topics import read_topic

    publish_world(cfg, businesses=20, days=2, seed=71)
    last = max(read_topic(cfg, cfg.activity_topic), key=lambda r: r.timestamp)
    rec = AvroCodec(FileSchemaRegistry(cfg.schema_registry), "ActivityEvent").decode(last.value)
    value = AvroCodec(FileSchemaRegistry(cfg.schema_registry), "ActivityEvent").encode(dict(rec, event_id="rekeyed"))
    _send(cfg, cfg.business_topic, b"b000003", None, last.timestamp)
    injected = {}
    for key in (b"b000004" if rec["business_id"] != "b000004" else b"b000005", None):
        md = _send(cfg, cfg.activity_topic, key, value, last.timestamp)
        injected[(md.topic, md.partition, md.offset)] = "key_mismatch"
    publish_world(cfg, businesses=5, days=1, seed=72)
    expected = Expected(cfg, cfg.registry_dir)
    assert expected.outcomes["business_deleted"] == 1 and expected.log.key_mismatch == 2
    preds, _, outcomes = expected_run(cfg, cfg.registry_dir)
    assert preds.keys() == expected.predictions.keys() and outcomes == dict(expected.outcomes)
    stats = Worker(cfg, exit_when_idle_s=2).run()
    assert dict(stats.outcomes) == dict(expected.outcomes, dead_letter=2)
    tally("expectation_with_tombstone_and_wrong_keys", **check_invariant(cfg, expected, injected))
