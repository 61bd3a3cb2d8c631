"""The group's callbacks: what the worker does when partitions are revoked or assigned.

Revocation: outputs and state processed since the last checkpoint are saved (not committed),
buffered input is dropped and each partition's fetch position is set back to its first
unprocessed record (the next owner re-reads it from the commit; this worker, if it keeps the
partition, from there). Assignment: partitions new to this worker have their state restored from
the changelog (by the loop, see ``partitions``); partitions it keeps keep their state (written to
the changelog at the revocation). Exactly once, the revocation aborts the open transaction
instead and drops every partition's state, which is restored from the changelog at the
assignment: the records since the last checkpoint are processed again, by whoever owns them next.
(Committing here would need the consumer's group metadata, which kafka-python guards with the
coordinator's lock: taken inside this callback, it deadlocks the client's IO thread.)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka.consumer.subscription_state import ConsumerRebalanceListener

from consumer.errors import DeliveryError
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.isolation import Isolation
from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.partitions import Partitions

log = logging.getLogger("streamrank.worker")


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(
        self,
        partitions: Partitions,
        checkpoint: Checkpoint,
        isolation: Isolation,
        metrics: WorkerMetrics,
        ready: threading.Event,
    ):
        self._partitions = partitions
        self._checkpoint = checkpoint
        self._isolation = isolation
        self._metrics = metrics
        self._ready = ready

    def on_partitions_revoked(self, revoked: Any) -> None:
        parts = sorted({tp.partition for tp in revoked})
        self._ready.clear()
        if self._checkpoint.exactly_once:
            self._abort()
        elif self._checkpoint.uncommitted:
            self._save_state()
        self._partitions.revoked(parts)
        self._isolation.forget(parts)
        self._metrics.forget_partitions(parts)
        log.info("partitions revoked", extra={"partitions": parts})

    def _save_state(self) -> None:
        """Save outputs and state before giving partitions up, but do not commit: this listener
        runs on kafka-python's IO thread, where a blocking commit raises RuntimeError (the poll
        then fails with "rebalance callback throws"). The changelog entries carry the offsets they
        reflect, so whoever re-reads the uncommitted records skips them (already_applied). If the
        flush fails, everything is restored from the changelog."""
        try:
            self._checkpoint.write_state()
        except DeliveryError as exc:
            log.error("saving state at revocation failed; state will be restored", extra={"error": str(exc)})
            self._partitions.store.clear()
        self._checkpoint.discard()  # every partition is revoked (eager protocol); the changelog says what is applied

    def _abort(self) -> None:
        self._partitions.store.clear()
        try:
            self._checkpoint.discard()
        except Exception as exc:  # noqa: BLE001 - must not escape into the client's poll; fenced or broker away: the next commit says so again
            log.error("abort at revocation failed", extra={"error": repr(exc)})

    def on_partitions_assigned(self, assigned: Any) -> None:
        by_part: dict[int, set[str]] = {}
        for tp in assigned:
            by_part.setdefault(tp.partition, set()).add(tp.topic)
        lopsided = [p for p, topics in by_part.items() if len(topics) != 2]
        if lopsided:
            log.error("assignment is not co-partitioned", extra={"partitions": lopsided})
        new = self._partitions.assigned(set(by_part))
        log.info("partitions assigned", extra={"partitions": sorted(by_part), "to_restore": new})
