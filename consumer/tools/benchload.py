"""The bench's load and its latency reader (``consumer.tools.bench``).

The generated world is encoded once (:func:`encode_world`) and produced at full speed or paced
(:func:`publish`, librdkafka when installed: it takes less of the machine from what is measured).
Latency is from each input record's timestamp to its output record's, both wall clock at send
(:func:`latencies`, :func:`prediction_latencies`).
"""

from __future__ import annotations

import time
from typing import Any

from consumer.config import Config


def topic_set(base: Config, tag: str) -> Config:
    """``base`` with topics and a group of its own, named after ``tag`` (fresh for each measured run)."""
    return base.with_overrides(
        business_topic=f"{tag}-business",
        activity_topic=f"{tag}-activity",
        predictions_topic=f"{tag}-predictions",
        dead_letter_topic=f"{tag}-dead-letters",
        changelog_topic=f"{tag}-changelog",
        group_id=f"{tag}-worker",
    )


def encode_world(cfg: Config, world: Any) -> list[tuple[bool, bytes, bytes]]:
    """(is_business, key, Avro value) for every generated record, encoded once for all runs."""
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from sim.world import generate_records

    registry = FileSchemaRegistry(cfg.schema_registry or None)
    codecs = {"business": AvroCodec(registry, "BusinessEvent"), "activity": AvroCodec(registry, "ActivityEvent")}
    return [
        (kind == "business", rec["business_id"].encode(), codecs[kind].encode(rec))
        for kind, rec in generate_records(world)
    ]


def publish(cfg: Config, encoded: list[tuple[bool, bytes, bytes]], rate: float | None = None) -> dict[Any, int]:
    """Produce the records (record timestamp = wall clock at send), paced at ``rate`` per second if
    given. Returns the activity records' timestamps (ms), keyed by (partition, offset) and by value.

    The load generator uses librdkafka when it is installed (a fraction of kafka-python's CPU, so
    less of the machine is taken from what is measured), sends each record as soon as it is due
    and keeps several requests in flight: its own queueing would otherwise count as latency."""
    from consumer.io.transport import CONFLUENT

    t0 = time.perf_counter()

    def pace(i: int) -> None:
        if rate is not None and i % 50 == 0:
            ahead = i / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)

    if CONFLUENT in installed_transports():
        return _publish_confluent(cfg, encoded, pace)
    return _publish_kafka_python(cfg, encoded, pace)


def _publish_confluent(cfg: Config, encoded: list[tuple[bool, bytes, bytes]], pace: Any) -> dict[Any, int]:
    from confluent_kafka import Producer

    from consumer.io.transport import confluent_settings

    bt, at = cfg.business_topic, cfg.activity_topic
    sent: dict[Any, int] = {}
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
        elif msg.topic() == at:
            sent[(msg.partition(), msg.offset())] = sent[msg.value()] = msg.timestamp()[1]

    producer = Producer(
        {
            **confluent_settings(cfg),
            "acks": 1,
            "linger.ms": 0,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    for i, (is_business, key, value) in enumerate(encoded):
        pace(i)
        producer.produce(bt if is_business else at, value, key, on_delivery=delivered)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) or failed:
        raise RuntimeError(f"load generator: {len(failed)} records failed, e.g. {failed[:1]}")
    return sent


def _publish_kafka_python(cfg: Config, encoded: list[tuple[bool, bytes, bytes]], pace: Any) -> dict[Any, int]:
    from kafka import KafkaProducer

    from consumer.io.clients import producer_kwargs

    bt, at = cfg.business_topic, cfg.activity_topic
    sent: dict[Any, int] = {}
    kp = KafkaProducer(**producer_kwargs(cfg, linger_ms=0, max_in_flight_requests_per_connection=5, acks=1))
    futures = []
    try:
        for i, (is_business, key, value) in enumerate(encoded):
            pace(i)
            f = kp.send(bt if is_business else at, key=key, value=value)
            if not is_business:
                futures.append((value, f))
        kp.flush()
    finally:
        kp.close()
    for value, f in futures:
        m = f.get()
        sent[(m.partition, m.offset)] = sent[value] = m.timestamp
    return sent


def latencies(cfg: Config, topic: str, input_time: Any) -> list[float]:
    """ms from each input record's produce time (``input_time(record)``, None: not an input's
    output) to the timestamp of the output record in ``topic`` that it caused."""
    from kafka import KafkaConsumer, TopicPartition

    from consumer.io.clients import consumer_kwargs

    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    out: list[float] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        done: set = set()
        deadline = time.monotonic() + 120
        while len(done) < len(tps) and time.monotonic() < deadline:
            for _tp, recs in consumer.poll(timeout_ms=300, max_records=50_000).items():
                for r in recs:
                    t_in = input_time(r)
                    if t_in is not None:
                        out.append(r.timestamp - t_in)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None and consumer.position(tp) >= hw:
                    done.add(tp)
    finally:
        consumer.close()
    return out


def prediction_latencies(cfg: Config, sent: dict[Any, int]) -> list[float]:
    """ms from each input record's produce time to its prediction record's timestamp."""
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry

    codec = AvroCodec(FileSchemaRegistry(cfg.schema_registry or None), "Prediction")

    def input_time(r: Any) -> int | None:
        p = codec.decode(r.value)
        return sent.get((p["source_partition"], p["source_offset"]))

    return latencies(cfg, cfg.predictions_topic, input_time)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def installed_transports() -> list[str]:
    from consumer.errors import ConfigError
    from consumer.io.transport import TRANSPORTS, check_transport

    out = []
    for tr in TRANSPORTS:
        try:
            out.append(check_transport(tr))
        except ConfigError:
            pass
    return out
