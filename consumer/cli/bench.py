"""``streamrank bench``: the worker against its Kafka ceiling (``make bench``; see ``consumer.tools.bench``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from consumer.cli import common


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark: passthrough ceiling vs worker, latency, state, trainer, replay",
        description="Runs every phase on an embedded broker (or --bootstrap), prints a table of "
        "min/median/max over --runs and writes OUT/bench.json.",
    )
    p.add_argument("--events", type=common.positive_int, default=100_000, help="input events per run (default 100000)")
    p.add_argument("--runs", type=common.positive_int, default=3, help="runs for min/median/max (default 3)")
    p.add_argument(
        "--half-load-s", type=float, default=6.0, help="seconds of paced input for half-load latency (default 6)"
    )
    p.add_argument(
        "--batch-size", type=common.positive_int, default=None, help="records per poll batch (default: config)"
    )
    p.add_argument("--out", default="bench-out", help="folder for bench.json (default bench-out)")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, cfg: Any) -> int:
    from consumer.tools.bench import format_table, run_bench

    # Only an explicit --bootstrap leaves the embedded broker out: the bench creates its own topics
    # and should not land on whatever cluster the environment points at by accident.
    report = run_bench(
        args.events,
        args.runs,
        Path(args.out),
        half_load_s=args.half_load_s,
        bootstrap=args.bootstrap or None,
        batch_size=args.batch_size,
    )
    print(format_table(report))
    print(f"JSON: {Path(args.out) / 'bench.json'}")
    return 0
