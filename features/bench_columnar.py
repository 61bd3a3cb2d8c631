"""Python fold vs the columnar kernel: ``python -m features.bench_columnar [--businesses N]``.

On an interleaved stream of many businesses' histories (``bench_features``: 30 days, up to an hour of
delivery jitter, plus re-delivered duplicates), or on a simulated world's events in delivery order
with ``python -m sim.bench_columnar`` (features may not import sim), times the Python per-event path (``scoring.apply`` then ``extract_into`` at each scoring moment; the worker's until it folded with the kernel) against
``columnar.fold_events`` (event objects to arrays, the compiled fold, rows written into one matrix),
and the kernel alone on prebuilt arrays (activity events only). Prints µs per event, min / median /
max over ``--runs`` runs; checks the two paths' rows are the same bits. Figures only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from features import columnar as col
from features.bench_features import _history
from features.events import BusinessEvent
from features.extract import extract_into
from features.scoring import SCORED, apply, as_of
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS


def _python(events: list, out: np.ndarray) -> int:
    states: dict = {}
    n = 0
    spec = DEFAULT_SPEC
    for ev in events:
        st, outcome = apply(states.get(ev.business_id), ev, spec)
        states[ev.business_id] = st
        if outcome is SCORED:
            extract_into(st, as_of(st), out[n], spec)
            n += 1
    return n


def _columnar(events: list, out: np.ndarray) -> int:
    return col.fold_events(col.ColumnarTable(), events, out).n


def _kernel_only(events: list, out: np.ndarray) -> Callable[[], int]:
    """A timed call folding prebuilt arrays into a table that already knows every business."""
    table = col.ColumnarTable()
    for ev in events:
        if type(ev) is BusinessEvent:
            col.fold_business(table, ev)
    batch = col.activity_batch(table, [e for e in events if type(e) is not BusinessEvent])
    table.reserve_entries(len(batch.rows))
    return lambda: col.fold_batch(table, batch, out).n


def _times(label: str, runs: int, n_events: int, make: Callable[[], Callable[[], int]]) -> None:
    us = []
    for _ in range(runs):
        call = make()
        t = time.perf_counter()
        call()
        us.append((time.perf_counter() - t) / n_events * 1e6)
    print(f"  {label:<44} min {min(us):6.2f}  median {statistics.median(us):6.2f}  max {max(us):6.2f} µs/event")


def report(events: list, label: str, runs: int = 3) -> None:
    """Time the three paths on ``events`` and check the rows agree (see the module doc)."""
    n = len(events)
    acts = sum(type(e) is not BusinessEvent for e in events)
    want = np.empty((n, len(DEFAULT_SPEC.names)), np.float32)
    got = np.empty_like(want)
    t = time.perf_counter()
    _columnar(events[:100], got)
    print(f"{label}: {n} events ({acts} activity, {len(DEFAULT_SPEC.names)} features)")
    print(f"  first call (load or compile the kernels): {time.perf_counter() - t:.2f} s")
    _times("python: apply + extract_into", runs, n, lambda: lambda: _python(events, want))
    _times("columnar: fold_events (from event objects)", runs, n, lambda: lambda: _columnar(events, got))
    _times("columnar: fold_batch on prebuilt arrays", runs, acts, lambda: _kernel_only(events, got))
    m = _python(events, want)
    same = m == _columnar(events, got) and np.array_equal(want[:m].view(np.uint32), got[:m].view(np.uint32))
    print(f"  {m} rows scored; columnar rows bit-identical to python: {same}")


def _stream(businesses: int, events: int, seed: int) -> list:
    """``bench_features`` histories merged by arrival, with 1% of activity delivered twice."""
    rng = random.Random(seed)
    timed = []
    for b in range(businesses):
        h = _history(rng, f"biz-{b:05d}", events, 30 * DAY_MS)
        timed += [(ev.event_time + rng.randrange(HOUR_MS), ev) for ev in h]
        timed += [(ev.event_time + 2 * HOUR_MS, ev) for ev in h[1:] if rng.random() < 0.01]
    timed.sort(key=lambda p: p[0])
    return [ev for _, ev in timed]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--businesses", type=int, default=100)
    p.add_argument("--events", type=int, default=500, help="activity events per business")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    report(_stream(a.businesses, a.events, a.seed), f"{a.businesses} businesses x {a.events} events", a.runs)


if __name__ == "__main__":
    main()
