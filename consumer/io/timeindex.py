"""Offset lookup by time that checks the broker's answer against the records themselves.

**The rule.** The offset for time ``T`` in a partition is the first offset whose *record
timestamp* is ``>= T`` (Kafka's ListOffsets definition), or the high-water mark when no record is
that recent. Our publisher stamps each record with its event's ``event_time``, so on our topics
this is "the first record whose event time is >= T".

**Why verify.** The embedded broker (Tansu) answers ``offsets_for_times`` with a wrong offset, and
nothing says a real cluster's answer matches the rule when producers' clocks misbehave. The answer
is therefore checked by reading records, and replaced by a search when it fails.

**Near-monotonic timestamps.** Records are only approximately in time order (late deliveries), so
"first record >= T" cannot be found by looking at one record. We assume a bounded lateness ``L``:
no record is more than ``L`` older than the newest record before it (the feature state drops
events later than its allowed lateness anyway, the default ``L`` here). Then any record with
timestamp ``< T - L`` is an *anchor*: every record before it is ``< T``. So a candidate ``c`` is
exact when ``ts(c) >= T`` and every record between the nearest anchor before ``c`` and ``c`` is
``< T``. That backward scan verifies the broker's answer, and also finishes the fallback: a binary
search over ``[low, high-water)`` on ``ts >= T`` (one short read per probe) lands on some boundary
at or after the true one (no anchor can lie between them), and the backward scan walks from there
to the first record ``>= T``. Both cost ``O(log n)`` probes plus the records within ``L`` of ``T``.
If the lateness bound is broken, the result is still a boundary (``ts(c) >= T > ts(c - 1)``), just
possibly not the first one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from consumer.errors import TimeLookupError
from features.spec import DEFAULT_SPEC

DEFAULT_MAX_LATENESS_MS = DEFAULT_SPEC.allowed_lateness_ms
_SCAN_CHUNK = 512  # records read by the first backward step (doubles each step)


@dataclass(frozen=True)
class TimeLookup:
    offset: int  # the first offset whose record timestamp >= ts_ms (high-water if none)
    method: str  # "broker": the broker's answer passed verification; "search": it did not
    broker_offset: int | None  # what offsets_for_times said (None: "no such record" or no answer)
    broker_error: str | None  # why the broker gave no answer, if it raised
    probes: int  # single-record reads of the binary search
    records_read: int  # records read to verify or refine
    low: int
    high: int

    @property
    def searched(self) -> bool:
        return self.method == "search"


class _Partition:
    """Reads of one partition through a consumer that is assigned only this partition."""

    def __init__(self, consumer: Any, tp: Any, timeout_s: float):
        self.c = consumer
        self.tp = tp
        self.timeout_s = timeout_s
        self.records_read = 0
        self.probes = 0
        consumer.assign([tp])

    def bounds(self) -> tuple[int, int]:
        """(first offset, high-water mark). The high-water mark comes from a fetch response:
        the embedded broker's ``end_offsets`` is wrong."""
        low = int(self.c.beginning_offsets([self.tp])[self.tp])
        self.c.seek(self.tp, low)
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.c.poll(timeout_ms=100, max_records=1)
            hw = self.c.highwater(self.tp)
            if hw is not None:
                return low, int(hw)
            if time.monotonic() > deadline:
                raise TimeLookupError(
                    f"{self._name()}: no fetch response within {self.timeout_s:.0f}s (high-water unknown)"
                )

    def read(self, start: int, stop: int, limit: int | None = None) -> list[tuple[int, int]]:
        """``(offset, timestamp)`` of the records in ``[start, stop)``, at most ``limit`` of them.

        Offsets may have gaps (compaction, transaction markers): fewer records than offsets is normal.
        """
        out: list[tuple[int, int]] = []
        if start >= stop:
            return out
        self.c.seek(self.tp, start)
        deadline = time.monotonic() + self.timeout_s
        done = False
        while not done:
            got = self.c.poll(timeout_ms=100, max_records=limit or 5_000).get(self.tp, ())
            for rec in got:
                if rec.offset < start:
                    continue
                if rec.offset >= stop:
                    done = True
                    break
                out.append((rec.offset, rec.timestamp))
                if limit is not None and len(out) >= limit:
                    done = True
                    break
            position = self.c.position(self.tp)
            if done or (position is not None and position >= stop):
                break
            if got:
                deadline = time.monotonic() + self.timeout_s
            elif time.monotonic() > deadline:
                raise TimeLookupError(
                    f"{self._name()}: reading [{start}, {stop}) stalled at offset {position} for {self.timeout_s:.0f}s"
                )
        self.records_read += len(out)
        return out

    def first_timestamp_at(self, offset: int, high: int) -> tuple[int, int] | None:
        """The first record at or after ``offset`` (before ``high``), or None."""
        self.probes += 1
        got = self.read(offset, high, limit=1)
        return got[0] if got else None

    def _name(self) -> str:
        return f"{self.tp.topic}[{self.tp.partition}]"


def offset_for_time(
    consumer: Any,
    tp: Any,
    ts_ms: int,
    *,
    max_lateness_ms: int = DEFAULT_MAX_LATENESS_MS,
    timeout_s: float = 15.0,
) -> TimeLookup:
    """The first offset of ``tp`` whose record timestamp is ``>= ts_ms`` (see the module rule).

    ``consumer``: a kafka-python ``KafkaConsumer`` without a group (it is re-assigned to ``tp``
    only, and its position moved). The broker's ``offsets_for_times`` answer is used when it
    survives verification; otherwise a search over the records finds the offset.
    """
    from kafka.errors import KafkaError

    part = _Partition(consumer, tp, timeout_s)
    low, high = part.bounds()
    if low >= high:
        return TimeLookup(low, "broker", None, None, 0, 0, low, high)
    broker: int | None = None
    broker_error: str | None = None
    try:
        answer = consumer.offsets_for_times({tp: int(ts_ms)}).get(tp)
        broker = None if answer is None else int(answer.offset)
    except KafkaError as exc:  # an old or partial broker: treat as no answer, search instead
        broker_error = f"{type(exc).__name__}: {exc}"
    candidate = high if broker is None and broker_error is None else broker
    if (
        candidate is not None
        and low <= candidate <= high
        and _verified(part, candidate, ts_ms, max_lateness_ms, low, high)
    ):
        return TimeLookup(candidate, "broker", broker, broker_error, part.probes, part.records_read, low, high)
    found = _search(part, ts_ms, low, high)
    found = _first_before(part, found, ts_ms, max_lateness_ms, low)
    return TimeLookup(found, "search", broker, broker_error, part.probes, part.records_read, low, high)


def _verified(part: _Partition, candidate: int, ts_ms: int, lateness: int, low: int, high: int) -> bool:
    if candidate < high:
        head = part.first_timestamp_at(candidate, high)
        if head is None or head[0] != candidate or head[1] < ts_ms:
            return False
    return _first_before(part, candidate, ts_ms, lateness, low) == candidate


def _search(part: _Partition, ts_ms: int, low: int, high: int) -> int:
    """Binary search for a boundary of ``ts >= ts_ms`` (exact when timestamps are monotonic);
    returns a record's offset, or ``high`` when no record is that recent."""
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        rec = part.first_timestamp_at(mid, hi)
        if rec is None:  # no record in [mid, hi): the boundary is at or before mid
            hi = mid
        elif rec[1] >= ts_ms:
            hi = rec[0]
        else:
            lo = rec[0] + 1
    if lo < high:  # lo may sit in a gap of offsets: move to the record the gap leads to
        rec = part.first_timestamp_at(lo, high)
        lo = high if rec is None else rec[0]
    return lo


def _first_before(part: _Partition, candidate: int, ts_ms: int, lateness: int, low: int) -> int:
    """Walk back from ``candidate`` to the nearest anchor (timestamp < ts_ms - lateness) or ``low``;
    return the earliest offset seen with timestamp >= ts_ms, else ``candidate``."""
    anchor_below = ts_ms - lateness
    best = candidate
    stop = candidate
    chunk = _SCAN_CHUNK
    while stop > low:
        start = max(low, stop - chunk)
        records = part.read(start, stop)
        for offset, ts in reversed(records):
            if ts >= ts_ms:
                best = offset
            elif ts < anchor_below:
                return best
        stop = start
        chunk *= 2
    return best
