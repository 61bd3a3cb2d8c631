"""``streamrank topics create``: make streamrank's missing topics (idempotent, co-partitioned inputs)."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.cli import common
from consumer.config import Config


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="manage streamrank's topics")
    p.add_argument("action", choices=["create"], help="create: make missing topics (idempotent, co-partitioned inputs)")
    p.add_argument(
        "--partitions", type=common.positive_int, help="partitions per topic (default: $STREAMRANK_PARTITIONS or 4)"
    )
    p.add_argument(
        "--replication", type=common.positive_int, help="replication factor (default: $STREAMRANK_REPLICATION or 1)"
    )
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_topics)


def cmd_topics(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.io.clients import create_topics

    for name, outcome in create_topics(cfg).items():
        print(f"{name}: {outcome}")
    return 0
