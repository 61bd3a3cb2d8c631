"""Publish input events onto the two input topics, keyed by business_id.

Used by ``streamrank generate`` and ``streamrank publish`` (a file log onto topics). Both topics
use kafka-python's default murmur2 partitioner on the same key, the same one the Java client uses,
so a business's profile and activity land in the same partition number (co-partitioning).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.config import Config
from consumer.errors import PublishError
from consumer.io.clients import check_reachable, producer_kwargs
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry


@dataclass
class PublishStats:
    business: int = 0
    activity: int = 0
    seconds: float = 0.0
    partitions: dict[str, set[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.business + self.activity


def publish_records(
    cfg: Config,
    records: Iterable[tuple[str, dict[str, Any]]],
    progress: Callable[[int], None] | None = None,
) -> PublishStats:
    from kafka import KafkaProducer

    check_reachable(cfg.bootstrap)
    registry = FileSchemaRegistry(cfg.schema_registry or None)
    codecs = {
        "business": (cfg.business_topic, AvroCodec(registry, "BusinessEvent", subject=f"{cfg.business_topic}-value")),
        "activity": (cfg.activity_topic, AvroCodec(registry, "ActivityEvent", subject=f"{cfg.activity_topic}-value")),
    }
    producer = KafkaProducer(**producer_kwargs(cfg))
    stats = PublishStats()
    refused = _Refusals()
    t0 = time.perf_counter()
    try:
        for kind, rec in records:
            topic, codec = codecs[kind]
            # Record timestamp = event time, so broker time lookups (replay --from TIME) mean event time.
            future = producer.send(
                topic, key=rec["business_id"].encode(), value=codec.encode(rec), timestamp_ms=rec["event_time"]
            )
            future.add_errback(refused.note, topic, rec)
            if kind == "business":
                stats.business += 1
            else:
                stats.activity += 1
            if progress is not None and stats.total % 50_000 == 0:
                progress(stats.total)
        producer.flush()
    finally:
        producer.close()
    stats.seconds = time.perf_counter() - t0
    refused.raise_if_any()
    return stats


class _Refusals:
    """Records the broker refused. kafka-python's flush() does not raise for them: without this a
    refused record would be lost without a word."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[str, dict[str, Any], BaseException] | None = None

    def note(self, topic: str, rec: dict[str, Any], exc: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = (topic, rec, exc)

    def raise_if_any(self) -> None:
        if self.first is None:
            return
        from kafka.errors import InvalidTimestampError

        topic, rec, exc = self.first
        where = f"first: {topic} business_id={rec.get('business_id')} event_time={rec.get('event_time')}"
        if isinstance(exc, InvalidTimestampError):
            raise PublishError(
                f"the broker refused {self.count} record(s): their timestamp (= event_time) is outside what the topic accepts "
                f"(log.message.timestamp.before.max.ms / log.message.timestamp.after.max.ms; a default Apache Kafka refuses "
                f"timestamps more than 1 hour ahead of its clock); {where}"
            )
        raise PublishError(f"the broker refused {self.count} record(s) ({type(exc).__name__}: {exc}); {where}")
