"""The inbox: records received and not yet processed, in the order they will be processed.

Each poll's records are decoded and turned into merge items (``consumer.pipeline.order``) and
queued in their partition's head merge (``features.order.HeadMerger``). An item is released once
its place is decided: the head of one input topic can go when the other topic has an item queued
behind it, or is caught up (fetched up to its high-water mark). Releases take turns across
partitions (round robin), so one busy partition cannot starve the others.

The inbox also remembers, per input TopicPartition, the offset after the last record received:
where a rewind or a rebalance must seek back to when queued items are dropped
(:meth:`first_unprocessed`).
"""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

from consumer.pipeline.order import RecordOrder
from features.order import ACTIVITY_RANK, BUSINESS_RANK, HeadMerger


class Inbox:
    def __init__(self, consumer: Any, order: RecordOrder, topics: tuple[str, str]):
        self._consumer = consumer
        self._order = order
        self._business_topic, self._activity_topic = topics
        self.mergers: dict[int, HeadMerger] = {}
        self.received: dict[Any, int] = {}  # TopicPartition -> offset after the last record received
        self.backlog = False  # the last release filled its budget: decided items may still be queued
        self._turn = -1  # round robin: the partition index the last release started at

    def push(self, tp: Any, records: list[Any]) -> None:
        """Decode and queue one poll's records of ``tp`` (in offset order)."""
        merger = self.mergers.get(tp.partition)
        if merger is None:
            merger = self.mergers[tp.partition] = HeadMerger()
        self._order.push(tp.topic, tp.partition, records, merger.push, merger.push_run)  # decode, key check, queue time
        self.received[tp] = records[-1].offset + 1

    def release(self, budget: int) -> list[Any]:
        """Up to ``budget`` items whose order is decided, taken round-robin across partitions."""
        released: list[Any] = []
        n = 0  # records released (a bulk-decoded run is one item of several records)
        parts = sorted(p for p, m in self.mergers.items() if m.pending())
        if parts:
            self._turn = (self._turn + 1) % len(parts)
            for p in parts[self._turn :] + parts[: self._turn]:
                room = budget - n
                if room <= 0:
                    break
                merger = self.mergers[p]
                before = merger.pending()
                b_done = self._caught_up(self._business_topic, p)
                a_done = self._caught_up(self._activity_topic, p)
                released.extend(merger.pop_ready(b_done, a_done, room))
                n += before - merger.pending()
        self.backlog = n == budget
        return released

    def _caught_up(self, topic: str, partition: int) -> bool:
        tp = TopicPartition(topic, partition)
        hw = self._consumer.highwater(tp)
        if hw is None:
            return False
        nxt = self.received.get(tp)
        if nxt is None:
            nxt = self.received[tp] = self._consumer.position(tp, timeout_ms=5000) or 0
        return nxt >= hw

    def fully_merged(self) -> bool:
        return all(m.pending() == 0 for m in self.mergers.values())

    def first_unprocessed(self, partition: int) -> list[tuple[Any, int]]:
        """Per input TopicPartition of ``partition``, the offset of its first record not yet
        processed: the oldest still queued, else the next to fetch (none if nothing was received)."""
        merger = self.mergers.get(partition)
        out = []
        for topic, rank in ((self._business_topic, BUSINESS_RANK), (self._activity_topic, ACTIVITY_RANK)):
            tp = TopicPartition(topic, partition)
            offset = merger.first_offset(rank) if merger is not None else None
            if offset is None:
                offset = self.received.get(tp)
            if offset is not None:
                out.append((tp, offset))
        return out

    def forget(self, partitions: list[int]) -> None:
        """Drop what was received for ``partitions`` (revoked, or about to be re-read)."""
        for p in partitions:
            self.mergers.pop(p, None)
        self._order.forget(partitions)
        for tp in [tp for tp in self.received if tp.partition in partitions]:
            del self.received[tp]
