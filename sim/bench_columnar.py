"""``features.bench_columnar`` on a simulated world: ``python -m sim.bench_columnar [--businesses N --days D]``.

Here because ``features`` may not import ``sim``; the world's delivery order has late and duplicate
deliveries and business events mid-stream (CREATED after activity, CLOSED, REOPENED).
"""

from __future__ import annotations

import argparse

from features.bench_columnar import report
from sim.world import WorldConfig, generate


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--businesses", type=int, default=60)
    p.add_argument("--days", type=int, default=20)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    events = list(generate(WorldConfig(businesses=a.businesses, days=a.days, seed=a.seed)))
    report(events, f"world: {a.businesses} businesses x {a.days} days, seed {a.seed}", a.runs)


if __name__ == "__main__":
    main()
