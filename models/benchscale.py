"""The trainer at scale, measured: ``python -m models.benchscale [--businesses 60 --days 8]``.

Prints the issue-19 table against its targets:

* peak RSS of a build over 1x, 4x and 16x the history (``--days`` times 1, 4, 16), each in a
  fresh process that streams the log from disk (so the figure is the build's, not the log's);
* incremental retraining: a build of a ``4 x --days`` log, then the same log plus one day: how
  many records the second run reads, in days of log;
* build events/s with 1 and 2 processes on the 16x log (fresh work directories);
* the same training run (the 4x world, in memory) with the build and the fit on one process and on
  a local Dask cluster of two worker processes: the rows the fit saw and the snapshot metrics.

The log is a simulated world (``sim``) written once to JSON-lines files per partition and topic
(reading them is part of the measured build, as reading Kafka is part of the trainer's).
Development tool: nothing in the trainer or the worker imports it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

DAY_MS = 86_400_000


class _Rec(NamedTuple):
    rank: int
    partition: int
    offset: int
    event: Any
    key: str | None = None


@dataclass(frozen=True)
class FileLog:
    """A log written by :func:`write_log` as a ``models.buildstore.PartitionLog``; ``limit``: only
    records whose delivery position is below it (a prefix of the log)."""

    root: str
    n_partitions: int
    limit: int | None = None
    only: tuple[int, ...] | None = None

    def partitions(self) -> list[int]:
        return list(self.only) if self.only is not None else list(range(self.n_partitions))

    def part(self, partition: int) -> FileLog:
        return FileLog(self.root, self.n_partitions, self.limit, (partition,))

    def read(self, partition: int, start: tuple[int, int]) -> tuple[Iterable[Any], Iterable[Any]]:
        return list(self._records(partition, 0, start[0])), self._records(partition, 1, start[1])

    def _records(self, p: int, rank: int, start: int) -> Iterator[_Rec]:
        from features.events import ActivityEvent, BusinessEvent

        cls = BusinessEvent if rank == 0 else ActivityEvent
        with open(Path(self.root) / f"p{p}-{rank}.jsonl") as fh:
            for offset, line in enumerate(fh):
                if offset < start:
                    continue
                pos, rec = json.loads(line)
                if self.limit is not None and pos >= self.limit:
                    return
                yield _Rec(rank, p, offset, cls.from_record(rec))


def write_log(root: Path, businesses: int, days: int, seed: int, partitions: int) -> tuple[int, list[int]]:
    """Write a world; return its record count and the delivery position where each day starts."""
    from sim.world import WorldConfig, generate_records

    root.mkdir(parents=True, exist_ok=True)
    files = {(p, r): open(root / f"p{p}-{r}.jsonl", "w") for p in range(partitions) for r in (0, 1)}  # noqa: SIM115
    day_starts: list[int] = []
    t0: int | None = None
    n = 0
    try:
        for kind, rec in generate_records(WorldConfig(businesses=businesses, days=days, seed=seed)):
            p = zlib.crc32(rec["business_id"].encode()) % partitions
            t0 = rec["event_time"] if t0 is None else t0
            day = (rec["event_time"] - t0) // DAY_MS
            while len(day_starts) <= day:
                day_starts.append(n)
            files[(p, 0 if kind == "business" else 1)].write(json.dumps([n, rec]) + "\n")
            n += 1
    finally:
        for fh in files.values():
            fh.close()
    return n, day_starts


def _build(log: FileLog, work: Path, workers: int) -> dict[str, Any]:
    from models.buildstore import build
    from models.streambuild import BuildConfig

    t0 = time.perf_counter()
    res = build(log, work, BuildConfig(), workers=workers)
    seconds = time.perf_counter() - t0
    return {
        "records": res.stats.records,
        "seconds": seconds,
        "events_per_s": res.stats.records / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "end_rss_mb": _rss_now_mb(),
        "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _rss_now_mb() -> float:
    """The process's resident memory now (the peak may be an import's: numba compiling or loading
    its cached kernels), from /proc; NaN where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _child(args: argparse.Namespace) -> int:
    log = FileLog(args.log, args.partitions, args.limit)
    print(json.dumps(_build(log, Path(args.work), args.workers)))
    return 0


def _run_child(log: Path, work: Path, partitions: int, workers: int, limit: int | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "models.benchscale", "--child", "--log", str(log), "--work", str(work)]
    cmd += ["--partitions", str(partitions), "--workers", str(workers)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--businesses", type=int, default=60)
    ap.add_argument("--days", type=int, default=8, help="the 1x history (4x and 16x are measured too)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    with tempfile.TemporaryDirectory(prefix="streamrank-benchscale-") as tmp:
        _report(Path(tmp), args)
    return 0


def _report(tmp: Path, args: argparse.Namespace) -> None:
    P = args.partitions
    rows = []
    for mult in (1, 4, 16):
        days = args.days * mult
        n, _ = write_log(tmp / f"log{mult}", args.businesses, days, args.seed, P)
        r = _run_child(tmp / f"log{mult}", tmp / f"work{mult}", P, 1)
        rows.append((mult, days, n, r))
        print(
            f"build {mult:>2}x history ({days} days, {n:,} records): peak RSS {r['peak_rss_mb']:,.0f} MB, "
            f"RSS at the end {r['end_rss_mb']:,.0f} MB, "
            f"{r['events_per_s']:,.0f} events/s",
            flush=True,
        )
    growth = max(r["peak_rss_mb"] for *_, r in rows) / rows[0][3]["peak_rss_mb"] - 1
    end_growth = max(r["end_rss_mb"] for *_, r in rows) / rows[0][3]["end_rss_mb"] - 1
    # Incremental: the 4x log plus one day, built after the 4x prefix.
    days = args.days * 4
    n, day_starts = write_log(tmp / "inc", args.businesses, days + 1, args.seed, P)
    first = _run_child(tmp / "inc", tmp / "work-inc", P, 1, limit=day_starts[days])
    second = _run_child(tmp / "inc", tmp / "work-inc", P, 1)
    per_day = n / (days + 1)
    # Processes: the 16x log, fresh work directories.
    one = _run_child(tmp / "log16", tmp / "work-p1", P, 1)
    two = _run_child(tmp / "log16", tmp / "work-p2", P, 2)
    # a world large enough that the gates' frame can tell rankers apart
    dist = _distributed(max(200, args.businesses), args.days * 4, args.seed, tmp)
    print()
    print("| figure | measured | target |")
    print("|---|---|---|")
    rss = " / ".join(f"{r['peak_rss_mb']:,.0f} MB" for *_, r in rows)
    end = " / ".join(f"{r['end_rss_mb']:,.0f} MB" for *_, r in rows)
    print(
        f"| peak RSS, build over 1x / 4x / 16x history | {rss} (growth {growth:+.0%}); at the end {end} "
        f"(growth {end_growth:+.0%}) | flat within 20% |"
    )
    print(
        f"| incremental retrain after +1 day on a {days}-day log | reads {second['records']:,} records "
        f"= {second['records'] / per_day:.1f} days of log (first run: {first['records']:,}) | reads <= 2 days |"
    )
    print(
        f"| build events/s, 1 -> 2 processes ({one['records']:,} records) | {one['events_per_s']:,.0f} -> "
        f"{two['events_per_s']:,.0f} ({two['events_per_s'] / one['events_per_s']:.2f}x) | >= 1.7x |"
    )
    print(dist)


def _distributed(businesses: int, days: int, seed: int, tmp: Path) -> str:
    """One training run on one process and one on a local Dask cluster (build and fit)."""
    try:
        import distributed
    except ImportError:
        return "| same model metrics, Dask vs one process | (dask not installed: pip install 'streamrank[distributed]') | |"
    from models.bench import simulated_records
    from models.daskfit import DaskEngine
    from models.registry import ModelRegistry
    from models.train import TrainOptions
    from models.trainer import train_and_register

    records = simulated_records(businesses, days, seed, partitions=4)
    opts = TrainOptions(validation_days=min(7, max(4, days // 4)))
    one = train_and_register(records, ModelRegistry(tmp / "reg1"), options=opts)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c,
        distributed.Client(c) as client,
    ):
        two = train_and_register(
            records, ModelRegistry(tmp / "reg2"), options=opts, client=client, engine=DaskEngine(client)
        )
    same = one.fit.examples == two.fit.examples
    assert one.snapshot is not None and two.snapshot is not None  # the trainer always judges a frame
    m1, m2 = one.snapshot.scores["model"], two.snapshot.scores["model"]
    return (
        f"| same model metrics, Dask (2 workers) vs one process | training set "
        f"{'identical' if same else 'DIFFERENT'} ({one.fit.examples['rows']:,} rows); snapshot AUC "
        f"{m1['auc'].value:.4f} vs {m2['auc'].value:.4f}, capture {m1['capture'].value:.4f} vs "
        f"{m2['capture'].value:.4f} | identical set; within noise |"
    )


if __name__ == "__main__":
    raise SystemExit(main())
