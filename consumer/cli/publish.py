"""``streamrank publish FILE``: an event-log file (from ``generate --out``) onto the input topics."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.cli import common
from consumer.config import Config


def register(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish an event-log file (from generate --out) onto the input topics")
    p.add_argument("file")
    p.add_argument("--partitions", type=common.positive_int, help="partitions if topics must be created")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.io.clients import create_topics
    from consumer.io.eventfiles import read_log
    from consumer.io.publish import publish_records

    create_topics(cfg)
    stats = publish_records(cfg, read_log(args.file))
    print(f"published {stats.total} events from {args.file} in {stats.seconds:.1f}s")
    return 0
