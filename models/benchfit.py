"""Fit time and peak memory, in memory vs external memory: ``python -m models.benchfit [--rows N]``.

Each engine fits the same generated :class:`~models.train.FitSet` (``--rows`` rows of the default
feature set's width, ranking groups of ~``--group-rows`` rows over ``--days`` days) in a fresh
child process, so its peak RSS (``ru_maxrss``) is its own: the external-memory run reads its rows
from chunk files on disk (as the streaming build's shards provide them) and never holds the whole
set, the in-memory run loads them all into a FitSet first. Development tool for the issue-19 bench
table; nothing in the trainer depends on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset import DAY_MS
from models.train import FitSet

T0_MS = 1_700_000_000_000 // DAY_MS * DAY_MS  # a UTC midnight


def synthetic_fitset(rows: int, seed: int = 0, days: int = 20, group_rows: int = 25) -> FitSet:
    """Rows shaped like the trainer's: the default feature set's columns (counts, so the popularity
    margin applies), a label that depends on a few of them, query groups (market x day) of about
    ``group_rows`` rows, times spread over ``days`` days, rows in no particular group order."""
    from features.spec import DEFAULT_SPEC

    rng = np.random.default_rng(seed)
    width = len(DEFAULT_SPEC.names)
    X = rng.poisson(2.0, size=(rows, width)).astype(np.float32)
    X[rng.random((rows, width)) < 0.05] = np.nan
    markets = max(1, rows // (days * group_rows))
    day = rng.integers(0, days, rows)
    groups = day * markets + rng.integers(0, markets, rows)
    signal = np.nan_to_num(X[:, 3] + 0.5 * X[:, 6] - 0.3 * X[:, 10])
    y = rng.poisson(np.exp(0.25 * signal - 2.0)).astype(np.float32)
    time_ms = T0_MS + day * DAY_MS + rng.integers(0, DAY_MS, rows)
    return FitSet(X, y, groups.astype(np.int64), time_ms.astype(np.int64), np.full(rows, "events", dtype=object))


def save_chunks(examples: FitSet, where: Path, chunk_rows: int) -> list[Path]:
    """``examples`` as ``.npz`` chunk files of ``chunk_rows`` rows (a stand-in for build shards)."""
    paths = []
    for i, a in enumerate(range(0, len(examples), chunk_rows)):
        part = examples.take(np.arange(a, min(len(examples), a + chunk_rows)))
        path = where / f"chunk-{i:05d}.npz"
        np.savez(path, X=part.X, y=part.y, groups=part.groups, time=part.time, source=part.source.astype(str))
        paths.append(path)
    return paths


def load_chunk(path: Path) -> FitSet:
    """A chunk written by :func:`save_chunks` (the ``Callable[[], FitSet]`` the fit engines take)."""
    with np.load(path) as z:
        return FitSet(z["X"], z["y"], z["groups"], z["time"], z["source"].astype(object))


def loaders(paths: list[Path]) -> list[Any]:
    return [partial(load_chunk, p) for p in paths]


def run_one(engine: str, chunk_dir: Path, budget: int | None, rounds: int) -> dict[str, Any]:
    """One fit, in this process, of the chunks in ``chunk_dir``; its time, peak RSS and result."""
    import xgboost  # noqa: F401  (the baseline pays for the imports too)

    from features.spec import DEFAULT_SPEC
    from models.baseline import PopularityMargin
    from models.train import TrainOptions, fit, load_chunks

    if engine == "imports":  # the floor: interpreter, numpy, xgboost, models
        return {"engine": engine, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    paths = sorted(chunk_dir.glob("chunk-*.npz"))
    t = time.perf_counter()
    source = load_chunks(loaders(paths)) if engine == "memory" else loaders(paths)
    opts = TrainOptions(objective="rank:ndcg", num_boost_round=rounds, memory_budget_bytes=budget)
    fr = fit(source, opts, DAY_MS, PopularityMargin(DEFAULT_SPEC), engine=engine)
    return {
        "engine": fr.engine,
        "seconds": round(time.perf_counter() - t, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rounds": fr.rounds,
        "inner_criterion": round(fr.best_score, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.benchfit", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--chunk-rows", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=20, help="num_boost_round (the inner search's cap)")
    ap.add_argument("--budget-mib", type=float, default=8.0, help="memory_budget_bytes of the external run")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    budget = int(args.budget_mib * 2**20)
    if args.child:
        print(json.dumps(run_one(args.child[0], Path(args.child[1]), budget, args.rounds)))
        return 0
    with tempfile.TemporaryDirectory(prefix="benchfit-") as tmp:
        ex = synthetic_fitset(args.rows)
        save_chunks(ex, Path(tmp), args.chunk_rows)
        print(f"{args.rows:,} rows x {ex.X.shape[1]} features = {ex.X.nbytes / 2**20:.0f} MiB of features; rank:ndcg")
        del ex
        for engine in ("imports", "memory", "external_memory"):
            cmd = [sys.executable, "-m", "models.benchfit", "--child", engine, tmp, "--rounds", str(args.rounds)]
            cmd += ["--budget-mib", str(args.budget_mib)]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            if engine == "imports":
                print(f"{'imports only':>16}: peak RSS {out['peak_rss_mib']:.0f} MiB (the floor of both runs)")
                continue
            print(
                f"{out['engine']:>16}: fit {out['seconds']:.1f} s, peak RSS {out['peak_rss_mib']:.0f} MiB, "
                f"{out['rounds']} rounds, inner capture+AUC {out['inner_criterion']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
