"""A build's working directory: checkpoints, shards, and the driver that runs partitions in parallel.

Layout of ``work_dir`` (``streamrank train --work-dir``)::

    build.json                  what the rows depend on (``BuildConfig.identity``); another -> rebuild
    parts/p00003/meta.json      per partition: offsets read, clocks, counters, the shard sequence
    parts/p00003/states.bin     business states (``features.state.to_bytes``, length-prefixed)
    parts/p00003/memory.npz     scored and active businesses, decayed conversions, label memory
    parts/p00003/pending/       rows waiting for their label (a shard, labels unset)
    shards/p00003-00000007/     labelled rows (``models.shards``), final
    tail/p00003/                the last run's tail rows (``PartitionBuild.finish``), replaced each run

A partition's checkpoint is written after its shards, to a temporary name swapped in by rename; a
run that dies in between leaves shards numbered past the checkpoint's sequence, deleted (and made
again, identically) by the next run. :func:`build` runs phase 1 (read and fold each partition from
its checkpoint) and phase 2 (each partition's tail at the global data end) over partitions, in this
process or in ``workers`` processes: partitions share nothing, so each process holds one
partition's states at a time.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from features.order import ACTIVITY_RANK, BUSINESS_RANK
from features.state import from_bytes, to_bytes
from models import streamkernels as sk
from models.dataset import BuildStats
from models.shards import RowBuffer, Rows, read_shard, write_shard
from models.streambuild import BuildConfig, PartitionBuild, PartitionCounts

log = logging.getLogger("streamrank.models.build")

PROGRESS_S = 30.0  # a long partition's progress line, this often
SHARD_ROWS = 16_384  # rows per shard: ~5 MB of features at 80 features, the most a build holds before writing


class PartitionLog(Protocol):
    """Where a build reads from: the log's partitions, each as its business and activity records."""

    def partitions(self) -> list[int]: ...

    def read(self, partition: int, start: tuple[int, int]) -> tuple[Iterable[Any], Iterable[Any]]:
        """The business records from offset ``start[0]`` (read first, whole) and the activity
        records from ``start[1]`` (a stream), each in offset order."""
        ...

    def part(self, partition: int) -> PartitionLog:
        """This log restricted to one partition (what a worker process is handed)."""
        ...


class RecordsLog:
    """Records already in memory (a list, a file's records) as a :class:`PartitionLog`."""

    def __init__(self, records: Iterable[Any]) -> None:
        self._parts: dict[int, tuple[list[Any], list[Any]]] = {}
        for r in records:
            lists = self._parts.setdefault(r.partition, ([], []))
            lists[0 if r.rank == BUSINESS_RANK else 1].append(r)
        for biz, act in self._parts.values():
            for recs in (biz, act):
                if any(a.offset > b.offset for a, b in zip(recs, recs[1:], strict=False)):
                    recs.sort(key=lambda r: r.offset)

    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def read(self, partition: int, start: tuple[int, int]) -> tuple[Iterable[Any], Iterable[Any]]:
        biz, act = self._parts.get(partition, ([], []))
        return [r for r in biz if r.offset >= start[0]], (r for r in act if r.offset >= start[1])

    def part(self, partition: int) -> RecordsLog:
        one = RecordsLog(())
        if partition in self._parts:
            one._parts[partition] = self._parts[partition]
        return one


# ----------------------------------------------------------------------------- the driver
@dataclass
class PartitionSummary:
    partition: int
    max_time: int | None
    min_time: int | None
    counts: PartitionCounts
    run_counts: PartitionCounts  # this run's share
    offsets: dict[str, list[int]]  # "business"/"activity" -> [first offset read ever, next offset]
    active: int
    seconds: float
    peak_rss_mb: float
    tail_rows: int = 0
    waiting: int = 0
    pid: int = field(default_factory=os.getpid)  # the process that built it


@dataclass
class BuildResult:
    work_dir: Path
    cfg: BuildConfig
    stats: BuildStats
    data_end_ms: int | None
    partitions: list[PartitionSummary] = field(default_factory=list)
    rebuilt: str | None = None  # why an existing checkpoint was discarded
    incremental: bool = False  # True when a checkpoint was resumed
    memory: dict[str, Rows] | None = None  # a one-off build's shards and tails, kept in memory (Kept)

    def rows(self, select: Callable[[Rows], np.ndarray] | None = None) -> Rows:
        """Every labelled row of the build (shards, then tails), ``select``-ed per shard."""
        n = len(self.cfg.spec.names)
        if self.memory is None:
            return load_rows(self.work_dir, n, select)
        parts = [self.memory[k] for k in sorted(self.memory)]  # shard_paths' order
        return Rows.concat([r if select is None else r.take(np.asarray(select(r))) for r in parts], n)


@dataclass
class Kept:
    """What a one-off build (``build(durable=False)`` in this process) keeps in memory instead of
    writing: each partition's build between its two phases, and the row sets by shard name."""

    parts: dict[int, PartitionBuild] = field(default_factory=dict)
    shards: dict[str, Rows] = field(default_factory=dict)


def build(
    source: PartitionLog,
    work_dir: str | Path,
    cfg: BuildConfig,
    *,
    workers: int = 1,
    client: Any = None,
    end_ms: int | None = None,
    progress: Callable[[PartitionSummary, int, int], None] | None = None,
    durable: bool = True,
) -> BuildResult:
    """Bring ``work_dir``'s build up to the end of ``source`` and write every partition's tail.

    ``workers``: processes on this machine; ``client``: a ``dask.distributed.Client`` instead
    (each partition a task on the cluster; ``work_dir`` must then be a path every worker sees).
    ``end_ms``: the data's end for the tails' completeness (default: the newest activity time of
    any partition). ``progress(summary, done, total)`` after each partition's phase 1.
    ``durable=False``: a one-off build no run resumes: no fsyncs and, when run in this process,
    no checkpoint and no shards (the rows stay in memory: ``BuildResult.memory``).
    """
    t0 = time.perf_counter()
    root = Path(work_dir)
    rebuilt, resumed = _open(root, cfg)
    parts = source.partitions()
    # A one-off build in this process keeps each partition for its tail instead of a checkpoint
    # written and read back, and its rows in memory instead of shards (nothing resumes it).
    kept = Kept() if not durable and workers <= 1 and client is None else None
    with _runner(workers, client) as run:
        summaries = []
        for s in run(_phase1, [(source.part(p), root, cfg, p, durable, kept) for p in parts]):
            summaries.append(s)
            if progress is not None:
                progress(s, len(summaries), len(parts))
        ends = [s.max_time for s in summaries if s.max_time is not None]
        data_end = int(end_ms) if end_ms is not None else (max(ends) if ends else None)
        if data_end is not None:
            tails = run(_phase2, [(root, cfg, p, data_end, durable, kept) for p in parts])
            for s, (n_tail, n_wait) in zip(summaries, tails, strict=True):
                s.tail_rows, s.waiting = n_tail, n_wait
    stats = _stats(summaries, data_end, time.perf_counter() - t0, cfg)
    result = BuildResult(root, cfg, stats, data_end, summaries, rebuilt, resumed)
    if kept is not None:
        result.memory = kept.shards
    log.info("build done", extra={"build": {"records": stats.records, "seconds": round(stats.seconds, 3)}})
    return result


Run = Callable[[Callable[..., Any], list[tuple]], Iterator[Any]]


@contextmanager
def _runner(workers: int, client: Any) -> Iterator[Run]:
    """How partition tasks run: here, in a pool of processes, or on a Dask cluster. Results come
    back in task order."""
    if client is not None:
        yield lambda fn, args: (f.result() for f in [client.submit(fn, *a, pure=False) for a in args])
    elif workers <= 1:
        yield lambda fn, args: (fn(*a) for a in args)
    else:
        # forkserver: children fork from a server that imported the build once (spawn would pay
        # the imports per process; plain fork would copy the caller's threads' locks).
        ctx = get_context("forkserver")
        ctx.set_forkserver_preload(["models.buildstore"])
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            yield lambda fn, args: (f.result() for f in [pool.submit(fn, *a) for a in args])


def _phase1(
    source: PartitionLog,
    root: Path,
    cfg: BuildConfig,
    p: int,
    durable: bool = True,
    kept: Kept | None = None,
) -> PartitionSummary:
    """Resume partition ``p`` from its checkpoint, fold what ``source`` has after it, save (or
    keep it in ``kept``)."""
    t0 = time.perf_counter()
    pb = load_partition(root, cfg, p)
    before = PartitionCounts(**vars(pb.counts))
    out = RowBuffer(len(cfg.spec.names))
    business, activity = source.read(p, (pb.offsets[0], pb.offsets[1]))
    pb.run(business, activity, out, _flusher(out, pb, root, durable, kept))
    _write(root, pb, out, durable, kept)
    if kept is not None:
        kept.parts[p] = pb
    else:
        save_partition(root, pb, durable)
    run_counts = PartitionCounts(**{k: v - getattr(before, k) for k, v in vars(pb.counts).items()})
    return _summary(pb, run_counts, time.perf_counter() - t0)


def _flusher(
    out: RowBuffer, pb: PartitionBuild, root: Path, durable: bool = True, kept: Kept | None = None
) -> Callable[[], None]:
    """Called after each folded batch: writes a shard whenever ``SHARD_ROWS`` labelled rows are
    waiting, and says how far a long partition has got every ``PROGRESS_S`` seconds."""
    t0 = last = time.perf_counter()
    start = pb.counts.activity_records

    def on_flush() -> None:
        nonlocal last
        if len(out) >= SHARD_ROWS:
            _write(root, pb, out, durable, kept)
        now = time.perf_counter()
        if now - last >= PROGRESS_S:
            last = now
            n = pb.counts.activity_records - start
            log.info(
                "partition %d: %d activity records this run (%.0f/s), %d rows written, event time %s, peak RSS %.0f MB",
                pb.partition,
                n,
                n / (now - t0),
                int(pb.st[sk.ST_WRITTEN]),
                pb.max_time,
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            )

    return on_flush


def _write(root: Path, pb: PartitionBuild, out: RowBuffer, durable: bool = True, kept: Kept | None = None) -> None:
    if len(out) == 0:
        return
    name = f"p{pb.partition:05d}-{pb.shard_seq:08d}"
    if kept is not None:
        kept.shards[f"shards/{name}"] = out.rows()
    else:
        write_shard(root / "shards" / name, out.rows(), durable)
    pb.shard_seq += 1
    out.clear()


def _phase2(
    root: Path,
    cfg: BuildConfig,
    p: int,
    data_end: int,
    durable: bool = True,
    kept: Kept | None = None,
) -> tuple[int, int]:
    pb = kept.parts[p] if kept is not None else load_partition(root, cfg, p)
    tail = pb.finish(data_end)
    if kept is not None:
        kept.shards[f"tail/p{p:05d}"] = tail
    else:
        write_shard(root / "tail" / f"p{p:05d}", tail, durable)
    return len(tail), pb.waiting(data_end)


def _summary(pb: PartitionBuild, run_counts: PartitionCounts, seconds: float) -> PartitionSummary:
    offsets = {
        name: [pb.first_offsets[rank] or 0, pb.offsets[rank]]
        for rank, name in ((BUSINESS_RANK, "business"), (ACTIVITY_RANK, "activity"))
        if pb.first_offsets[rank] is not None
    }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return PartitionSummary(
        pb.partition, pb.max_time, pb.min_time, pb.counts, run_counts, offsets, len(pb.active), seconds, rss
    )


def _stats(summaries: list[PartitionSummary], data_end: int | None, seconds: float, cfg: BuildConfig) -> BuildStats:
    stats = BuildStats()
    total = PartitionCounts()
    for s in summaries:
        total.add(s.run_counts)
    stats.records = total.records
    stats.business_records = total.business_records
    stats.activity_records = sum(s.counts.activity_records for s in summaries)  # the whole log's
    stats.tombstones = total.tombstones
    stats.unkeyed_tombstones = total.unkeyed_tombstones
    stats.conversions = sum(s.counts.conversions for s in summaries)
    stats.scoring_moments = sum(s.counts.scoring_moments for s in summaries)
    stats.sampled = sum(s.counts.sampled for s in summaries)
    stats.sample_rate = cfg.sample_rate
    stats.active_businesses = sum(s.active for s in summaries)
    stats.dropped_incomplete = sum(s.waiting for s in summaries)
    mins = [s.min_time for s in summaries if s.min_time is not None]
    stats.data_min_ms = min(mins) if mins else None
    stats.data_end_ms = data_end
    stats.offsets = {
        name: {s.partition: s.offsets[name] for s in summaries if name in s.offsets}
        for name in ("business", "activity")
    }
    stats.seconds = seconds
    return stats


# ---------------------------------------------------------------------------- checkpoints
def _open(root: Path, cfg: BuildConfig) -> tuple[str | None, bool]:
    """Make ``root`` a build directory for ``cfg``: ``(why it was rebuilt or None, resumed?)``."""
    ident = cfg.identity()
    path = root / "build.json"
    reason = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            old, reason = None, f"unreadable build.json ({exc})"
        if old == ident:
            return None, True
        if old is not None:
            changed = sorted(k for k in ident if old.get(k) != ident[k])
            reason = f"the build's {', '.join(changed)} changed"
        log.warning("training checkpoint in %s discarded: %s; rebuilding from the log's start", root, reason)
        for sub in ("parts", "shards", "tail"):
            shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "build.json.tmp"
    tmp.write_text(json.dumps(ident, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return reason, False


_LEN = struct.Struct("<I")


def save_partition(root: Path, pb: PartitionBuild, durable: bool = True) -> None:
    """Write ``pb``'s checkpoint under ``root/parts`` (atomically: a temporary directory renamed)."""
    final = root / "parts" / f"p{pb.partition:05d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "states.bin", "wb") as fh:
        for st in pb.states():
            data = to_bytes(st)
            fh.write(_LEN.pack(len(data)))
            fh.write(data)
    _save_memory(tmp / "memory.npz", pb)
    write_shard(tmp / "pending", pb.pending_rows(), durable)
    (tmp / "meta.json").write_text(json.dumps(_meta(pb), sort_keys=True))
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _meta(pb: PartitionBuild) -> dict[str, Any]:
    return {
        "partition": pb.partition,
        "offsets": pb.offsets,
        "first_offsets": pb.first_offsets,
        "next_t": pb.next_t,
        "snapshots_started": pb.snapshots_started,
        "max_time": pb.max_time,
        "min_time": pb.min_time,
        "prev_business_time": pb.prev_business_time,
        "shard_seq": pb.shard_seq,
        "pruned_step": pb.pruned_step,
        "counts": vars(pb.counts),
    }


def _save_memory(path: Path, pb: PartitionBuild) -> None:
    conv_bid, conv_id, conv_t = pb.conversions()
    np.savez(
        path,
        scored=np.array(sorted(pb.scored), dtype=str),
        active=np.array(sorted(pb.active), dtype=str),
        dec_bid=np.array(list(pb.decayed), dtype=str),
        dec_val=np.array(list(pb.decayed.values()), dtype=np.float64).reshape(-1, 2),
        conv_bid=np.array(conv_bid, dtype=str),
        conv_id=np.array(conv_id, dtype=str),
        conv_t=np.array(conv_t, dtype=np.int64),
    )


def load_partition(root: Path, cfg: BuildConfig, p: int) -> PartitionBuild:
    """Partition ``p``'s build from its checkpoint (a fresh one when there is none); shards made
    after the checkpoint by a run that did not finish are deleted."""
    path = root / "parts" / f"p{p:05d}"
    if not path.exists() and path.with_name(path.name + ".old").exists():
        path = path.with_name(path.name + ".old")  # died between the two renames
    pb = PartitionBuild(p, cfg)
    if path.exists():
        _load_into(pb, path, cfg)
    for orphan in (root / "shards").glob(f"p{p:05d}-*"):
        if orphan.name.endswith(".tmp") or int(orphan.name.split("-")[1]) >= pb.shard_seq:
            shutil.rmtree(orphan, ignore_errors=True)
    return pb


def _load_into(pb: PartitionBuild, path: Path, cfg: BuildConfig) -> None:
    meta = json.loads((path / "meta.json").read_text())
    pb.offsets = list(meta["offsets"])
    pb.first_offsets = list(meta["first_offsets"])
    pb.next_t, pb.max_time, pb.min_time = meta["next_t"], meta["max_time"], meta["min_time"]
    pb.snapshots_started = meta["snapshots_started"]
    pb.prev_business_time, pb.shard_seq, pb.pruned_step = (
        meta["prev_business_time"],
        meta["shard_seq"],
        meta["pruned_step"],
    )
    pb.set_counts(PartitionCounts(**meta["counts"]))
    data = (path / "states.bin").read_bytes()
    i = 0
    while i < len(data):
        (n,) = _LEN.unpack_from(data, i)
        pb.restore(from_bytes(data[i + 4 : i + 4 + n], cfg.spec))
        i += 4 + n
    with np.load(path / "memory.npz", allow_pickle=False) as m:
        pb.scored = set(m["scored"].tolist())
        pb.active = set(m["active"].tolist())
        pb.decayed = {b: list(v) for b, v in zip(m["dec_bid"].tolist(), m["dec_val"].tolist(), strict=True)}
        pb.restore_conversions(m["conv_bid"].tolist(), m["conv_id"].tolist(), m["conv_t"].tolist())
    pb.restore_pending(read_shard(path / "pending"))


# ------------------------------------------------------------------------------- reading
def shard_paths(root: Path) -> list[Path]:
    """The labelled row sets: every final shard, then every partition's tail, in name order."""
    shards = sorted(p for p in (root / "shards").glob("p*") if not p.name.endswith(".tmp"))
    tails = sorted(p for p in (root / "tail").glob("p*") if not p.name.endswith(".tmp"))
    return shards + tails


def load_rows(root: Path, n_features: int, select: Callable[[Rows], np.ndarray] | None = None) -> Rows:
    return Rows.concat([read_shard(p, select) for p in shard_paths(root)], n_features)
