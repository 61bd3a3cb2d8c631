"""``streamrank broker``: a local broker on 127.0.0.1 until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from consumer.cli import common
from consumer.config import Config


def register(sub: Any) -> None:
    p = sub.add_parser(
        "broker", help="run a local broker on 127.0.0.1 until SIGINT/SIGTERM (Tansu, or Apache Kafka on the JVM)"
    )
    p.add_argument(
        "--engine",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: the embedded zero-dependency broker (default); kafka: Apache Kafka, single-node KRaft (needs Java 17+)",
    )
    p.add_argument("--port", type=common.port, help="listen port (default: a free one)")
    p.add_argument(
        "--log", metavar="FILE", help="broker log file (kafka: default a file in a temp folder, printed at start)"
    )
    p.set_defaults(func=cmd_broker)


def cmd_broker(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.io.brokers import start_broker

    stop = common.stop_on_signals()
    with start_broker(args.engine, port=args.port, log_path=args.log) as broker:
        print(f"bootstrap={broker.bootstrap}", flush=True)
        if broker.log_file:
            print(f"log={broker.log_file}", flush=True)
        while not stop.is_set():
            if not broker.running:
                print(f"error: the {args.engine} broker exited", file=sys.stderr)
                return common.EXIT_FAILURE
            stop.wait(0.5)
    print("broker stopped", flush=True)
    return 0
