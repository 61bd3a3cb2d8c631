"""Decode: Kafka records → events, or dead letters with the reason.

Nothing that arrives on an input topic can stop the worker: every failure becomes a
:class:`DeadLetter` carrying the original bytes and coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from consumer.config import Config
from consumer.errors import DecodeError
from consumer.pipeline.codec import AvroCodec, SchemaRegistry
from features.errors import InvalidEvent
from features.events import ActivityEvent, BusinessEvent
from features.order import ACTIVITY_RANK, BUSINESS_RANK

if TYPE_CHECKING:
    from consumer.pipeline.fastdecode import ActivityColumns


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    reason: str  # a short, stable category (metric label)
    detail: str  # the full message, with coordinates


@dataclass(frozen=True, slots=True)
class Decoded:
    topic: str
    rank: int
    partition: int
    offset: int
    event: BusinessEvent | ActivityEvent


@dataclass(frozen=True, slots=True)
class ActivityBlock:
    """One poll batch of one activity partition, decoded in bulk (``consumer.pipeline.fastdecode``):
    the columns, and the records' coordinates and raw bytes (``ActivityRun.expand`` re-decodes them
    one by one for the record-at-a-time error policy)."""

    topic: str
    partition: int
    cols: ActivityColumns
    offsets: np.ndarray  # int64, one per record
    keys: list[bytes | None]
    values: list[bytes | None]
    decode: Callable[..., Decoded | DeadLetter]  # Decoder.decode


@dataclass(frozen=True, slots=True)
class ActivityRun:
    """A merge item: records ``[lo, hi)`` of a block, consecutive in their stream and all decoded
    in bulk (valid activity events keyed by their business). ``offset`` is the last one's, as a
    checkpoint wants it."""

    block: ActivityBlock
    lo: int
    hi: int

    rank = ACTIVITY_RANK

    @property
    def topic(self) -> str:
        return self.block.topic

    @property
    def partition(self) -> int:
        return self.block.partition

    @property
    def offset(self) -> int:
        return int(self.block.offsets[self.hi - 1])

    def __len__(self) -> int:
        return self.hi - self.lo

    def expand(self) -> list[Decoded | DeadLetter]:
        """The records one by one, decoded by the record decoder (the same events)."""
        b = self.block
        return [
            b.decode(b.topic, b.partition, int(b.offsets[i]), b.keys[i], b.values[i]) for i in range(self.lo, self.hi)
        ]


class Decoder:
    def __init__(self, cfg: Config, registry: SchemaRegistry):
        self._by_topic: dict[str, tuple[int, AvroCodec, Callable[[dict[str, Any]], BusinessEvent | ActivityEvent]]] = {
            cfg.business_topic: (BUSINESS_RANK, AvroCodec(registry, "BusinessEvent"), BusinessEvent.from_record),
            cfg.activity_topic: (ACTIVITY_RANK, AvroCodec(registry, "ActivityEvent"), ActivityEvent.from_record),
        }
        # The schema id of the packaged activity schema: records written with it can be decoded in bulk.
        self.activity_schema_id = self._by_topic[cfg.activity_topic][1].schema_id

    def decode(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, timestamp: int = -1
    ) -> Decoded | DeadLetter:
        rank, codec, build = self._by_topic[topic]
        try:
            record: dict[str, Any] = codec.decode(value, topic, partition, offset)
        except DecodeError as exc:
            return DeadLetter(topic, partition, offset, key, value, timestamp, "undecodable", str(exc))
        try:
            event = build(record)
        except InvalidEvent as exc:
            return DeadLetter(
                topic, partition, offset, key, value, timestamp, "invalid", f"{topic}[{partition}]@{offset}: {exc}"
            )
        if key != event.business_id.encode():
            # A wrong key puts the event in the wrong partition: its state would split across workers.
            # A null key (legal in Kafka) is wrong too, and must not crash the message below.
            return DeadLetter(
                topic,
                partition,
                offset,
                key,
                value,
                timestamp,
                "key_mismatch",
                f"{topic}[{partition}]@{offset}: key {key if key is None else key[:64]!r} is not business_id {event.business_id!r}",
            )
        return Decoded(topic, rank, partition, offset, event)
