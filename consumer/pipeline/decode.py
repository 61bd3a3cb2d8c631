"""Decode: Kafka records → events, or dead letters with the reason.

Nothing that arrives on an input topic can stop the worker: every failure becomes a
:class:`DeadLetter` carrying the original bytes and coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumer.config import Config
from consumer.errors import DecodeError
from consumer.pipeline.codec import AvroCodec, SchemaRegistry
from features.errors import InvalidEvent
from features.events import ActivityEvent, BusinessEvent
from features.order import ACTIVITY_RANK, BUSINESS_RANK


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


class Decoder:
    def __init__(self, cfg: Config, registry: SchemaRegistry):
        self._by_topic: dict[str, tuple[int, AvroCodec, Callable[[dict[str, Any]], BusinessEvent | ActivityEvent]]] = {
            cfg.business_topic: (BUSINESS_RANK, AvroCodec(registry, "BusinessEvent"), BusinessEvent.from_record),
            cfg.activity_topic: (ACTIVITY_RANK, AvroCodec(registry, "ActivityEvent"), ActivityEvent.from_record),
        }

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
