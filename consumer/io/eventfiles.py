"""Event logs outside Kafka: one Avro object-container file holding both input event types.

Delivery order is kept (the union's branch says which type each record is), so a file replays
exactly like the topics it stands for. Standard Avro tools read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import fastavro

from consumer.pipeline.codec import load_schema_file

BUSINESS = "streamrank.events.BusinessEvent"
ACTIVITY = "streamrank.events.ActivityEvent"
KIND_BY_NAME = {BUSINESS: "business", ACTIVITY: "activity"}
NAME_BY_KIND = {v: k for k, v in KIND_BY_NAME.items()}


def log_schema() -> Any:
    return fastavro.parse_schema([load_schema_file("business_event.avsc"), load_schema_file("activity_event.avsc")])


def write_log(path: str | Path, records: Iterable[tuple[str, dict[str, Any]]], codec: str = "deflate") -> int:
    """Write ('business'|'activity', record) pairs in order; returns the count."""
    n = 0

    def tagged() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal n
        for kind, rec in records:
            n += 1
            yield (NAME_BY_KIND[kind], rec)

    with open(path, "wb") as f:
        fastavro.writer(f, log_schema(), tagged(), codec=codec)
    return n


def read_log(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ('business'|'activity', record) pairs in the order they were written."""
    with open(path, "rb") as f:
        for item in fastavro.reader(f, return_record_name=True):
            name, rec = cast(tuple, item)  # the log's schema is a union of two records: (name, record)
            yield KIND_BY_NAME[name], rec
