"""The order step: Kafka records of the two input topics → the items the per-partition merge takes.

Every path that applies the input log - the live worker, a state rebuild, replay, parity, the
trainer (through ``consumer.io.inputlog``) and the tests' expected runs - turns records into merge
items here, so they cannot disagree on what a record is or where it goes in the merge:

- a null value with a key on the business topic is a :class:`~consumer.pipeline.process.Tombstone`;
- anything else is decoded (``consumer.pipeline.decode``): an event whose key is its business_id, else a
  :class:`~consumer.pipeline.decode.DeadLetter` (undecodable, invalid, key_mismatch);
- each is pushed as ``(rank, time, offset, item)`` (``features.order``'s merge key). An event's
  time is its event time. A tombstone or dead letter has none, and takes the time of the record
  before it in its stream (0 at the start): it keeps its place among its own topic's records, and
  a tombstone is applied after everything queued before it.

The time of the last record of each stream (partition, topic) is kept between calls, because the
live worker receives a stream a poll at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any

import numpy as np

from consumer.pipeline.decode import ActivityBlock, ActivityRun, Decoded, Decoder
from consumer.pipeline.fastdecode import decode_activity
from consumer.pipeline.process import Tombstone
from features.order import ACTIVITY_RANK, BUSINESS_RANK
from features.spec import FeatureSpec

Push = Callable[[int, int, int, Any], None]  # (rank, time, offset, item): HeadMerger.push, or a list's
PushRun = Callable[..., None]  # HeadMerger.push_run


class RecordOrder:
    """Merge items from records; remembers each stream's last event time (see the module doc)."""

    __slots__ = ("_decode", "_ranks", "_last", "_bulk")

    def __init__(self, decoder: Decoder, topics: tuple[str, str], spec: FeatureSpec | None = None):
        """``spec``: decode activity in bulk for that feature set (``push`` with ``push_run``)."""
        self._decode = decoder.decode
        self._ranks = {topics[BUSINESS_RANK]: BUSINESS_RANK, topics[ACTIVITY_RANK]: ACTIVITY_RANK}
        self._last: dict[tuple[int, int], int] = {}  # (partition, rank) -> last event time pushed
        self._bulk = (decoder.activity_schema_id, spec) if spec is not None else None

    def push(
        self, topic: str, partition: int, records: Iterable[Any], push: Push, push_run: PushRun | None = None
    ) -> None:
        """Push the merge item of each record of ``topic[partition]`` (in offset order, following
        the records of earlier calls). The worker's hot path: one tight loop per poll and partition.
        With ``push_run`` (and a ``spec`` at construction), activity records are decoded in bulk
        and pushed as runs; the records the bulk decoder leaves go one by one as before."""
        rank = self._ranks[topic]
        key = (partition, rank)
        if push_run is not None and self._bulk is not None and rank == ACTIVITY_RANK:
            self._push_block(topic, partition, list(records), push, push_run)
            return
        last_t = self._last.get(key, 0)
        decode = self._decode
        business = rank == BUSINESS_RANK
        for r in records:
            if business and r.value is None and r.key:
                item: Any = Tombstone(topic, partition, r.offset, r.key.decode("utf-8", "replace"))
            else:
                item = decode(topic, partition, r.offset, r.key, r.value, r.timestamp)
                if type(item) is Decoded:
                    last_t = item.event.event_time
            push(rank, last_t, r.offset, item)
        self._last[key] = last_t

    def _push_block(self, topic: str, partition: int, records: list[Any], push: Push, push_run: PushRun) -> None:
        assert self._bulk is not None
        if not records:
            return
        schema_id, spec = self._bulk
        keys = [r.key for r in records]
        values = [r.value for r in records]
        cols = decode_activity(values, keys, schema_id, spec)
        offsets = np.fromiter((r.offset for r in records), np.int64, len(records))
        block = ActivityBlock(topic, partition, cols, offsets, keys, values, self._decode)
        times = cols.event_time
        make = partial(ActivityRun, block)
        key = (partition, ACTIVITY_RANK)
        last_t = self._last.get(key, 0)
        lo = 0
        for i in np.flatnonzero(~cols.fast).tolist():  # the records left to the record decoder
            if i > lo:
                push_run(ACTIVITY_RANK, times, offsets, lo, i, make)
                last_t = int(times[i - 1])
            r = records[i]
            item = self._decode(topic, partition, r.offset, r.key, r.value, r.timestamp)
            if type(item) is Decoded:
                last_t = item.event.event_time
            push(ACTIVITY_RANK, last_t, r.offset, item)
            lo = i + 1
        if lo < len(records):
            push_run(ACTIVITY_RANK, times, offsets, lo, len(records), make)
            last_t = int(times[-1])
        self._last[key] = last_t

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the streams of ``partitions`` (revoked, or about to be re-read from the commit)."""
        for p in partitions:
            self._last.pop((p, BUSINESS_RANK), None)
            self._last.pop((p, ACTIVITY_RANK), None)


def ordered(records: Iterable[Any], order: RecordOrder) -> Iterator[tuple[int, tuple[int, int, int, Any]]]:
    """``(partition, (rank, time, offset, item))`` for a stream of records of any partitions (a
    finished log read record by record), each partition's records in offset order."""
    out: list[tuple[int, int, int, Any]] = []
    collect = lambda *entry: out.append(entry)  # noqa: E731
    for (topic, partition), run in groupby(records, key=attrgetter("topic", "partition")):
        order.push(topic, partition, run, collect)
        for entry in out:
            yield partition, entry
        out.clear()


def by_partition(
    records: Iterable[Any], decoder: Decoder, topics: tuple[str, str]
) -> dict[int, list[tuple[int, int, int, Any]]]:
    """A finished log's merge items per partition, as the worker would have queued them; the
    input of ``features.order.merge_finished``."""
    parts: dict[int, list[tuple[int, int, int, Any]]] = {}
    for partition, entry in ordered(records, RecordOrder(decoder, topics)):
        parts.setdefault(partition, []).append(entry)
    return parts
