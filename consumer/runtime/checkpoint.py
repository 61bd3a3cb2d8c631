"""The checkpoint: sink flush → changelog → commit, in that order, which is what makes a crash safe.

1. every prediction and dead letter sent since the last checkpoint is acknowledged (flush);
2. the feature state those records changed goes to the changelog, and is acknowledged;
3. only then are the input offsets committed.

A crash before 3 re-reads the records since the last commit: their predictions are re-emitted with
the same ids (at-least-once), and the changelog entries written in 2 carry the offsets they
reflect, so a restored state never applies a record twice (see ``sink`` and
``consumer.pipeline.store``). The worker checkpoints after every batch while it is caught up, and
at most every ``checkpoint_interval_ms`` while it works off a backlog.

Exactly once (``STREAMRANK_GUARANTEE=exactly_once``): the same three steps are one Kafka
transaction. Everything the worker sends since the last checkpoint (predictions, hold-out and
shadow outputs, dead letters, changelog entries and tombstones) is in it, and the input offsets go in
with ``send_offsets_to_transaction``; the commit makes all of it visible to ``read_committed``
readers at once, or none of it. A failure anywhere aborts the transaction and the loop's rewind
restores state from the (committed) changelog and re-reads from the committed offsets, so nothing
is re-emitted: :meth:`Checkpoint.discard` is where the abort happens.

Deletions (tombstones) are kept as markers in the changelog until the group's committed offsets
are past them, then replaced by real tombstones (:meth:`Checkpoint.forget_committed_deletions`).
"""

from __future__ import annotations

import time
from typing import Any

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from consumer.config import Config
from consumer.errors import CommitFailed
from consumer.pipeline.store import PartitionState
from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.sink import Sink


class Checkpoint:
    def __init__(
        self, cfg: Config, consumer: Any, sink: Sink, store: dict[int, PartitionState], metrics: WorkerMetrics
    ):
        self._cfg = cfg
        self._consumer = consumer
        self._sink = sink
        self._store = store
        self._metrics = metrics
        self.uncommitted: dict[tuple[str, int], int] = {}  # processed, not yet checkpointed: offset after
        self.committed: dict[Any, int] = {}  # TopicPartition -> offset committed by this worker
        self._at = time.monotonic()
        self._every_s = cfg.checkpoint_interval_ms / 1000
        self.exactly_once = sink.transactions is not None

    @property
    def needed(self) -> bool:
        """Something is processed but not committed (or, exactly once, a transaction is open: left
        open, it would hold back every read_committed reader of its partitions)."""
        return bool(self.uncommitted) or self._sink.in_transaction

    def processed(self, released: list[Any]) -> None:
        """``released`` (in offset order per topic-partition) is processed and its outputs sent."""
        u = self.uncommitted
        for item in released:
            u[(item.topic, item.partition)] = item.offset + 1

    def due(self, backlog: bool) -> bool:
        """When caught up, after every batch; else once per interval: at saturation a business's
        state is written once per interval, not once per batch."""
        return not backlog or time.monotonic() - self._at >= self._every_s

    def run(self) -> tuple[float, float]:
        """Checkpoint everything processed so far. Returns seconds spent (flushes and changelog, commit)."""
        t0 = time.perf_counter()
        if self.exactly_once:
            # Tombstones first: they belong to this transaction (a later send would open another).
            self.forget_committed_deletions(list(self._store))
            self.write_state()
            t1 = time.perf_counter()
            self._commit_transaction()
        else:
            self.write_state()
            t1 = time.perf_counter()
            self._commit()
            self.forget_committed_deletions(list(self._store))
        self._at = time.monotonic()
        return t1 - t0, time.perf_counter() - t1

    def write_state(self) -> None:
        """Steps 1 and 2: outputs acknowledged, then changed state sent to the changelog and acknowledged."""
        sink = self._sink
        sink.flush()
        # State strictly after its predictions: a state that says "applied" implies they were acked.
        ctopic = self._cfg.changelog_topic
        for p, part in self._store.items():
            if part.dirty:
                for bid, value in part.drain_changes():
                    sink.send(ctopic, bid.encode(), value, partition=p)
        sink.flush()

    def _commit(self) -> None:
        offsets = {TopicPartition(t, p): o for (t, p), o in self.uncommitted.items()}
        self.uncommitted = {}
        try:
            self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as exc:
            raise CommitFailed(str(exc)) from exc
        self.committed.update(offsets)
        self._metrics.observe_commit(offsets)

    def _commit_transaction(self) -> None:
        offsets = {TopicPartition(t, p): o for (t, p), o in self.uncommitted.items()}
        self.uncommitted = {}
        self._sink.commit(offsets, self._consumer)
        self.committed.update(offsets)
        self._metrics.observe_commit(offsets)

    def discard(self) -> None:
        """Forget what was processed since the last commit (it will be re-read, or the changelog says
        it is applied). Exactly once: abort the open transaction; the offsets this worker remembers
        committing are forgotten too (after a failed commit the broker's word is the only sure one)."""
        self.uncommitted = {}
        if self.exactly_once:
            self.committed = {}
            self._sink.abort()

    def committed_offset(self, tp: Any) -> int | None:
        """The group's committed offset of ``tp``: this worker's last commit, else the broker's."""
        off = self.committed.get(tp)
        return off if off is not None else self._consumer.committed(tp)

    def forget_committed_deletions(self, partitions: list[int]) -> None:
        """Replace deletion markers by real tombstones once the group's committed offsets are past
        them (see ``consumer.pipeline.store``). The nulls go out with the next flush; one lost in a
        crash leaves a marker, which is harmless and forgotten again after the next restore."""
        for p in partitions:
            part = self._store.get(p)
            if part is None or not part.deleted:
                continue
            committed = [
                self.committed_offset(TopicPartition(topic, p))
                for topic in (self._cfg.business_topic, self._cfg.activity_topic)
            ]
            for bid in part.forget_deleted(*committed):
                self._sink.send(self._cfg.changelog_topic, bid.encode(), None, partition=p)
