"""The partitions a worker owns and their feature state: restore, rebuild, and the two rewinds.

- **Restore**: a partition new to this worker has its state read back from changelog partition
  *p* (``consumer.io.changelog``) before anything of it is processed. Done in the loop, not in
  the rebalance callback, so the group's heartbeats keep flowing however long it takes; records
  already fetched wait in the inbox meanwhile. (No pause/resume: kafka-python 3.0 can strand a
  paused partition's parked fetch after resume.)
- **Rebuild**: a changelog this feature set cannot use (another feature set's, or an entry that
  failed to decode) is replaced by a fold of the input topics up to the group's commit
  (``consumer.runtime.rebuild``), written to the changelog at once.
- **Rewind after a failed batch**: unsaved state and queued input are dropped, state restored,
  and every assigned partition re-read from the last commit.
- **Rewind at revocation** (:meth:`Partitions.rewind_unprocessed`): each input partition's fetch
  position goes back to its first record not yet processed; a rebalance that leaves a partition
  here keeps kafka-python's fetch position, which is past the queued input about to be dropped.

The group's callbacks that drive this are in ``rebalance``.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from consumer.config import Config
from consumer.errors import TransportError
from consumer.io.changelog import restore_partitions
from consumer.io.transport import reader
from consumer.pipeline.decode import Decoder
from consumer.pipeline.store import PartitionState
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.inbox import Inbox
from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.rebuild import rebuild_partitions, replace_in_changelog
from consumer.runtime.stats import WorkerStats
from features.spec import FeatureSpec

log = logging.getLogger("streamrank.worker")


def all_fetched(consumer: Any) -> bool:
    """Partitions are assigned and every one has had a fetch answered (its high-water mark is known)."""
    assigned = consumer.assignment()
    return bool(assigned) and all(consumer.highwater(tp) is not None for tp in assigned)


class Partitions:
    def __init__(
        self,
        cfg: Config,
        spec: FeatureSpec,
        consumer: Any,
        decoder: Decoder,
        store: dict[int, PartitionState],
        inbox: Inbox,
        checkpoint: Checkpoint,
        metrics: WorkerMetrics,
        stats: WorkerStats,
    ):
        self._cfg = cfg
        self._spec = spec
        self._consumer = consumer
        self._decoder = decoder
        self.store = store
        self._inbox = inbox
        self._checkpoint = checkpoint
        self._metrics = metrics
        self._stats = stats
        self.joined = False  # the group has given us an assignment (idle time counts only then)
        self._new_assignment = False  # an assignment arrived since the loop last asked
        self._to_restore: set[int] = set()
        self._rebuild_next: set[int] = set()  # partitions with an entry that failed to decode

    # ------------------------------------------------------------------ driven by the group
    def assigned(self, partitions: set[int]) -> list[int]:
        """Keep ``partitions``' state, drop the others'; return those to restore (new to this worker)."""
        self._drop([p for p in list(self.store) if p not in partitions])
        new = sorted(p for p in partitions if p not in self.store)
        self._to_restore.update(new)
        self.joined = True
        self._new_assignment = True
        return new

    def revoked(self, partitions: list[int]) -> None:
        """Queued input of ``partitions`` is dropped, their fetch set back to the first unprocessed record."""
        self.rewind_unprocessed(partitions)
        self._inbox.forget(partitions)
        # Until the next assignment the worker waits for the group, which is not idleness (on
        # Apache Kafka a join can wait out a dead member's session timeout).
        self.joined = False

    def take_new_assignment(self) -> bool:
        new, self._new_assignment = self._new_assignment, False
        return new

    def restored(self) -> bool:
        """Joined, and every assigned partition's state restored: what ``/readyz`` needs of partitions."""
        return self.joined and not self._to_restore

    def rebuild_on_restore(self, partition: int) -> None:
        """An entry of ``partition`` failed to decode: its next restore rebuilds it from the inputs."""
        self._rebuild_next.add(partition)

    # ------------------------------------------------------------------ restore and rebuild
    def restore_pending(self) -> None:
        """Restore partitions assigned during the last poll (before anything of them is processed)."""
        if self._to_restore:
            parts, self._to_restore = sorted(self._to_restore), set()
            self._restore([p for p in parts if p not in self.store])

    def _restore(self, partitions: list[int]) -> None:
        if not partitions:
            return
        with self._metrics.restoring(partitions) as tracker:
            parts, rs = restore_partitions(
                lambda: tracker.wrap(reader(self._cfg, "restore")),
                self._cfg.changelog_topic,
                partitions,
                spec=self._spec,
            )
            tracker.finished(rs)
        info = {
            "partitions": partitions,
            "entities": rs.entities,
            "records": rs.records,
            "seconds": round(rs.seconds, 3),
            "entities_per_s": round(rs.rate),
        }
        self._stats.restores.append(info)
        log.info("state restored", extra=info)
        stale = [p for p in partitions if parts[p].stale]
        unreadable = [p for p in partitions if p in self._rebuild_next and p not in stale]
        for group, reason in ((stale, "feature_set_changed"), (unreadable, "unreadable")):
            if group:
                self._rebuild(group, parts, reason)
        self.store.update(parts)
        if stale or unreadable:
            self._checkpoint.write_state()  # now, not at the next checkpoint: an idle worker would rebuild again after a restart
        self._checkpoint.forget_committed_deletions(partitions)

    def _rebuild(self, partitions: list[int], parts: dict[int, PartitionState], reason: str) -> None:
        """Replace ``parts``' state of ``partitions`` with a fold of the input topics up to the
        group's committed offsets (``consumer.runtime.rebuild``)."""
        stale = {p: parts[p].stale for p in partitions}
        log.warning(
            "changelog state unusable; rebuilding it from the input topics",
            extra={"partitions": partitions, "reason": reason, "stale_entries": stale},
        )
        # The broker's committed offsets, not this worker's memory of them: another worker may
        # have committed since this one last owned the partition.
        committed = {
            p: tuple(self._consumer.committed(TopicPartition(t, p)) for t in self._cfg.input_topics) for p in partitions
        }
        with self._metrics.rebuilding(partitions) as tracker:
            rebuilt, st = rebuild_partitions(
                lambda: tracker.wrap(reader(self._cfg, "rebuild")),
                self._decoder,
                self._cfg.input_topics,
                committed,
                spec=self._spec,
            )
        self._metrics.rebuilt(len(partitions), st.records, reason)
        for p in partitions:
            replace_in_changelog(rebuilt[p], parts.get(p))
            parts[p] = rebuilt[p]
        self._rebuild_next.difference_update(partitions)
        info = {
            "partitions": partitions,
            "reason": reason,
            "records": st.records,
            "entities": st.entities,
            "seconds": round(st.seconds, 3),
            "records_per_s": round(st.rate),
        }
        self._stats.rebuilds.append(info)
        log.info("state rebuilt from the input topics", extra=info)

    def _drop(self, partitions: list[int]) -> None:
        for p in partitions:
            self.store.pop(p, None)
        self._inbox.forget(partitions)

    # ------------------------------------------------------------------ rewinds
    def rewind(self) -> None:
        """After a failed batch: drop buffered input and unsaved state; re-read from the last commit."""
        self._checkpoint.discard()
        consumer = self._consumer
        # Assigned partitions too: a rewind (or restore) that failed half-way has left some out of the store.
        parts = sorted(set(self.store) | {tp.partition for tp in consumer.assignment()} | self._to_restore)
        self._to_restore = set()
        self._drop(parts)
        self._restore(parts)
        for tp in list(consumer.assignment()):
            committed = self._checkpoint.committed_offset(tp)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            self._inbox.received.pop(tp, None)

    def rewind_unprocessed(self, partitions: list[int]) -> None:
        """Seek every input partition of ``partitions`` back to its first record not yet processed
        (the oldest still queued in the inbox, else the next to fetch). Without this, the queued
        input of a partition this worker keeps across a rebalance would never be read again."""
        for p in partitions:
            for tp, offset in self._inbox.first_unprocessed(p):
                try:
                    self._consumer.seek(tp, offset)
                except (KafkaError, TransportError, AssertionError, ValueError) as exc:
                    # The partition is already gone from the client: a new owner starts at the commit.
                    log.debug(
                        "no rewind for a revoked partition", extra={"partition": f"{tp.topic}[{p}]", "error": repr(exc)}
                    )
