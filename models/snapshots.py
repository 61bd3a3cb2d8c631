"""The snapshot frame: the rankings a user sees, at fixed times, labelled by what happened next.

A reader of the predictions topic sees, for each business, its latest score. The served ranking of
a market (``features.extract.group_key``: city x primary category) at a time T is therefore every
scorable business of that market ordered by its latest score at or before T. That is what the
gates should judge, not the scoring moments themselves: a moment exists only where there was
activity, so an event frame over-represents busy businesses and splits a market-day into
activity-triggered groups that are, on sparse data, almost all single businesses.

The streaming build (``models.streambuild``: the trainer's fold, in the worker's per-partition
merge order, with the worker's scoring rule, states from the log's start) takes, at each snapshot
time T, one row per business that

* has been scored at least once (it has a prediction in the topic), and
* is scorable at T (``features.state.is_scorable``: known, not closed; a tombstone forgets it).

Cut rule: the snapshot at T is taken just before the first merged item stamped after T, so every
folded event has event time <= T; an event stamped <= T that the merge releases after such an item
(late delivery) is not in it - a reader at T had not seen it either. Features are ``extract`` at
the state's own clock (``features.scoring.as_of``), which is what its latest score used; a profile
change after that moment is the one difference (the row sits in the market of its current profile).

Label: distinct conversions (``LabelConfig.kinds``) of the business with event time in
``(T, T + H]``. A snapshot whose horizon ends after the data's end minus the allowed lateness is
dropped (a late conversion could still change its labels), as ``models.dataset`` drops examples.
This module holds the frame (:class:`SnapshotFrame`) and the choice of times;
``models.rowsets.build_snapshot_frame`` builds one from records in memory.

Baseline scores on each row, all known at T:

* ``popularity``: all-time conversions accepted by the state (``models.dataset``'s baseline);
* ``recent_popularity``: conversions (the accepted scoring moments of a conversion kind)
  exponentially decayed to T with ``half_life_ms`` (default 7 days: a week spans every weekday, so
  a weekly rhythm does not swing it, while a month-old burst counts for less than a sixteenth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.spec import DEFAULT_SPEC, FeatureSpec
from models.dataset import (
    DAY_MS,
    LabelConfig,
)

DEFAULT_HALF_LIFE_MS = 7 * DAY_MS
# Fewer snapshots than this over the validation period: take them more often than daily (labels
# of neighbouring snapshots then overlap; the bootstrap over markets keeps the CIs honest).
MIN_SNAPSHOTS = 4
MIN_EVERY_MS = 3_600_000


@dataclass
class SnapshotFrame:
    """One row per (snapshot time, served business); rows sorted by (snapshot, market, business)."""

    X: np.ndarray  # float32 [n, n_features]: extract(state, as_of(state))
    y: np.ndarray  # float64 [n]: conversions in (T, T + H]
    snapshot: np.ndarray  # int64 [n]: T
    market: np.ndarray  # int64 [n]: index into market_table
    business: np.ndarray  # object [n]: business id
    as_of: np.ndarray  # int64 [n]: the state's clock (<= T)
    popularity: np.ndarray  # float64 [n]: all-time conversions up to T
    recent_popularity: np.ndarray  # float64 [n]: decayed conversions at T
    market_table: list[str]
    times: list[int]  # the snapshot times kept (ascending)
    dropped_times: list[int] = field(default_factory=list)  # horizon past the data's end
    half_life_ms: int = DEFAULT_HALF_LIFE_MS
    data_end_ms: int | None = None
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def groups(self) -> np.ndarray:
        """Dense ids of (snapshot, market): one served ranking each."""
        if len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        key = self.snapshot.astype(np.int64) * (len(self.market_table) + 1) + self.market
        return np.unique(key, return_inverse=True)[1].astype(np.int64)

    def take(self, mask: np.ndarray) -> SnapshotFrame:
        """The rows where ``mask`` holds (a boolean array or indices); ``times`` keeps the snapshot
        times that still have a row or that were wanted in the taken time range (market table shared)."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, dtype=np.int64)
        snap = self.snapshot[idx]
        lo, hi = (int(snap.min()), int(snap.max())) if len(idx) else (None, None)
        times = [t for t in self.times if lo is not None and hi is not None and lo <= t <= hi]
        return SnapshotFrame(
            X=self.X[idx],
            y=self.y[idx],
            snapshot=snap,
            market=self.market[idx],
            business=self.business[idx],
            as_of=self.as_of[idx],
            popularity=self.popularity[idx],
            recent_popularity=self.recent_popularity[idx],
            market_table=self.market_table,
            times=times,
            dropped_times=[],
            half_life_ms=self.half_life_ms,
            data_end_ms=self.data_end_ms,
            seconds=self.seconds,
        )

    def between(self, start_ms: int | None, end_ms: int | None) -> SnapshotFrame:
        """Rows with ``start_ms <= T < end_ms`` (``None``: unbounded); ``times`` and ``dropped_times``
        restricted to the same range."""
        lo = -(2**62) if start_ms is None else int(start_ms)
        hi = 2**62 if end_ms is None else int(end_ms)
        out = self.take((self.snapshot >= lo) & (self.snapshot < hi))
        out.times = [t for t in self.times if lo <= t < hi]
        out.dropped_times = [t for t in self.dropped_times if lo <= t < hi]
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self),
            "snapshots": len(self.times),
            "first_snapshot_ms": self.times[0] if self.times else None,
            "last_snapshot_ms": self.times[-1] if self.times else None,
            "dropped_snapshots": len(self.dropped_times),
            "markets": len(np.unique(self.market)) if len(self) else 0,
            "conversions": float(self.y.sum()),
            "half_life_ms": self.half_life_ms,
            "seconds": round(self.seconds, 3),
        }


def snapshot_times(start_ms: int, end_ms: int, every_ms: int = DAY_MS, min_snapshots: int = MIN_SNAPSHOTS) -> list[int]:
    """``start_ms, start_ms + every, ...`` up to ``end_ms`` inclusive (the last time whose label
    horizon is complete). When daily gives fewer than ``min_snapshots``, the step shrinks so the
    period still holds that many (never below an hour)."""
    if end_ms < start_ms:
        return []
    span = end_ms - start_ms
    if span // every_ms + 1 < min_snapshots and min_snapshots > 1:
        every_ms = max(MIN_EVERY_MS, span // (min_snapshots - 1))
    return list(range(int(start_ms), int(end_ms) + 1, int(every_ms)))


def training_snapshot_times(
    first_ms: int, end_ms: int, businesses: int, row_budget: int, every_ms: int = DAY_MS
) -> list[int]:
    """Snapshot times for training examples: ``T`` on the ``every_ms`` grid (UTC midnights by
    default, the validation snapshots' time of day) with ``first_ms <= T < end_ms``, thinned so the
    rows stay within ``row_budget``.

    The rule: a snapshot has at most ``businesses`` rows (every business with activity), so at most
    ``max(1, row_budget // businesses)`` snapshots are kept; when the grid holds more, every
    ``s``-th is kept, ``s = ceil(grid / allowed)``, counted back from the latest (the times
    nearest the validation period are always in). Rows <= ``max(row_budget, businesses)``.
    """
    if end_ms <= first_ms or every_ms <= 0:
        return []
    start = -(-int(first_ms) // every_ms) * every_ms  # first grid time >= first_ms
    grid = list(range(start, int(end_ms), int(every_ms)))
    if not grid:
        return []
    allowed = max(1, int(row_budget) // max(1, int(businesses)))
    step = -(-len(grid) // allowed)
    return grid[::-1][::step][::-1]


def last_complete_time(data_end_ms: int, label_cfg: LabelConfig, spec: FeatureSpec = DEFAULT_SPEC) -> int:
    """The last T whose label horizon cannot change any more (as ``models.dataset``)."""
    return int(data_end_ms) - int(label_cfg.horizon_ms) - int(spec.allowed_lateness_ms)


def _add_decayed(decayed: dict[str, list[float]], bid: str, t: int, rate: float) -> None:
    """Add one conversion at ``t`` to the business's decayed count (kept at its latest time)."""
    d = decayed.get(bid)
    if d is None:
        decayed[bid] = [1.0, float(t)]
    elif t >= d[1]:
        d[0] = d[0] * float(np.exp(-rate * (t - d[1]))) + 1.0
        d[1] = float(t)
    else:  # a late (but accepted) conversion: decay it to the reference time instead
        d[0] += float(np.exp(-rate * (d[1] - t)))
