"""The order in which one partition's business and activity events are applied.

Business and activity events for one business live in two topics, co-partitioned. Kafka fixes
the order within each topic-partition but not the interleaving across the two, which depends on
fetch timing. To make live runs, replays and the trainer agree record for record, every path
applies a partition's two streams in one deterministic order: a two-way merge on the heads by
``(event_time, rank, offset)`` (business events first on ties, so a CREATED precedes activity
stamped with the same millisecond).

A head may only be released when the other stream's head is known, or when the other stream is
known to have nothing more (caught up to its high-water mark, or at the end of a log). The live
worker tells the merger which streams are caught up; a replay of a finished log says both are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

BUSINESS_RANK = 0
ACTIVITY_RANK = 1


class HeadMerger(Generic[T]):
    """Merge two FIFO streams by their heads' keys; keys are ``(event_time, rank, offset)``."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: tuple[deque[tuple[tuple[int, int, int], T]], deque[tuple[tuple[int, int, int], T]]] = (
            deque(),
            deque(),
        )

    def push(self, rank: int, event_time: int, offset: int, item: T) -> None:
        self._queues[rank].append(((event_time, rank, offset), item))

    def pending(self) -> int:
        return len(self._queues[0]) + len(self._queues[1])

    def queued(self, rank: int) -> int:
        return len(self._queues[rank])

    def first_offset(self, rank: int) -> int | None:
        """Offset of the oldest item still queued from stream ``rank``; None when it is empty."""
        q = self._queues[rank]
        return q[0][0][2] if q else None

    def pop_ready(self, business_done: bool, activity_done: bool) -> Iterator[T]:
        """Release items while the order is decided. ``*_done``: that stream has nothing unread."""
        b, a = self._queues
        while True:
            if b and a:
                yield (b if b[0][0] <= a[0][0] else a).popleft()[1]
            elif b and activity_done:
                yield b.popleft()[1]
            elif a and business_done:
                yield a.popleft()[1]
            else:
                return


def merge_finished(items: Iterable[tuple[int, int, int, T]]) -> Iterator[T]:
    """Merge a finished partition log given as ``(rank, event_time, offset, item)`` in topic order.

    Equivalent to feeding a :class:`HeadMerger` everything and releasing with both streams done.
    """
    merger: HeadMerger[T] = HeadMerger()
    for rank, event_time, offset, item in items:
        merger.push(rank, event_time, offset, item)
    return merger.pop_ready(True, True)
