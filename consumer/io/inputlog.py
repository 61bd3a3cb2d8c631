"""Read the input topics as a finished log: every record up to a snapshot of the high-water marks.

The trainer and replays consume through this (``models`` never talks to Kafka). The end of the
log is the high-water mark reported by the first fetch of each partition, not ``end_offsets``,
which the embedded broker answers wrongly. Records arrive as :class:`LogRecord` with their
coordinates and merge time, after the worker's own order step (``consumer.pipeline.order``), so every
reader of the log drops what the worker dead-letters and applies the worker's per-partition order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from consumer.config import Config
from consumer.errors import InputLogError, TopicNotFound
from consumer.io.clients import check_reachable, consumer_kwargs, iter_to_highwater
from consumer.pipeline.codec import FileSchemaRegistry
from consumer.pipeline.decode import Decoded, Decoder
from consumer.pipeline.order import RecordOrder, ordered
from consumer.pipeline.process import Tombstone
from features.events import ActivityEvent, BusinessEvent


@dataclass(frozen=True, slots=True)
class LogRecord:
    rank: int  # BUSINESS_RANK or ACTIVITY_RANK
    partition: int
    offset: int
    event: BusinessEvent | ActivityEvent | None  # None: a tombstone on the business topic
    key: str | None = None  # the record key: the event's business_id (checked), or what a tombstone deletes
    # Where the worker's merge queues it (``consumer.pipeline.order``): the event time; for a tombstone, the
    # time of the record before it in its stream. None on records that did not come from Kafka.
    time: int | None = None

    @property
    def merge_time(self) -> int:
        """The time the worker's merge orders this record by (records read from Kafka carry it)."""
        if self.time is None:
            raise ValueError(f"record {self.partition}@{self.offset} has no merge time: it did not come from Kafka")
        return self.time

    def merge_entry(self, topics: tuple[str, str]) -> tuple[int, int, int, Decoded | Tombstone]:
        """``(rank, time, offset, item)`` as the worker pushes it into its merge."""
        topic = topics[self.rank]
        if self.event is None:
            # The reader dead-letters keyless tombstones (RecordOrder): a tombstone here has its key.
            return (
                self.rank,
                self.merge_time,
                self.offset,
                Tombstone(topic, self.partition, self.offset, self.key or ""),
            )
        return (
            self.rank,
            self.merge_time,
            self.offset,
            Decoded(topic, self.rank, self.partition, self.offset, self.event),
        )


@dataclass
class LogRange:
    """What a read covered: per-partition [start, end) offsets and the event-time span."""

    offsets: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    min_event_time: int | None = None
    max_event_time: int | None = None
    records: int = 0
    # What the worker dead-letters (``consumer.pipeline.decode``'s reasons), skipped by every reader of the log.
    undecodable: int = 0
    invalid: int = 0
    key_mismatch: int = 0

    def dead_letter(self, reason: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)

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
            "key_mismatch": self.key_mismatch,
        }


def read_input_log(
    cfg: Config,
    log_range: LogRange | None = None,
    progress: Callable[[int, int], None] | None = None,
    idle_timeout_s: float = 30.0,
) -> Iterator[LogRecord]:
    """Yield every input record the worker folds (events and tombstones), up to the high-water
    marks seen at start, in topic order per partition.

    Each record goes through the worker's own order step (``consumer.pipeline.order``), so the trainer,
    replays and parity skip exactly what the worker dead-letters (undecodable, invalid, a key that
    is not the business_id), counted per reason in ``log_range``, and queue tombstones where the
    worker does (``LogRecord.time``).
    """
    from kafka import KafkaConsumer, TopicPartition

    check_reachable(cfg.bootstrap)
    rng = log_range if log_range is not None else LogRange()
    topics = cfg.input_topics
    order = RecordOrder(Decoder(cfg, FileSchemaRegistry(cfg.schema_registry or None)), topics)
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None, max_poll_records=5000))
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                raise TopicNotFound(topic, "run `streamrank topics create`")
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        on_poll = None if progress is None else (lambda pending: progress(rng.records, pending))
        records = iter_to_highwater(
            consumer, tps, poll_ms=500, max_records=5000, idle_timeout_s=idle_timeout_s, on_poll=on_poll
        )
        try:
            for p, (rank, t, off, item) in ordered(records, order):
                rng.observe(topics[rank], p, off)
                rng.records += 1
                kind = type(item)
                if kind is Decoded:
                    ev = item.event
                    if rng.min_event_time is None or t < rng.min_event_time:
                        rng.min_event_time = t
                    if rng.max_event_time is None or t > rng.max_event_time:
                        rng.max_event_time = t
                    yield LogRecord(rank, p, off, ev, ev.business_id, t)
                elif kind is Tombstone:
                    yield LogRecord(rank, p, off, None, item.business_id, t)
                else:
                    rng.dead_letter(item.reason)
        except TimeoutError as exc:
            raise InputLogError(f"reading the input log: {exc}") from exc
    finally:
        consumer.close()


@dataclass(frozen=True)
class KafkaPartitionLog:
    """The input topics as a ``models.buildstore.PartitionLog``: the trainer's streaming build reads
    one partition at a time, its business records first (a compacted topic: small), then its
    activity records as a stream, each from the offset the build's checkpoint names up to the
    high-water mark of the read's first fetch. Records pass the worker's order step, as in
    :func:`read_input_log`. Picklable: a build process gets ``part(p)`` and opens its own consumers.
    """

    cfg: Config
    only: tuple[int, ...] | None = None
    idle_timeout_s: float = 30.0

    def partitions(self) -> list[int]:
        if self.only is not None:
            return list(self.only)
        from kafka import KafkaConsumer

        check_reachable(self.cfg.bootstrap)
        consumer = KafkaConsumer(**consumer_kwargs(self.cfg, None))
        try:
            found = []
            for topic in self.cfg.input_topics:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    raise TopicNotFound(topic, "run `streamrank topics create`")
                found.append(sorted(parts))
        finally:
            consumer.close()
        if found[0] != found[1]:
            raise InputLogError(
                f"the input topics are not co-partitioned: {self.cfg.input_topics[0]} has {len(found[0])} "
                f"partitions, {self.cfg.input_topics[1]} {len(found[1])}; a business's events must share a partition"
            )
        return found[1]

    def part(self, partition: int) -> KafkaPartitionLog:
        return replace(self, only=(partition,))

    def read(self, partition: int, start: tuple[int, int]) -> tuple[list[LogRecord], Iterator[LogRecord]]:
        return list(self._records(0, partition, start[0])), self._records(1, partition, start[1])

    def _records(self, rank: int, partition: int, start: int) -> Iterator[LogRecord]:
        from kafka import KafkaConsumer, TopicPartition

        topics = self.cfg.input_topics
        order = RecordOrder(Decoder(self.cfg, FileSchemaRegistry(self.cfg.schema_registry or None)), topics)
        consumer = KafkaConsumer(**consumer_kwargs(self.cfg, None, max_poll_records=5000))
        tp = TopicPartition(topics[rank], partition)
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            records = iter_to_highwater(
                consumer, [tp], poll_ms=500, max_records=5000, idle_timeout_s=self.idle_timeout_s
            )
            for p, (r, t, off, item) in ordered(records, order):
                if type(item) is Decoded:
                    yield LogRecord(r, p, off, item.event, item.event.business_id, t)
                elif type(item) is Tombstone:
                    yield LogRecord(r, p, off, None, item.business_id, t)
                # else: what the worker dead-letters; every reader of the log skips it
        except TimeoutError as exc:
            raise InputLogError(f"reading {tp.topic}[{partition}] from offset {start}: {exc}") from exc
        finally:
            consumer.close()
