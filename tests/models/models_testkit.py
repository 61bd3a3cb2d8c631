"""Helpers shared by the models tests: log records as plain tuples, hand-written events, small worlds."""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

from features.events import ActivityEvent, BusinessEvent

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
DAY = 86_400_000


class Rec(NamedTuple):
    rank: int
    partition: int
    offset: int
    event: Any
    key: str | None = None


def partition_of(business_id: str, n: int = 2) -> int:
    return zlib.crc32(business_id.encode()) % n


def to_records(events, partitions: int = 2) -> list[Rec]:
    """Events in delivery order -> records with per-(topic, partition) offsets."""
    offsets: dict[tuple[int, int], int] = {}
    out = []
    for e in events:
        rank = 0 if type(e) is BusinessEvent else 1
        p = partition_of(e.business_id, partitions)
        o = offsets.get((rank, p), 0)
        offsets[(rank, p)] = o + 1
        out.append(Rec(rank, p, o, e))
    return out


def biz(bid: str, t: int, kind: str = "CREATED", *, city: str = "Phoenix", category: str = "Restaurants",
        is_open: bool = True, n: int = 0) -> BusinessEvent:
    return BusinessEvent(
        event_id=f"{bid}-{kind}-{t}-{n}", business_id=bid, event_time=t, kind=kind, name=f"Biz {bid}", city=city,
        state="AZ", categories=(category,), latitude=33.4, longitude=-112.0, price_range=2, is_open=is_open,
    )


def act(bid: str, t: int, kind: str = "PAGE_VIEW", *, eid: str | None = None, user: str | None = "u1") -> ActivityEvent:
    return ActivityEvent(event_id=eid or f"{bid}-{kind}-{t}", business_id=bid, user_id=user, event_time=t, kind=kind,
                         search_id=None, rating=None)


def world_records(businesses: int, days: int, seed: int, cities: int = 3, categories: int = 3) -> list[Rec]:
    from sim.world import WorldConfig, generate

    return to_records(generate(WorldConfig(businesses=businesses, days=days, seed=seed, cities=cities, categories=categories)))
