"""``streamrank run``: the long-running scoring worker (joins the consumer group)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from consumer.cli import common
from consumer.config import GUARANTEES, LOG_FORMATS, TRANSPORTS, Config


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="the long-running scoring worker (joins the consumer group)")
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit after this long with nothing to do (batch runs, tests)",
    )
    p.add_argument("--group", help="consumer group (default: $STREAMRANK_GROUP)")
    p.add_argument(
        "--batch-size", type=common.positive_int, help="max records per batch (default: $STREAMRANK_BATCH_SIZE)"
    )
    p.add_argument("--transport", choices=TRANSPORTS, help="Kafka client (default: $STREAMRANK_TRANSPORT)")
    p.add_argument(
        "--guarantee",
        choices=GUARANTEES,
        help="at_least_once, or exactly_once: one Kafka transaction per checkpoint (default: $STREAMRANK_GUARANTEE)",
    )
    p.add_argument("--summary", action="store_true", help="print a JSON summary on exit")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="json, text, or auto: text on a terminal, JSON otherwise (default: $STREAMRANK_LOG_FORMAT or auto)",
    )
    common.add_kafka_args(p)
    common.add_registry_args(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from consumer import logsetup
    from consumer.runtime.worker import Worker

    logsetup.setup(args.log_level, cfg.log_format)
    worker = Worker(cfg, exit_when_idle_s=args.exit_when_idle)
    worker.install_signal_handlers()
    stats = worker.run()
    if args.summary:
        print(json.dumps(stats.summary(), indent=1, default=str))
    return 0
