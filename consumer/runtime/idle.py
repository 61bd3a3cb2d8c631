"""When a batch brings nothing: is a fetch stalled, is the broker away, or is the input done?

The loop asks :meth:`IdleWatch.check` after each batch that processed nothing, while the worker
holds an assignment. No records for ``STALLED_FETCH_S`` although the fetched high-water marks say
some are there: after a broker outage kafka-python can leave a partition's fetch stranded, and
seeking to the same position restarts it (nothing is skipped or read twice). With
``exit_when_idle_s`` (tests, the bench, one-shot runs) the worker exits once nothing has arrived
for that long, everything received is processed, the broker answers (an outage is not idleness:
kafka-python's poll swallows fetch errors) and no partition is behind.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any

from kafka.errors import KafkaError

from consumer.errors import TransportError
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.inbox import Inbox
from consumer.runtime.metrics import WorkerMetrics

log = logging.getLogger("streamrank.worker")

# No records for this long while the fetched high-water marks say there are some: re-seek.
STALLED_FETCH_S = 10.0


class Idle(enum.Enum):
    WAIT = "wait"  # go on polling
    REWIND = "rewind"  # restarting a stalled fetch failed: rewind to the last commit
    EXIT = "exit"  # idle for exit_when_idle_s: stop


class IdleWatch:
    def __init__(
        self,
        consumer: Any,
        inbox: Inbox,
        checkpoint: Checkpoint,
        metrics: WorkerMetrics,
        exit_when_idle_s: float | None,
    ):
        self._consumer = consumer
        self._inbox = inbox
        self._checkpoint = checkpoint
        self._metrics = metrics
        self._exit_s = exit_when_idle_s
        self._since = time.monotonic()

    def reset(self) -> None:
        """Progress, an assignment, or a failure (failing is not idleness: without this,
        ``exit_when_idle_s`` would quit with rewound input unread)."""
        self._since = time.monotonic()

    def check(self) -> Idle:
        now = time.monotonic()
        behind = self._behind() if now - self._since >= STALLED_FETCH_S else {}
        if behind:
            verdict = self._restart_fetch(behind, now)
            self._since = now
            return verdict
        if self._exit_s is None or now - self._since < self._exit_s or not self._inbox.fully_merged():
            return Idle.WAIT
        if not self._broker_answers():
            self._since = time.monotonic()
            return Idle.WAIT
        if self._behind():
            return Idle.WAIT  # the stalled-fetch rule deals with it
        log.info("idle; exiting", extra={"idle_s": self._exit_s})
        return Idle.EXIT

    def _restart_fetch(self, behind: dict[Any, int], now: float) -> Idle:
        log.warning(
            "no records for a while although partitions are behind; restarting their fetch",
            extra={
                "behind": sorted(f"{tp.topic}[{tp.partition}]" for tp in behind),
                "seconds": round(now - self._since, 1),
            },
        )
        self._metrics.batch_failed("StalledFetch")
        try:
            for tp, offset in behind.items():
                self._consumer.seek(tp, offset)
        except (TransportError, KafkaError) as exc:
            log.error("restarting the fetch failed; rewinding", extra={"error": f"{type(exc).__name__}: {exc}"})
            return Idle.REWIND
        return Idle.WAIT

    def _behind(self) -> dict[Any, int]:
        """Assigned input partitions whose last known high-water mark is past what this worker
        has received, with the offset to read next. (More than one past: behind a transactional
        producer the mark stays one past the last record, on the commit marker.)"""
        out = {}
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            got = self._inbox.received.get(tp)
            if got is None:
                got = self._checkpoint.committed.get(tp)
            if hw is not None and got is not None and hw - got > 1:
                out[tp] = got
        return out

    def _broker_answers(self) -> bool:
        """One group-coordinator round trip (the committed offset of an assigned partition). A
        worker with no partitions (a stand-by) has nothing to wait for."""
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            return True
        try:
            self._consumer.committed(assigned[0], timeout_ms=5000)
            return True
        except (KafkaError, TransportError) as exc:
            log.warning("broker not answering; not idle", extra={"error": f"{type(exc).__name__}: {exc}"})
            return False
