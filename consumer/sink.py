"""Sink: everything the worker writes, and the rule that nothing is committed before it is acked.

Per batch, in this order (see ``worker``):
1. predictions and dead letters are sent and flushed (acknowledged by the broker, acks=all);
2. changed feature state is sent to the changelog and flushed;
3. only then are input offsets committed.

A crash between 1 and 2 re-emits the batch's predictions with the same ids (at-least-once); a crash
between 2 and 3 is recognised on restart by the offsets stamped in each state entry, so state is
never applied twice.
"""

from __future__ import annotations

import time
from typing import Any

from consumer.config import Config
from consumer.decode import DeadLetter
from consumer.errors import StreamrankError
from consumer.kafka import producer_kwargs


class DeliveryError(StreamrankError):
    """The broker did not acknowledge a batch's output within the delivery timeout."""


def dead_letter_headers(dl: DeadLetter, worker_id: str) -> list[tuple[str, bytes]]:
    return [
        ("dlq.reason", dl.reason.encode()),
        ("dlq.error", dl.detail[:2000].encode("utf-8", "replace")),
        ("dlq.source.topic", dl.topic.encode()),
        ("dlq.source.partition", str(dl.partition).encode()),
        ("dlq.source.offset", str(dl.offset).encode()),
        ("dlq.source.timestamp", str(dl.timestamp).encode()),
        ("dlq.worker", worker_id.encode()),
        ("dlq.failed_at", str(int(time.time() * 1000)).encode()),
    ]


class Sink:
    def __init__(self, cfg: Config, worker_id: str, producer: Any | None = None):
        from kafka import KafkaProducer

        self.cfg = cfg
        self.worker_id = worker_id
        self.producer = producer if producer is not None else KafkaProducer(**producer_kwargs(cfg))
        self._futures: list[Any] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None, headers=None) -> None:
        self._futures.append(self.producer.send(topic, key=key, value=value, partition=partition, headers=headers))

    def dead_letter(self, dl: DeadLetter) -> None:
        self.send(self.cfg.dead_letter_topic, dl.key, dl.value, headers=dead_letter_headers(dl, self.worker_id))

    def flush(self, timeout_s: float = 120.0) -> None:
        """Block until every send since the last flush is acknowledged; raise if any failed."""
        futures, self._futures = self._futures, []
        if not futures:
            return
        self.producer.flush(timeout=timeout_s)
        for f in futures:
            if not f.is_done:
                raise DeliveryError(f"{len(futures)} records not acknowledged within {timeout_s:.0f}s")
            if f.failed():
                raise DeliveryError(f"delivery failed: {f.exception}") from f.exception

    def close(self) -> None:
        try:
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=10)
