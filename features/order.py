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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

BUSINESS_RANK = 0
ACTIVITY_RANK = 1


class _Run(Generic[T]):
    """Records ``[lo, hi)`` of one stream given as arrays (their times and offsets) and made into
    one item per release by ``make(lo, hi)``: a decoded poll batch, merged without an object per
    record."""

    __slots__ = ("times", "offsets", "lo", "hi", "make")

    def __init__(self, times: Any, offsets: Any, lo: int, hi: int, make: Callable[[int, int], T]):
        self.times, self.offsets, self.lo, self.hi, self.make = times, offsets, lo, hi, make

    def key(self, rank: int) -> tuple[int, int, int]:
        return (int(self.times[self.lo]), rank, int(self.offsets[self.lo]))

    def before(self, rank: int, other: tuple[int, int, int] | None, limit: int) -> int:
        """How many records from the head (at least one: the caller knows the head goes first,
        at most ``limit``) come before the other stream's head key ``other`` (None: all)."""
        hi = min(self.hi, self.lo + limit)
        if other is None or hi - self.lo == 1:
            return hi - self.lo
        times = self.times[self.lo : hi]
        # Keys differ in rank, so a record goes first iff its time is smaller, or equal with the lower rank.
        late = times >= other[0] if rank > other[1] else times > other[0]
        first_late = int(late.argmax())
        return max(1, first_late) if late[first_late] else hi - self.lo


class HeadMerger(Generic[T]):
    """Merge two FIFO streams by their heads' keys; keys are ``(event_time, rank, offset)``.

    A stream's records are pushed one at a time (``push``) or as a run (``push_run``: arrays of
    times and offsets; released as items each covering consecutive records, ``len(item)`` of
    them). Both give the same order: a run is the records it holds, in turn."""

    __slots__ = ("_queues", "_counts")

    def __init__(self) -> None:
        self._queues: tuple[deque[Any], deque[Any]] = (deque(), deque())
        self._counts = [0, 0]  # records queued per stream

    def push(self, rank: int, event_time: int, offset: int, item: T) -> None:
        self._queues[rank].append(((event_time, rank, offset), item))
        self._counts[rank] += 1

    def push_run(self, rank: int, times: Any, offsets: Any, lo: int, hi: int, make: Callable[[int, int], T]) -> None:
        """Queue records ``[lo, hi)`` of arrays ``times``/``offsets``; ``make(i, j)`` is the item
        released for records ``[i, j)``."""
        if hi > lo:
            self._queues[rank].append(_Run(times, offsets, lo, hi, make))
            self._counts[rank] += hi - lo

    def pending(self) -> int:
        return self._counts[0] + self._counts[1]

    def queued(self, rank: int) -> int:
        return self._counts[rank]

    def first_offset(self, rank: int) -> int | None:
        """Offset of the oldest item still queued from stream ``rank``; None when it is empty."""
        q = self._queues[rank]
        if not q:
            return None
        head = q[0]
        return int(head.offsets[head.lo]) if type(head) is _Run else head[0][2]

    def pop_ready(self, business_done: bool, activity_done: bool, limit: int | None = None) -> Iterator[T]:
        """Release items while the order is decided, up to ``limit`` records. ``*_done``: that
        stream has nothing unread."""
        queues = self._queues
        b, a = queues
        left = limit if limit is not None else self.pending()
        while left > 0:
            if b and a:
                kb, ka = _key(b[0], BUSINESS_RANK), _key(a[0], ACTIVITY_RANK)
                rank, other = (BUSINESS_RANK, ka) if kb <= ka else (ACTIVITY_RANK, kb)
            elif b and activity_done:
                rank, other = BUSINESS_RANK, None
            elif a and business_done:
                rank, other = ACTIVITY_RANK, None
            else:
                return
            q = queues[rank]
            head = q[0]
            if type(head) is _Run:
                n = head.before(rank, other, left)
                item = head.make(head.lo, head.lo + n)
                head.lo += n
                if head.lo == head.hi:
                    q.popleft()
            else:
                n, item = 1, q.popleft()[1]
            self._counts[rank] -= n
            left -= n
            yield item


def _key(head: Any, rank: int) -> tuple[int, int, int]:
    return head.key(rank) if type(head) is _Run else head[0]


def merge_finished(items: Iterable[tuple[int, int, int, T]]) -> Iterator[T]:
    """Merge a finished partition log given as ``(rank, event_time, offset, item)`` in topic order.

    Equivalent to feeding a :class:`HeadMerger` everything and releasing with both streams done.
    """
    merger: HeadMerger[T] = HeadMerger()
    for rank, event_time, offset, item in items:
        merger.push(rank, event_time, offset, item)
    return merger.pop_ready(True, True)
