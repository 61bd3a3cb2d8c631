"""Read the input topics as a finished log: every record up to a snapshot of the high-water marks.

The trainer and replays consume through this (``models`` never talks to Kafka). The end of the
log is the high-water mark reported by the first fetch of each partition, not ``end_offsets``,
which the embedded broker answers wrongly. Records arrive as :class:`LogRecord` with their
coordinates so the caller can apply the same per-partition order as the live worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from consumer.codec import AvroCodec, FileSchemaRegistry
from consumer.config import Config
from consumer.errors import DecodeError, StreamrankError
from consumer.kafka import check_reachable, consumer_kwargs, iter_to_highwater
from features.errors import InvalidEvent
from features.events import ActivityEvent, BusinessEvent
from features.order import ACTIVITY_RANK, BUSINESS_RANK


@dataclass(frozen=True, slots=True)
class LogRecord:
    rank: int  # BUSINESS_RANK or ACTIVITY_RANK
    partition: int
    offset: int
    event: BusinessEvent | ActivityEvent | None  # None: a tombstone on the business topic
    key: str | None = None  # the record key (business_id); what a tombstone deletes


@dataclass
class LogRange:
    """What a read covered: per-partition [start, end) offsets and the event-time span."""

    offsets: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    min_event_time: int | None = None
    max_event_time: int | None = None
    records: int = 0
    undecodable: int = 0
    invalid: int = 0

    def observe(self, topic: str, partition: int, offset: int) -> None:
        span = self.offsets.setdefault(topic, {}).setdefault(partition, [offset, offset + 1])
        span[0] = min(span[0], offset)
        span[1] = max(span[1], offset + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "offsets": {t: {str(p): v for p, v in sorted(parts.items())} for t, parts in self.offsets.items()},
            "min_event_time": self.min_event_time,
            "max_event_time": self.max_event_time,
            "records": self.records,
            "undecodable": self.undecodable,
            "invalid": self.invalid,
        }


def read_input_log(
    cfg: Config,
    log_range: LogRange | None = None,
    progress: Callable[[int, int], None] | None = None,
    idle_timeout_s: float = 30.0,
    keys: bool = False,
) -> Iterator[LogRecord]:
    """Yield every decodable input record up to the high-water marks seen at start.

    Undecodable or invalid records are counted in ``log_range`` and skipped: the worker sends
    them to the dead-letter topic; the trainer must not stop on them.

    ``keys``: also fill ``LogRecord.key`` for events (not only tombstones), so a caller can drop
    records whose key is not their business_id, as the worker's decoder does (replays).
    """
    from kafka import KafkaConsumer, TopicPartition

    check_reachable(cfg.bootstrap)
    rng = log_range if log_range is not None else LogRange()
    registry = FileSchemaRegistry(cfg.schema_registry or None)
    decoders = {
        cfg.business_topic: (BUSINESS_RANK, AvroCodec(registry, "BusinessEvent"), BusinessEvent.from_record),
        cfg.activity_topic: (ACTIVITY_RANK, AvroCodec(registry, "ActivityEvent"), ActivityEvent.from_record),
    }
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None, max_poll_records=5000))
    try:
        tps = []
        for topic in cfg.input_topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                raise StreamrankError(f"topic {topic} does not exist (run `streamrank topics create`)")
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        on_poll = None if progress is None else (lambda pending: progress(rng.records, pending))
        records = iter_to_highwater(consumer, tps, poll_ms=500, max_records=5000, idle_timeout_s=idle_timeout_s, on_poll=on_poll)
        try:
            for rec in records:
                rank, codec, build = decoders[rec.topic]
                rng.observe(rec.topic, rec.partition, rec.offset)
                rng.records += 1
                if rec.value is None and rank == BUSINESS_RANK:
                    if rec.key:
                        yield LogRecord(rank, rec.partition, rec.offset, None, rec.key.decode("utf-8", "replace"))
                    continue
                try:
                    event = build(codec.decode(rec.value, rec.topic, rec.partition, rec.offset))
                except DecodeError:
                    rng.undecodable += 1
                    continue
                except InvalidEvent:
                    rng.invalid += 1
                    continue
                t = event.event_time
                if rng.min_event_time is None or t < rng.min_event_time:
                    rng.min_event_time = t
                if rng.max_event_time is None or t > rng.max_event_time:
                    rng.max_event_time = t
                if keys:
                    key = None if rec.key is None else rec.key.decode("utf-8", "replace")
                    yield LogRecord(rank, rec.partition, rec.offset, event, key)
                else:
                    yield LogRecord(rank, rec.partition, rec.offset, event)
        except TimeoutError as exc:
            raise StreamrankError(f"reading the input log: {exc}") from exc
    finally:
        consumer.close()
