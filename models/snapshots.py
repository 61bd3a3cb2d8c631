"""The snapshot frame: the rankings a user sees, at fixed times, labelled by what happened next.

A reader of the predictions topic sees, for each business, its latest score. The served ranking of
a market (``features.extract.group_key``: city x primary category) at a time T is therefore every
scorable business of that market ordered by its latest score at or before T. That is what the
gates should judge, not the scoring moments themselves: a moment exists only where there was
activity, so an event frame over-represents busy businesses and splits a market-day into
activity-triggered groups that are, on sparse data, almost all single businesses.

:func:`build_snapshot_frame` folds the log with the trainer's fold (``models.dataset``: the same
read, the same per-partition merge order via ``features.order.merge_finished``, the same scoring
rule via ``models.dataset.scoring_moments``, states from the log's start) and, at each snapshot
time T, takes one row per business that

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

Baseline scores on each row, all known at T:

* ``popularity``: all-time conversions accepted by the state (``models.dataset``'s baseline);
* ``recent_popularity``: conversions (the accepted scoring moments of a conversion kind)
  exponentially decayed to T with ``half_life_ms`` (default 7 days: a week spans every weekday, so
  a weekly rhythm does not swing it, while a month-old burst counts for less than a sixteenth).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.events import ActivityEvent
from features.extract import extract_into, group_key
from features.order import merge_finished
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState, is_scorable
from models.dataset import (
    DAY_MS,
    BuildStats,
    LabelConfig,
    Tombstone,
    _partition_items,
    _read,
    conversion_counts,
    scoring_moments,
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


def build_snapshot_frame(
    records: Iterable[Any],
    times: Sequence[int] | None = None,
    spec: FeatureSpec = DEFAULT_SPEC,
    label_cfg: LabelConfig = LabelConfig(),
    half_life_ms: int = DEFAULT_HALF_LIFE_MS,
    start_ms: int | None = None,
    end_ms: int | None = None,
    every_ms: int = DAY_MS,
) -> SnapshotFrame:
    """The frame at ``times`` (default: :func:`snapshot_times` from ``start_ms``, default the data's
    first day, to the last complete time). Times whose horizon is incomplete are dropped.

    ``end_ms``: the data's end for label completeness (default: the largest activity event time).
    """
    t0 = time.perf_counter()
    if half_life_ms <= 0:
        raise ValueError("half_life_ms must be > 0")
    stats = BuildStats()
    read = _read(records, frozenset(label_cfg.kinds), end_ms, stats)
    data_end = read.data_end
    last_ok = last_complete_time(data_end, label_cfg, spec) if data_end is not None else None
    if times is None:
        first = start_ms if start_ms is not None else ((stats.data_min_ms or 0) // DAY_MS + 1) * DAY_MS
        times = snapshot_times(first, last_ok, every_ms) if last_ok is not None else []
    wanted = sorted({int(t) for t in times})
    kept = [t for t in wanted if last_ok is not None and t <= last_ok]
    dropped = [t for t in wanted if not (last_ok is not None and t <= last_ok)]

    conv_kinds = frozenset(label_cfg.kinds)
    conv_idx = [spec.layout.kind_index[k] for k in label_cfg.kinds]
    n_feat = len(spec.names)
    rows: list[tuple[int, str, str, int, float, float, np.ndarray]] = []
    decay_rate = np.log(2.0) / float(half_life_ms)

    parts = read.parts
    for p in sorted(parts):
        states: dict[str, BusinessState] = {}
        scored: set[str] = set()
        decayed: dict[str, list[float]] = {}  # business -> [value at ref time, ref time]

        def take(t: int, states: dict[str, BusinessState] = states, scored: set[str] = scored, decayed=decayed) -> None:
            for bid in sorted(scored):
                st = states.get(bid)
                if st is None or not is_scorable(st):
                    continue
                row = np.empty(n_feat, dtype=np.float32)
                as_of = st.max_event_ms
                extract_into(st, as_of, row, spec)
                d = decayed.get(bid)
                recent = d[0] * float(np.exp(-decay_rate * (t - d[1]))) if d else 0.0
                totals = st.totals
                rows.append((t, group_key(st), bid, as_of, float(sum(totals[i] for i in conv_idx)), recent, row))

        def feed(items: Iterator[Any], take=take, scored: set[str] = scored, decayed=decayed) -> Iterator[Any]:
            ti = 0
            for item in items:
                if type(item) is Tombstone:
                    if item.business_id is not None:
                        scored.discard(item.business_id)
                        decayed.pop(item.business_id, None)
                else:
                    et = item.event_time
                    while ti < len(kept) and et > kept[ti]:
                        take(kept[ti])
                        ti += 1
                yield item
            while ti < len(kept):
                take(kept[ti])
                ti += 1

        merged = merge_finished(_partition_items(p, parts[p], read.unsorted, None, stats))
        for ev, st in scoring_moments(feed(merged), spec, states):
            bid = st.business_id
            scored.add(bid)
            if type(ev) is ActivityEvent and ev.kind in conv_kinds:
                _add_decayed(decayed, bid, ev.event_time, decay_rate)
        del parts[p]

    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    n = len(rows)
    X = np.stack([r[6] for r in rows]) if n else np.zeros((0, n_feat), dtype=np.float32)
    market_table = sorted({r[1] for r in rows})
    mcode = {m: i for i, m in enumerate(market_table)}
    snap = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
    business = np.array([r[2] for r in rows], dtype=object)
    # Labels: conversions strictly after T, within H (dataset's vectorised count, with T as as_of).
    biz_table = sorted(set(business.tolist()) | set(read.conv_biz))
    code = {b: i for i, b in enumerate(biz_table)}
    y = conversion_counts(
        np.fromiter((code[b] for b in business), dtype=np.int64, count=n),
        snap,
        np.fromiter((code[b] for b in read.conv_biz), dtype=np.int64, count=len(read.conv_biz)),
        np.asarray(read.conv_time, dtype=np.int64),
        int(label_cfg.horizon_ms),
    )
    return SnapshotFrame(
        X=X,
        y=y.astype(np.float64),
        snapshot=snap,
        market=np.fromiter((mcode[r[1]] for r in rows), dtype=np.int64, count=n),
        business=business,
        as_of=np.fromiter((r[3] for r in rows), dtype=np.int64, count=n),
        popularity=np.fromiter((r[4] for r in rows), dtype=np.float64, count=n),
        recent_popularity=np.fromiter((r[5] for r in rows), dtype=np.float64, count=n),
        market_table=market_table,
        times=kept,
        dropped_times=dropped,
        half_life_ms=int(half_life_ms),
        data_end_ms=data_end,
        seconds=time.perf_counter() - t0,
    )


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
