"""Events as their readers see them: log records for the trainer, Kafka-like records for the order
step, decoded items for the worker's ``process``."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from features.events import BusinessEvent
from features.order import ACTIVITY_RANK, BUSINESS_RANK


class Rec(NamedTuple):
    """A log record as ``models.dataset`` reads it (rank: business or activity topic)."""

    rank: int
    partition: int
    offset: int
    event: Any
    key: str | None = None


def partition_of(business_id: str, n: int = 2) -> int:
    return zlib.crc32(business_id.encode()) % n


def to_records(events: Iterable, partitions: int = 2, partition: Callable[[str], int] | None = None) -> list[Rec]:
    """Events in delivery order -> records with per-(topic, partition) offsets. ``partition`` maps a
    business id to its partition (default: crc32 modulo ``partitions``)."""
    part = partition or (lambda bid: partition_of(bid, partitions))
    offsets: dict[tuple[int, int], int] = {}
    out = []
    for e in events:
        rank = BUSINESS_RANK if type(e) is BusinessEvent else ACTIVITY_RANK
        p = part(e.business_id)
        o = offsets.get((rank, p), 0)
        offsets[(rank, p)] = o + 1
        out.append(Rec(rank, p, o, e))
    return out


def world_records(
    businesses: int,
    days: int,
    seed: int,
    cities: int = 3,
    categories: int = 3,
    partition: Callable[[str], int] | None = None,
) -> list[Rec]:
    """A generated world (``sim.world``) as log records."""
    from sim.world import WorldConfig, generate

    cfg = WorldConfig(businesses=businesses, days=days, seed=seed, cities=cities, categories=categories)
    return to_records(generate(cfg), partition=partition)


class KafkaRecord(NamedTuple):
    """The fields of a consumed Kafka record the order step reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def event_codecs(cfg, registry) -> dict[str, tuple[str, Any]]:
    """``{"business"|"activity": (topic, AvroCodec)}``: how ``sim.world.generate_records`` kinds
    are encoded onto ``cfg``'s input topics."""
    from consumer.pipeline.codec import AvroCodec

    return {
        "business": (cfg.business_topic, AvroCodec(registry, "BusinessEvent")),
        "activity": (cfg.activity_topic, AvroCodec(registry, "ActivityEvent")),
    }


def item(event, offset: int, partition: int = 0, topic: str | None = None):
    """``event`` as the order step hands it to ``process`` (a ``Decoded`` merge item)."""
    from consumer.pipeline.decode import Decoded

    if type(event) is BusinessEvent:
        return Decoded(topic or "business-events", BUSINESS_RANK, partition, offset, event)
    return Decoded(topic or "activity-events", ACTIVITY_RANK, partition, offset, event)
