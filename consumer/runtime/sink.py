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
from consumer.errors import DeliveryError
from consumer.io.transport import (
    KafkaPythonOutput,
    OutputProducer,
    TransactionalOutput,
    output_producer,
    transactional_id,
    transactional_output,
)
from consumer.pipeline.decode import DeadLetter

__all__ = ["DeliveryError", "Sink", "dead_letter_headers"]


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
        """``producer``: a kafka-python-style producer to use instead of the configured transport's."""
        self.cfg = cfg
        self.worker_id = worker_id
        self.transactions: TransactionalOutput | None = None
        if producer is not None:
            self.output: OutputProducer = KafkaPythonOutput(producer)
        elif cfg.guarantee == "exactly_once":
            self.output = self.transactions = transactional_output(cfg, transactional_id(cfg))
        else:
            self.output = output_producer(cfg)
        self.send = self.output.send  # the hot path: one attribute lookup less per record
        self.send_many = self.output.send_many

    @property
    def in_transaction(self) -> bool:
        """exactly_once: records were sent since the last commit or abort."""
        return self.transactions is not None and self.transactions.in_transaction

    def commit(self, offsets: dict[Any, int], consumer: Any) -> None:
        """exactly_once: outputs, changelog and ``offsets`` (TopicPartition -> next offset) committed together."""
        assert self.transactions is not None
        self.transactions.commit(offsets, consumer)

    def abort(self) -> None:
        """exactly_once: drop everything sent since the last commit (a no-op at least once: sent is sent)."""
        if self.transactions is not None:
            self.transactions.abort()

    def dead_letter(self, dl: DeadLetter, partition: int | None = None) -> None:
        self.send(
            self.cfg.dead_letter_topic, dl.key, dl.value, partition, headers=dead_letter_headers(dl, self.worker_id)
        )

    def flush(self, timeout_s: float = 120.0) -> None:
        """Block until every send since the last flush is acknowledged; raise if any failed."""
        self.output.flush(timeout_s)

    def close(self) -> None:
        self.output.close()
