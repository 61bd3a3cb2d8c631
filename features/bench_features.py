"""Micro-benchmark of the feature hot paths: ``python -m features.bench_features [--businesses N]``.

Prints µs per call for update, extract_into, extract, to_bytes and from_bytes, and encoded bytes per
business, each business holding ``--events`` (default 1000) events of history. Two histories:
"spread" (30 days, the usual case) and "burst" (all inside the allowed lateness, so every event id
is still held for dedup: the worst case for size). Figures only; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from features.events import ActivityEvent, BusinessEvent
from features.extract import extract, extract_into
from features.spec import DAY_MS, DEFAULT_SPEC, HOUR_MS
from features.state import BusinessState, from_bytes, to_bytes, update

T0 = 1_700_000_000_000
_KINDS = ["PAGE_VIEW"] * 12 + ["BIZSITE_VISIT", "CALL", "DIRECTIONS", "DIRECTIONS", "REVIEW", "TIP", "CHECKIN"]


def _history(rng: random.Random, bid: str, n: int, span_ms: int) -> list:
    """Events of one business, nearly in time order: each is delayed by up to 1 h of jitter."""
    evs = [BusinessEvent(f"{bid}-c", bid, T0, "CREATED", bid, "Phoenix", "AZ", ("Restaurants",), 33.4, -112.0, 2, True)]
    acts = []
    for i in range(n):
        t = T0 + rng.randrange(span_ms)
        kind = rng.choice(_KINDS)
        user = f"user-{rng.randrange(2000):05d}" if rng.random() < 0.7 else None
        acts.append(
            (
                t + rng.randrange(HOUR_MS),
                ActivityEvent(
                    f"{bid}-{i:06d}-{rng.getrandbits(64):016x}",
                    bid,
                    user,
                    t,
                    kind,
                    None,
                    rng.randint(1, 5) if kind == "REVIEW" else None,
                ),
            )
        )
    acts.sort(key=lambda p: p[0])
    return evs + [e for _, e in acts]


def _bench(label: str, n_biz: int, n_events: int, span_ms: int, reads: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    spec = DEFAULT_SPEC
    histories = [_history(rng, f"biz-{b:05d}", n_events, span_ms) for b in range(n_biz)]
    total = sum(len(h) for h in histories)

    t = time.perf_counter()
    states: list[BusinessState] = []
    for h in histories:
        st = update(None, h[0], spec)
        for ev in h[1:]:
            st = update(st, ev, spec)
        states.append(st)
    upd = (time.perf_counter() - t) / total

    batch = np.empty((n_biz, len(spec.names)), dtype=np.float32)
    reps = max(1, reads // n_biz)
    t = time.perf_counter()
    for _ in range(reps):
        for i, st in enumerate(states):
            extract_into(st, st.max_event_ms, batch[i], spec)
    ext_into = (time.perf_counter() - t) / (reps * n_biz)
    t = time.perf_counter()
    for _ in range(reps):
        for st in states:
            extract(st, st.max_event_ms, spec)
    ext = (time.perf_counter() - t) / (reps * n_biz)
    t = time.perf_counter()
    for _ in range(reps):
        for i, st in enumerate(states):
            extract_into(st, st.max_event_ms + 3 * DAY_MS + 5 * HOUR_MS, batch[i], spec)
    ext_later = (time.perf_counter() - t) / (reps * n_biz)

    t = time.perf_counter()
    for _ in range(reps):
        blobs = [to_bytes(st) for st in states]
    enc = (time.perf_counter() - t) / (reps * n_biz)
    t = time.perf_counter()
    for _ in range(reps):
        for b in blobs:
            from_bytes(b, spec)
    dec = (time.perf_counter() - t) / (reps * n_biz)
    sizes = sorted(len(b) for b in blobs)
    dedup = sum(sum(len(k) for k in st.seen.values()) for st in states) / n_biz

    print(
        f"[{label}] {n_biz} businesses x {n_events} events over {span_ms / DAY_MS:g} days "
        f"({len(spec.names)} features, spec {spec.version})"
    )
    print(f"  update               {upd * 1e6:6.2f} µs/event   ({1 / upd / 1e3:,.0f}k events/s)")
    print(f"  extract_into (as_of=clock)   {ext_into * 1e6:6.2f} µs")
    print(f"  extract_into (as_of=+3d5h)   {ext_later * 1e6:6.2f} µs")
    print(f"  extract -> list      {ext * 1e6:6.2f} µs")
    print(f"  to_bytes             {enc * 1e6:6.2f} µs/state")
    print(f"  from_bytes           {dec * 1e6:6.2f} µs/state   ({1 / dec / 1e3:,.0f}k states/s)")
    print(f"  bytes/business       median {sizes[len(sizes) // 2]}, max {sizes[-1]}   (dedup keys held: {dedup:.0f})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--businesses", type=int, default=200)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--reads", type=int, default=20_000, help="extract/encode calls timed per figure")
    a = p.parse_args(argv)
    _bench("spread", a.businesses, a.events, 30 * DAY_MS, a.reads)
    _bench("burst", a.businesses, a.events, DEFAULT_SPEC.allowed_lateness_ms - HOUR_MS, a.reads)


if __name__ == "__main__":
    main()
