"""The ``streamrank`` command: one module per subcommand, each with ``register(sub)``.

Reading order: ``common`` (argument types, the shared flags, ``config(args)``), then the commands
in the order a user meets them: ``broker``, ``topics``, ``generate``, ``publish``, ``train``,
``run``, ``replay``, ``diff``, ``report``, ``monitor``, ``parity``, ``bench``, ``import_yelp``.

Configuration is read from the environment once (``Config.from_env``), flags override it, and the
frozen ``Config`` is passed down. Expected failures (bad arguments, an unreachable broker, a
refused model, a failed training run: any ``StreamrankError``, the project's one root, whose
docstring in ``features.errors`` shows the tree) print one line ``error: ...`` and exit 1;
tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import sys

from consumer.cli import (
    bench,
    broker,
    common,
    diff,
    generate,
    import_yelp,
    monitor,
    parity,
    publish,
    replay,
    report,
    run,
    topics,
    train,
)
from consumer.errors import StreamrankError

COMMANDS = (broker, topics, generate, publish, train, run, replay, diff, report, monitor, parity, bench, import_yelp)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrank", description="Score local businesses from Kafka event streams.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, common.config(args))
    except StreamrankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return common.EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        from kafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            print(f"error: Kafka: {exc}", file=sys.stderr)
            return common.EXIT_FAILURE
        raise
