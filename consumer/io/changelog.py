"""Reading a changelog topic back into partition states (the worker's restore, and the benchmark's).

The changelog's format and the state container are ``consumer.pipeline.store``'s; this module only
reads the topic: each partition to its fetch high-water mark, compacting in code (latest value per
key, tombstones delete), because a broker may not have compacted yet (and Tansu never does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from consumer.io.clients import iter_batches_to_highwater
from consumer.pipeline.store import PartitionState, from_changelog
from features.spec import DEFAULT_SPEC, FeatureSpec


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
    spec: FeatureSpec = DEFAULT_SPEC,
) -> tuple[dict[int, PartitionState], RestoreStats]:
    """Rebuild partitions' states from the changelog: latest value per key, tombstones delete.
    Values are kept encoded until their business is next needed (``PartitionState.restored``).

    One consumer reads all the partitions at once, each to the high-water mark of its first
    fetch (the embedded broker's ``end_offsets`` is wrong). Compaction is done here, in code, not
    trusted to the broker: the embedded broker never compacts.
    """
    t0 = time.perf_counter()
    tps = [TopicPartition(changelog_topic, p) for p in partitions]
    latest: dict[int, dict[str, bytes | None]] = {p: {} for p in partitions}
    records = 0
    if tps:
        consumer = consumer_factory()
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            for tp, recs in iter_batches_to_highwater(
                consumer, tps, poll_ms=100, max_records=20_000, idle_timeout_s=idle_timeout_s
            ):
                # Later records of a key overwrite earlier ones, in the comprehension as in the update.
                latest[tp.partition].update({rec.key.decode(): rec.value for rec in recs})
                records += len(recs)
        finally:
            consumer.close()
    out = {p: from_changelog(p, part, spec, changelog_topic) for p, part in latest.items()}
    entities = sum(len(ps.encoded) for ps in out.values())
    return out, RestoreStats(partitions, records, entities, time.perf_counter() - t0)
