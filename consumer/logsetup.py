"""Structured logs: one JSON object per line on stderr.

Context goes in ``extra={...}`` (topic, partition, offset, model_version, ...). Values whose key
looks like a secret are masked, so a careless ``extra={"password": ...}`` cannot leak one.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_HINTS = ("password", "secret", "token", "sasl_plain", "ssl_password", "credential")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            doc[key] = "***" if any(h in key.lower() for h in _SECRET_HINTS) else value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


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


def setup(level: str = "INFO") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(KafkaClientLevels())
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python is chatty at INFO (every connection): its INFO lines only at DEBUG.
    logging.getLogger("kafka").setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
