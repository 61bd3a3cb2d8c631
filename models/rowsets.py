"""A build's rows as the trainer uses them: the event examples and the snapshot frames.

``models.buildstore`` keeps every labelled row on disk; a training run picks from them:

* :func:`event_set` - the event rows (scoring moments) as a ``models.dataset.TrainingSet``, thinned
  by the sampling hash to the run's sample rate (``auto_sample_rate`` of the log when not given:
  the same rows the in-memory build would sample), from ``start_ms``;
* :func:`snapshot_frame` - the snapshot rows at chosen grid times as a ``models.snapshots.SnapshotFrame``;
* :func:`build_training_set`, :func:`build_snapshot_frame` - a one-off build of records in memory
  (tests, the sweep, benches): the streaming build in a temporary directory, then the above;
* :func:`snapshot_chunks` - the same rows left on disk, a chunk loader per shard, for a fit out of
  core (``models.fitdata``: XGBoost's external memory, or a Dask cluster) when they would not fit
  in ``TrainOptions.memory_budget_bytes``.

Both read the shards memory-mapped and copy only the rows they keep, so a run's memory is the
rows it trains and judges on, not the build. Rows come back in a canonical order (events by
partition and moment, snapshots by time, market, business): how many runs built them, and in
which order their labels closed, does not show.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.order import ACTIVITY_RANK
from features.spec import DEFAULT_SPEC, FeatureSpec
from models.buildstore import BuildResult, RecordsLog, build, shard_paths
from models.dataset import DAY_MS, LabelConfig, TrainingSet, _sample_threshold, auto_sample_rate
from models.shards import EVENT, SNAPSHOT, Rows, read_shard
from models.snapshots import DEFAULT_HALF_LIFE_MS, SnapshotFrame, last_complete_time, snapshot_times
from models.streambuild import BuildConfig
from models.train import FitSet


def read_rate(built: BuildResult, sample_rate: float | None) -> float:
    """The share of stored event rows a run keeps: all when the build already sampled at a fixed
    rate, else ``auto_sample_rate`` of the log's activity records."""
    if sample_rate is not None or built.cfg.sample_rate < 1.0:
        return 1.0
    return auto_sample_rate(built.stats.activity_records)


def event_set(
    built: BuildResult,
    sample_rate: float | None = None,
    start_ms: int | None = None,
    window_start_ms: int | None = None,
) -> TrainingSet:
    """The event rows from ``max(start_ms, window_start_ms)`` on, thinned to the run's rate."""
    threshold = _sample_threshold(read_rate(built, sample_rate))
    lo = max(v for v in (start_ms, window_start_ms, -(2**62)) if v is not None)

    def pick(r: Rows) -> np.ndarray:
        keep = (r["kind"] == EVENT) & (r["time"] >= lo)
        if threshold < 2**32:
            keep &= r["u"] < threshold
        return np.flatnonzero(keep)

    rows = built.rows(pick)
    order = np.lexsort((rows["offset"], rows["partition"]))
    return _training_set(rows.take(order), built)


def _training_set(rows: Rows, built: BuildResult) -> TrainingSet:
    spec: FeatureSpec = built.cfg.spec
    n = len(rows)
    business = rows["business"].astype(str)
    business_table = sorted(set(business.tolist()))
    code = {b: i for i, b in enumerate(business_table)}
    as_of = rows["as_of"].astype(np.int64)
    gids: dict[tuple[str, int], int] = {}
    keys = zip(rows["market"].astype(str).tolist(), (as_of // DAY_MS).tolist(), strict=True)
    groups = np.fromiter((gids.setdefault(k, len(gids)) for k in keys), dtype=np.int64, count=n)
    built.stats.examples = n
    return TrainingSet(
        X=np.ascontiguousarray(rows["X"], dtype=np.float32),
        y=rows["y"].astype(np.float32),
        groups=groups,
        business=np.fromiter((code[b] for b in business.tolist()), dtype=np.int64, count=n),
        as_of=as_of,
        popularity=rows["popularity"].astype(np.float64),
        group_table=list(gids),
        business_table=business_table,
        feature_names=tuple(spec.names),
        feature_set_version=spec.version,
        label_cfg=built.cfg.label_cfg,
        stats=built.stats,
    )


def snapshot_frame(built: BuildResult, times: list[int], last_ok: int | None) -> SnapshotFrame:
    """The snapshot rows at ``times`` (grid times; others have no rows), sorted by (T, market,
    business). Times after ``last_ok`` (their horizon is not complete) are dropped."""
    wanted = sorted({int(t) for t in times})
    kept = [t for t in wanted if last_ok is not None and t <= last_ok]
    dropped = [t for t in wanted if t not in set(kept)]
    want = np.array(kept, dtype=np.int64)

    def pick(r: Rows) -> np.ndarray:
        return np.flatnonzero((r["kind"] == SNAPSHOT) & np.isin(r["time"], want))

    rows = built.rows(pick)
    market = rows["market"].astype(str)
    business = rows["business"].astype(str)
    order = np.lexsort((business, market, rows["time"]))
    rows, market, business = rows.take(order), market[order], business[order]
    market_table = sorted(set(market.tolist()))
    mcode = {m: i for i, m in enumerate(market_table)}
    return SnapshotFrame(
        X=np.ascontiguousarray(rows["X"], dtype=np.float32),
        y=rows["y"].astype(np.float64),
        snapshot=rows["time"].astype(np.int64),
        market=np.fromiter((mcode[m] for m in market.tolist()), dtype=np.int64, count=len(rows)),
        business=business.astype(object),
        as_of=rows["as_of"].astype(np.int64),
        popularity=rows["popularity"].astype(np.float64),
        recent_popularity=rows["recent"].astype(np.float64),
        market_table=market_table,
        times=kept,
        dropped_times=dropped,
        half_life_ms=built.cfg.half_life_ms,
        data_end_ms=built.data_end_ms,
    )


# -------------------------------------------------------------------- out of core: by shard
@dataclass(frozen=True)
class ShardSnapshots:
    """A chunk loader (``models.fitdata.ChunkLoader``): one shard's snapshot rows at ``times`` as a
    ``FitSet``. Group ids are global - (index of T in ``times``) x markets + market code - so the
    chunks of one build share them. Picklable (a Dask worker can load it)."""

    path: str
    times: tuple[int, ...]
    markets: tuple[str, ...]

    def __call__(self) -> FitSet:
        want = np.array(self.times, dtype=np.int64)
        rows = read_shard(Path(self.path), lambda r: _snapshots_at(r, want))
        code = {m: i for i, m in enumerate(self.markets)}
        market = np.fromiter((code[m] for m in rows["market"].astype(str).tolist()), dtype=np.int64, count=len(rows))
        t = rows["time"].astype(np.int64)
        groups = np.searchsorted(want, t).astype(np.int64) * len(self.markets) + market
        return FitSet(
            np.ascontiguousarray(rows["X"], dtype=np.float32),
            rows["y"].astype(np.float32),
            groups,
            t,
            np.full(len(rows), "snapshots"),
        )


@dataclass
class SnapshotChunks:
    """The training snapshots left on disk: a loader per shard holding some, and their count."""

    loaders: list[ShardSnapshots]
    rows: int
    times: list[int]

    def summary(self) -> dict[str, int | None]:
        return {
            "rows": self.rows,
            "snapshots": len(self.times),
            "first_snapshot_ms": self.times[0] if self.times else None,
            "last_snapshot_ms": self.times[-1] if self.times else None,
            "shards": len(self.loaders),
        }


def _snapshots_at(r: Rows, want: np.ndarray) -> np.ndarray:
    return np.flatnonzero((r["kind"] == SNAPSHOT) & np.isin(r["time"], want))


def snapshot_rows(built: BuildResult, times: list[int]) -> int:
    """How many snapshot rows the build holds at ``times`` (reads the small columns only)."""
    want = np.array(sorted(times), dtype=np.int64)
    return sum(len(_snapshots_at(_small(p), want)) for p in shard_paths(built.work_dir))


def snapshot_chunks(built: BuildResult, times: list[int]) -> SnapshotChunks:
    """The snapshot rows at ``times`` as chunk loaders, one per shard holding any."""
    want = np.array(sorted({int(t) for t in times}), dtype=np.int64)
    markets: set[str] = set()
    holding: list[tuple[Path, int]] = []
    for p in shard_paths(built.work_dir):
        small = _small(p)
        idx = _snapshots_at(small, want)
        if len(idx):
            markets.update(np.unique(small["market"][idx]).astype(str).tolist())
            holding.append((p, len(idx)))
    table = tuple(sorted(markets))
    loaders = [ShardSnapshots(str(p), tuple(want.tolist()), table) for p, _ in holding]
    return SnapshotChunks(loaders, sum(n for _, n in holding), want.tolist())


def _small(path: Path) -> Rows:
    """A shard's columns that choose rows (memory-mapped; no features)."""
    return Rows({k: np.load(path / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in ("kind", "time", "market")})


# ------------------------------------------------------------------ one-off builds in memory
def build_training_set(
    records: Iterable[Any],
    spec: FeatureSpec = DEFAULT_SPEC,
    label_cfg: LabelConfig = LabelConfig(),
    sample_rate: float | None = 1.0,
    seed: int = 0,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> TrainingSet:
    """The labelled event examples of ``records`` (log records, any order within a partition),
    built by the streaming build in a temporary directory: the trainer's own rows.

    ``sample_rate``: the share of scoring moments kept; ``None`` chooses it from the log's size
    (``models.dataset.auto_sample_rate``), recorded in ``stats.sample_rate``. ``start_ms``: the first
    ``as_of`` that makes an example; everything before it is folded all the same, so the features
    are the worker's. ``end_ms``: the data's end for label completeness (default: the newest
    activity time).
    """
    if sample_rate is not None:
        _sample_threshold(sample_rate)  # validate before reading
    rate = 1.0 if sample_rate is None else float(sample_rate)
    cfg = BuildConfig(spec=spec, label_cfg=label_cfg, sample_rate=rate, seed=seed, times=())
    with tempfile.TemporaryDirectory(prefix="streamrank-build-") as tmp:
        built = build(RecordsLog(records), tmp, cfg, end_ms=end_ms, durable=False)
        ts = event_set(built, sample_rate, start_ms)
    if end_ms is not None:  # rows labelled in the stream before the given end was reached
        ts = ts.take(np.flatnonzero(ts.as_of <= last_complete_time(int(end_ms), label_cfg, spec)))
        ts.stats.examples = len(ts)
    ts.stats.sample_rate = rate * read_rate(built, sample_rate)
    return ts


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
    """The snapshot frame of ``records`` at ``times`` (default: :func:`models.snapshots.snapshot_times`
    from ``start_ms``, default the data's first full day, to the last complete time), built by the
    streaming build in a temporary directory. Times whose horizon is incomplete are dropped.
    ``end_ms``: the data's end for label completeness (default: the newest activity time)."""
    t0 = time.perf_counter()
    if half_life_ms <= 0:
        raise ValueError("half_life_ms must be > 0")
    records = records if isinstance(records, (list, tuple)) else list(records)
    if times is None:
        times = _default_times(records, spec, label_cfg, start_ms, end_ms, every_ms)
    cfg = BuildConfig(spec=spec, label_cfg=label_cfg, half_life_ms=half_life_ms, times=tuple(times), event_rows=False)
    with tempfile.TemporaryDirectory(prefix="streamrank-build-") as tmp:
        built = build(RecordsLog(records), tmp, cfg, end_ms=end_ms, durable=False)
        end = built.data_end_ms
        frame = snapshot_frame(
            built, list(times), last_complete_time(end, label_cfg, spec) if end is not None else None
        )
    frame.seconds = time.perf_counter() - t0
    return frame


def _default_times(
    records: Sequence[Any], spec: FeatureSpec, label_cfg: LabelConfig, start: int | None, end: int | None, every: int
) -> list[int]:
    times = [r.event.event_time for r in records if r.rank == ACTIVITY_RANK and r.event is not None]
    if not times:
        return []
    last_ok = last_complete_time(int(end) if end is not None else max(times), label_cfg, spec)
    first = start if start is not None else (min(times) // DAY_MS + 1) * DAY_MS
    return snapshot_times(first, last_ok, every)
