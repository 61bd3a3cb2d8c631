"""Per-partition feature state, its changelog, and restore on assignment.

Each input partition owns the states of the businesses keyed to it. After every batch, the
changed states go to the changelog topic (same partition number, key = business_id; compacted on
real Kafka). Each changelog value is stamped with the input offsets the state reflects, one per
input topic, so a record re-read after a crash (state written, offsets not yet committed) is
recognised and not applied twice.

Changelog value layout: ``b"SR1" | business offset (int64) | activity offset (int64) | state bytes``.
A null value is a tombstone (the business's state was dropped).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from features.state import BusinessState, from_bytes, to_bytes

HEADER = struct.Struct(">3sqq")
MAGIC = b"SR1"


@dataclass(slots=True)
class Entry:
    state: BusinessState
    # Highest input offset applied to this state, per input topic rank (business, activity).
    applied: list[int] = field(default_factory=lambda: [-1, -1])


def encode_entry(entry: Entry) -> bytes:
    return HEADER.pack(MAGIC, entry.applied[0], entry.applied[1]) + to_bytes(entry.state)


def decode_entry(data: bytes) -> Entry:
    magic, b_off, a_off = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"changelog value does not start with {MAGIC!r}")
    return Entry(from_bytes(data[HEADER.size:]), [b_off, a_off])


@dataclass
class PartitionState:
    partition: int
    entries: dict[str, Entry] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    # Restored from the changelog and not needed yet: the changelog value, decoded on the
    # business's next event (``restored``). A restore then costs the read, not a decode of every
    # business, and businesses that stay quiet are never decoded.
    encoded: dict[str, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        """Businesses held, decoded or not."""
        return len(self.entries) + len(self.encoded)

    def restored(self, business_id: str) -> Entry | None:
        """The restored entry of a business not in ``entries`` yet, decoded and moved there."""
        data = self.encoded.pop(business_id, None)
        if data is None:
            return None
        entry = self.entries[business_id] = decode_entry(data)
        return entry

    def delete(self, business_id: str) -> bool:
        """Drop a business's state; whether there was one."""
        return self.entries.pop(business_id, None) is not None or self.encoded.pop(business_id, None) is not None

    def decode_all(self) -> dict[str, Entry]:
        """Every entry, decoded (for inspection: tests, the benchmark)."""
        for business_id in list(self.encoded):
            self.restored(business_id)
        return self.entries

    def drain_dirty(self) -> Iterator[tuple[str, Entry]]:
        dirty, self.dirty = self.dirty, set()
        for business_id in sorted(dirty):
            yield business_id, self.entries[business_id]


@dataclass
class RestoreStats:
    partitions: list[int]
    records: int
    entities: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.entities / self.seconds if self.seconds > 0 else float("inf")


def restore_partitions(
    consumer_factory: Callable[[], Any],
    changelog_topic: str,
    partitions: list[int],
    idle_timeout_s: float = 30.0,
) -> tuple[dict[int, PartitionState], RestoreStats]:
    """Rebuild partitions' states from the changelog: latest value per key, tombstones delete.
    Values are kept encoded until their business is next needed (``PartitionState.restored``).

    One consumer reads all the partitions at once, each to the high-water mark of its first
    fetch (the embedded broker's ``end_offsets`` is wrong). Compaction is done here, in code, not
    trusted to the broker: the embedded broker never compacts.
    """
    from kafka import TopicPartition

    from consumer.kafka import iter_to_highwater

    t0 = time.perf_counter()
    tps = [TopicPartition(changelog_topic, p) for p in partitions]
    latest: dict[int, dict[str, bytes | None]] = {p: {} for p in partitions}
    records = 0
    if tps:
        consumer = consumer_factory()
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            for rec in iter_to_highwater(consumer, tps, poll_ms=100, max_records=20_000, idle_timeout_s=idle_timeout_s):
                latest[rec.partition][rec.key.decode()] = rec.value
                records += 1
        finally:
            consumer.close()
    out: dict[int, PartitionState] = {}
    entities = 0
    for p, part in latest.items():
        ps = out[p] = PartitionState(p)
        for key, value in part.items():
            if value is not None:
                if value[:3] != MAGIC:  # the full check is the decode, on the business's next event
                    raise ValueError(f"{changelog_topic}[{p}] key {key!r}: changelog value does not start with {MAGIC!r}")
                ps.encoded[key] = value
        entities += len(ps.encoded)
    return out, RestoreStats(partitions, records, entities, time.perf_counter() - t0)
