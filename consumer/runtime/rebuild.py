"""Rebuild partitions' feature state from the input topics, when the changelog cannot be used.

When: a restore finds changelog entries this feature set cannot read (written under another
state version or a spec with other state parameters: a new feature set was deployed), or a
business's entry fails to decode on its next event (corrupt). Stopping would be a crash loop (a
restart reads the same changelog); skipping the entry would serve wrong features.

How: read the partition's two input topics from the beginning up to the consumer group's
committed offsets, turn each record into what the worker's poll loop makes of it (``consumer.pipeline.order``:
a tombstone, an event, or a dead letter, queued at the time of the record before it), merge both streams in the
worker's order (``merge_finished``: on a prefix of the log it releases what the live head merge
released) and fold them with the worker's own transition (``process.fold_items``). The state, its
applied offsets and its deletions are then exactly what the worker built up to the commit; the
worker writes them to the changelog and resumes at the committed offsets.

Cost: one read of the partitions' input history, folded at the replay's speed; the log reports
progress (records/s), the metrics ``streamrank_state_rebuilds`` and
``streamrank_state_rebuild_records`` count it, and ``/healthz`` stays live while records are read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumer.pipeline.decode import DeadLetter, Decoder
from consumer.pipeline.order import by_partition
from consumer.pipeline.process import fold_items
from consumer.pipeline.store import PartitionState
from features.order import merge_finished
from features.spec import DEFAULT_SPEC, FeatureSpec

log = logging.getLogger("streamrank.rebuild")

PROGRESS_EVERY_S = 5.0


@dataclass
class RebuildStats:
    partitions: list[int]
    records: int = 0
    entities: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


def fold_partitions(
    by_part: dict[int, list[tuple[int, int, int, Any]]], partitions: list[int], spec: FeatureSpec = DEFAULT_SPEC
) -> dict[int, PartitionState]:
    """Each partition's state after folding its queued items in the worker's order."""
    store: dict[int, PartitionState] = {p: PartitionState(p, spec=spec) for p in partitions}
    outcomes: Counter = Counter()
    for p in partitions:
        # a dead letter changes no state
        fold_items(
            (it for it in merge_finished(by_part.pop(p, [])) if type(it) is not DeadLetter), store, spec, outcomes
        )
        store[p].dirty.clear()  # the caller decides what goes to the changelog
    return store


def rebuild_partitions(
    consumer_factory: Callable[[], Any],
    decoder: Decoder,
    topics: tuple[str, str],
    committed: dict[int, tuple[int | None, int | None]],
    spec: FeatureSpec = DEFAULT_SPEC,
    idle_timeout_s: float = 30.0,
) -> tuple[dict[int, PartitionState], RebuildStats]:
    """The state of each partition in ``committed`` (partition -> committed offsets of the business
    and activity topics; None: nothing committed, nothing to fold) rebuilt from the input topics."""
    from kafka import TopicPartition

    from consumer.io.clients import iter_to_highwater

    t0 = time.perf_counter()
    partitions = sorted(committed)
    stats = RebuildStats(partitions)
    until = {
        TopicPartition(topic, p): off
        for p, offs in committed.items()
        for topic, off in zip(topics, offs, strict=True)
        if off
    }
    records: list[Any] = []
    if until:
        consumer = consumer_factory()
        try:
            tps = sorted(until, key=lambda tp: (tp.topic, tp.partition))
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            shown = time.monotonic()
            for rec in iter_to_highwater(
                consumer, tps, poll_ms=200, max_records=20_000, idle_timeout_s=idle_timeout_s, until=until
            ):
                records.append(rec)
                if time.monotonic() - shown >= PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    elapsed = time.perf_counter() - t0
                    log.info(
                        "rebuilding state",
                        extra={
                            "partitions": partitions,
                            "records": len(records),
                            "of": sum(until.values()),
                            "records_per_s": round(len(records) / elapsed),
                        },
                    )
        finally:
            consumer.close()
    stats.records = len(records)
    store = fold_partitions(by_partition(records, decoder, topics), partitions, spec)
    stats.entities = sum(len(ps.entries) for ps in store.values())
    stats.seconds = time.perf_counter() - t0
    return store, stats


def replace_in_changelog(new: PartitionState, old: PartitionState | None) -> None:
    """Mark what the changelog must now say: every rebuilt entry and deletion, and a null for each
    key the old changelog held that the rebuild did not bring back."""
    new.dirty |= set(new.entries) | set(new.deleted)
    if old is not None:
        new.dirty |= set(old.entries) | set(old.encoded) | set(old.deleted)
