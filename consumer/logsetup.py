"""Logs: one JSON object per line for machines, one readable line for people.

The format is a setting (``STREAMRANK_LOG_FORMAT`` or ``--log-format``): ``json``, ``text`` or
``auto`` (the default): text when stderr is a terminal, JSON otherwise, so containers and log
shippers get JSON and a person at a shell gets lines they can read. Context goes in
``extra={...}`` (topic, partition, offset, model_version, ...) and is printed in both formats.
Values whose key looks like a secret are masked, so a careless ``extra={"password": ...}`` cannot
leak one. ``setup(..., file=PATH)`` sends the whole log to a file as JSON and only WARNING and
above to the console (``make demo``: the story on the console, the log in the file it names).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from consumer.config import LOG_FORMATS
from consumer.errors import ConfigError

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_HINTS = ("password", "secret", "token", "sasl_plain", "ssl_password", "credential")


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` fields, secrets masked."""
    return {
        key: "***" if any(h in key.lower() for h in _SECRET_HINTS) else value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO  streamrank.worker  partitions assigned  partitions=[0, 1]`` (local time)."""

    def format(self, record: logging.LogRecord) -> str:
        context = "  ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<5} {record.name}  {record.getMessage()}"
        if context:
            line += f"  {context}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def formatter(fmt: str, stream: Any) -> logging.Formatter:
    """The formatter ``fmt`` names; ``auto`` is text on a terminal, JSON elsewhere."""
    if fmt not in LOG_FORMATS:
        raise ConfigError(
            f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)} (STREAMRANK_LOG_FORMAT or --log-format)"
        )
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    return TextFormatter() if fmt == "text" else JsonFormatter()


class KafkaClientLevels(logging.Filter):
    """The Kafka client's own records, mapped in one place. kafka-python logs WARNING and ERROR
    for its normal lifecycle (connecting while a broker starts, a metadata refresh cancelled by a
    close, a fetch cut by a rebalance, a slow event-loop task during training); a successful run
    that prints "error" teaches operators to ignore errors. Every failure that matters is reported
    by streamrank with its own line (batch not delivered, broker unreachable, refused commit), so
    the client's records are kept at DEBUG, except security failures (SASL, SSL, authorization),
    which an operator must see as they are."""

    _KEEP = ("sasl", "ssl", "authenticat", "authoriz")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and (record.name == "kafka" or record.name.startswith("kafka.")):
            if not any(k in record.getMessage().lower() for k in self._KEEP):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        return True


def setup(
    level: str = "INFO", fmt: str = "auto", *, file: str | Path | None = None, console_level: str = "WARNING"
) -> None:
    """Route every record at ``level`` or above to stderr in ``fmt``; with ``file``, to the file
    (JSON) and only ``console_level`` and above to stderr."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter(fmt, sys.stderr))
    handlers: list[logging.Handler] = [console]
    if file is not None:
        console.setLevel(console_level)
        to_file = logging.FileHandler(file, encoding="utf-8")
        to_file.setFormatter(JsonFormatter())
        handlers.append(to_file)
    for handler in handlers:
        handler.addFilter(KafkaClientLevels())
        root.addHandler(handler)
    root.setLevel(level)
    # kafka-python is chatty at INFO (every connection): its INFO lines only at DEBUG.
    logging.getLogger("kafka").setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
