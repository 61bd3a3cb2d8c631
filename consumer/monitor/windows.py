"""Counters over sliding event-time windows, in buckets: memory is bounded by the bucket count.

A ``Ring`` of width ``w`` and ``n`` buckets keeps, per bucket index ``i = t // w``, a vector of
counts per key. The window at "now" is the last ``n`` buckets, the newest one partial: it starts
at ``start_ms(now) = (now // w - n + 1) * w`` and is between ``(n - 1) * w`` and ``n * w`` long.
Buckets that fall out are dropped as time advances; an addition older than the window is refused
(``add`` returns False) and the caller counts it as late.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from consumer.config import parse_duration_ms, parse_windows

__all__ = ["Ring", "parse_duration_ms", "parse_windows"]


class Ring:
    """Counts per key over the last ``n`` buckets of ``width_ms``."""

    def __init__(self, width_ms: int, n: int, size: int):
        if width_ms <= 0 or n <= 0:
            raise ValueError("a ring needs a positive width and bucket count")
        self.width = width_ms
        self.n = n
        self.size = size  # length of each key's vector
        self.head: int | None = None  # newest bucket index
        self.buckets: dict[int, dict[Any, list[float]]] = {}

    def advance(self, now_ms: int) -> None:
        idx = now_ms // self.width
        if self.head is not None and idx <= self.head:
            return
        self.head = idx
        for old in [i for i in self.buckets if i <= idx - self.n]:
            del self.buckets[old]

    def add(self, t_ms: int, key: Any, values: Iterable[float]) -> bool:
        self.advance(t_ms)
        assert self.head is not None
        idx = t_ms // self.width
        if idx <= self.head - self.n:
            return False
        vec = self.buckets.setdefault(idx, {}).get(key)
        if vec is None:
            vec = self.buckets[idx][key] = [0.0] * self.size
        for i, v in enumerate(values):
            vec[i] += v
        return True

    def start_ms(self, now_ms: int) -> int:
        return (now_ms // self.width - self.n + 1) * self.width

    def totals(self, now_ms: int) -> dict[Any, list[float]]:
        """Sum per key over the window ending at ``now_ms``."""
        lo = now_ms // self.width - self.n
        out: dict[Any, list[float]] = {}
        for idx, bucket in self.buckets.items():
            if idx <= lo or idx > now_ms // self.width:
                continue
            for key, vec in bucket.items():
                acc = out.get(key)
                if acc is None:
                    out[key] = list(vec)
                else:
                    for i, v in enumerate(vec):
                        acc[i] += v
        return out

    def entries(self) -> int:
        """Stored (bucket, key) vectors: the memory this ring holds."""
        return sum(len(b) for b in self.buckets.values())
