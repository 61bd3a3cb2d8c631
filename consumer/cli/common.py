"""What every ``streamrank`` subcommand shares: argument types, the Kafka/registry flags, the config.

Each command module defines ``register(sub)``, adding its parser with ``set_defaults(func=...)``;
``func(args, cfg)`` returns the exit code. ``config(args)`` reads the environment once
(``Config.from_env``) and applies the flags given on the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import threading

from consumer.config import Config

EXIT_USAGE = 2
EXIT_FAILURE = 1


def add_kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)"
    )


def add_registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="DIR", help="model registry directory (default: $STREAMRANK_REGISTRY)")


# Flags that override a Config field of the same meaning, when a command defines them.
_OVERRIDES = {
    "bootstrap": "bootstrap",
    "registry": "registry_dir",
    "partitions": "partitions",
    "replication": "replication",
    "group": "group_id",
    "batch_size": "batch_size",
    "transport": "transport",
    "guarantee": "guarantee",
    "log_format": "log_format",
}


def config(args: argparse.Namespace) -> Config:
    given = vars(args)
    cfg = Config.from_env().with_overrides(**{field: given.get(flag) for flag, field in _OVERRIDES.items()})
    cfg.validate()
    return cfg


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def port(text: str) -> int:
    v = positive_int(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a TCP port")
    return v


def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '1d' (or plain seconds) → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 6h, 1d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def parse_time_ms(text: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or epoch milliseconds → epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch ms nor an ISO-8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: long-running commands stop cleanly between steps."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
