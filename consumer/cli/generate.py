"""``streamrank generate``: a simulated event history onto the input topics or into a file."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from consumer.cli import common
from consumer.config import Config


def register(sub: Any) -> None:
    p = sub.add_parser("generate", help="write a simulated event history to the input topics or a file")
    p.add_argument("--businesses", type=common.positive_int, default=200)
    p.add_argument("--days", type=common.positive_int, default=14)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cities", type=common.positive_int, default=12, help="number of cities (default 12)")
    p.add_argument("--categories", type=common.positive_int, default=12, help="number of categories (default 12)")
    p.add_argument("--out", metavar="FILE", help="write an Avro container file instead of publishing")
    p.add_argument("--partitions", type=common.positive_int, help="partitions if topics must be created")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace, cfg: Config) -> int:
    from sim.world import WorldConfig, generate_records

    world = WorldConfig(
        businesses=args.businesses, days=args.days, seed=args.seed, cities=args.cities, categories=args.categories
    )
    t0 = time.perf_counter()
    if args.out:
        from consumer.io.eventfiles import write_log

        n = write_log(args.out, generate_records(world))
        dt = time.perf_counter() - t0
        print(f"generated {n} events into {args.out} in {dt:.1f}s ({n / dt:,.0f} events/s)")
        return 0
    from consumer.io.clients import create_topics
    from consumer.io.publish import publish_records

    create_topics(cfg)
    stats = publish_records(
        cfg, generate_records(world), progress=lambda n: print(f"  {n:,} events published", file=sys.stderr)
    )
    print(
        f"generated {stats.total} events ({stats.business} business, {stats.activity} activity) into "
        f"{cfg.business_topic}/{cfg.activity_topic} in {stats.seconds:.1f}s ({stats.total / max(stats.seconds, 1e-9):,.0f} events/s)"
    )
    return 0
