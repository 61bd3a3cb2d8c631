"""The worker: a thin Kafka shell around ``process``.

One loop iteration is one batch:

    poll → decode → order (per-partition head merge) → process (fold, extract, ONE model call)
         → sink: predictions + dead letters, flush → changelog, flush → commit

Offsets are committed only after everything the batch produced is acknowledged (at-least-once);
see ``sink`` for why that order makes crashes safe. The sink → changelog → commit steps run as one
checkpoint after every batch while the worker is caught up, and at most every
``checkpoint_interval_ms`` while it works off a backlog (predictions are sent at once either way; a
crash re-processes at most the batches since the last checkpoint, re-emitting their predictions
with the same ids). Partitions are assigned with the range
assignor, so partition *p* of both input topics always lands on the same worker, with its state
(restored from changelog partition *p* on assignment).

Error policy (one place, :meth:`Worker._run_batch` callers): a record that cannot be decoded or
validated is a dead letter, never an exception; a delivery or commit failure aborts the batch
without committing, and the worker re-reads from the last commit after a back-off; anything else
is a bug and stops the worker (non-zero exit), leaving offsets at the last good batch.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from kafka.consumer.subscription_state import ConsumerRebalanceListener

from consumer.config import Config
from consumer.errors import (
    StaleState,
    StreamrankError,
    TopicLayoutError,
    TransportError,
)
from consumer.io.clients import (
    check_compacted,
    check_copartitioned,
    check_reachable,
    create_topics,
    partition_counts,
)
from consumer.io.transport import check_transport, input_consumer, reader, subscribe
from consumer.pipeline.arms import ArmModels
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.pipeline.decode import Decoder
from consumer.pipeline.order import RecordOrder
from consumer.pipeline.process import BatchOutput, RowBuffer, process, process_isolated
from consumer.io.changelog import restore_partitions
from consumer.pipeline.store import PartitionState
from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.modelwatch import ModelHolder
from consumer.runtime.rebuild import rebuild_partitions, replace_in_changelog
from consumer.runtime.sink import DeliveryError, Sink
from features.order import ACTIVITY_RANK, BUSINESS_RANK, HeadMerger
from features.spec import DEFAULT_SPEC, FeatureSpec
from models.registry import ModelRegistry

log = logging.getLogger("streamrank.worker")

@dataclass
class WorkerStats:
    consumed: Counter = field(default_factory=Counter)  # per topic
    outcomes: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)  # per reason
    predictions: int = 0
    batches: int = 0
    restores: list[dict[str, Any]] = field(default_factory=list)
    rebuilds: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    last_progress: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        return {
            "consumed": dict(self.consumed),
            "predictions": self.predictions,
            "dead_letters": dict(self.dead_letters),
            "outcomes": dict(self.outcomes),
            "batches": self.batches,
            "models": self.models,
            "restores": self.restores,
            "rebuilds": self.rebuilds,
        }


class Worker:
    def __init__(self, cfg: Config, *, exit_when_idle_s: float | None = None, spec: FeatureSpec = DEFAULT_SPEC, worker_id: str | None = None):
        self.cfg = cfg
        self.spec = spec
        self.exit_when_idle_s = exit_when_idle_s
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self.store: dict[int, PartitionState] = {}
        self.mergers: dict[int, HeadMerger] = {}
        self._next: dict[Any, int] = {}  # TopicPartition -> offset after the last record received
        self._commit: dict[Any, int] = {}  # TopicPartition -> offset after the last record processed
        self._rows = RowBuffer(len(spec.names))
        self.metrics = WorkerMetrics(self.worker_id, topics=cfg.input_topics)  # own registry: several workers can share a process
        self.models = ModelHolder(ModelRegistry(cfg.registry_dir), cfg.model_poll_s, on_refused=self.metrics.model_refused)
        self.arms = ArmModels.from_config(cfg, self.models.registry)  # None: one promoted arm, the classic path
        self._swapped_to: str | None = None
        self._joined = False  # idle time counts only once the group has given us an assignment
        self._assigned = False  # an assignment arrived since the loop last looked
        # (topic, partition) -> last offset of a batch that raised in processing: up to there the
        # worker processes record by record (process_isolated).
        self._isolate_until: dict[tuple[str, int], int] = {}
        self._failed_in_a_row = 0  # unprocessable records in a row, across isolated batches
        self._to_restore: set[int] = set()
        self._rebuild_next: set[int] = set()  # partitions with an entry that failed to decode
        self._backlog = False  # the last batch left releasable items queued
        self._uncommitted: dict[tuple[str, int], int] = {}  # processed, not yet checkpointed: offset after
        self._checkpointed_at = time.monotonic()
        self._checkpoint_every_s = cfg.checkpoint_interval_ms / 1000
        self.consumer: Any = None
        self.sink: Sink | None = None
        self._copartitioned_outputs: set[str] = set()

    # ------------------------------------------------------------------------- lifecycle
    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _prepare_topics(self) -> int:
        check_reachable(self.cfg.bootstrap)
        n = check_copartitioned(self.cfg)
        cfg = self.cfg.with_overrides(partitions=n)
        outputs = [(t, n, c) for t, _, c in
                   [(cfg.predictions_topic, n, {}), (cfg.dead_letter_topic, n, {}), (cfg.changelog_topic, n, {"cleanup.policy": "compact"})]]
        if self.arms is not None:
            if self.arms.config.holdout > 0:
                outputs.append((cfg.holdout_topic, n, {}))
            if self.arms.config.shadow:
                outputs.append((cfg.shadow_topic, n, {}))
        create_topics(cfg, outputs)
        counts = partition_counts(cfg, [t for t, _, _ in outputs])
        if counts[cfg.changelog_topic] != n:
            raise TopicLayoutError(f"changelog {cfg.changelog_topic} has {counts[cfg.changelog_topic]} partitions, inputs have {n}: they must match")
        if not check_compacted(cfg, cfg.changelog_topic, "changelog"):
            log.info("changelog compaction not verified: the broker does not answer DescribeConfigs", extra={"topic": cfg.changelog_topic})
        # An output with the inputs' partition count takes the source record's partition number:
        # the same partition the key's hash would pick (inputs are keyed by business_id), without
        # hashing every key again in the producer. Otherwise the producer's partitioner decides.
        self._copartitioned_outputs = {t for t, c in counts.items() if c == n}
        return n

    def _wait_for_model(self) -> bool:
        self.metrics.set_phase("waiting_for_model")
        t0 = time.monotonic()
        announced = False
        while not self._stop.is_set():
            self.models.check_now()
            model = self.models.take_swap()
            if model is not None:
                self._note_swap(model.version)
                return True
            if not announced:
                log.warning("no promoted model yet; waiting", extra={"registry": self.cfg.registry_dir})
                announced = True
            if self.exit_when_idle_s is not None and time.monotonic() - t0 > self.exit_when_idle_s:
                return False
            self._stop.wait(min(self.cfg.model_poll_s, 1.0))
        return False

    def _note_swap(self, version: str) -> None:
        self._swapped_to = version
        self.stats.models.append({"version": version, "first_scored": None})
        self.metrics.model_swapped(self.models.current)
        log.info("serving model", extra={"model_version": version})

    def run(self) -> WorkerStats:
        server = self.metrics.serve(self.cfg.metrics_port) if self.cfg.metrics_port else None
        try:
            return self._run()
        finally:
            self.metrics.set_phase("stopped")
            if server is not None:
                server.close()

    def _run(self) -> WorkerStats:
        check_transport(self.cfg.transport)  # before waiting for a model: a missing client is a config error
        if self.arms is not None:
            self.arms.load_fixed()  # a fixed arm version that cannot be served is a config error too
        self._prepare_topics()
        if not self._wait_for_model():
            log.warning("stopping before any model was promoted")
            return self.stats
        self.models.start()
        self.sink = Sink(self.cfg, self.worker_id)
        self.consumer = input_consumer(self.cfg, self.cfg.group_id)
        subscribe(self.consumer, list(self.cfg.input_topics), _Rebalance(self))
        log.info("worker started", extra={"worker_id": self.worker_id, "group": self.cfg.group_id, "topics": list(self.cfg.input_topics),
                                          "transport": self.cfg.transport,
                                          "config": self.cfg.describe()})  # describe() masks secrets
        self.metrics.set_phase("running")
        _tune_gc()
        try:
            self._loop()
            if self._uncommitted:  # stopped by a signal between checkpoints
                self._checkpoint()
        finally:
            self.models.stop()
            try:
                self.consumer.close()  # leaves the group: partitions move at once, not after a session timeout
            finally:
                self.sink.close()
        log.info("worker stopped", extra=self.stats.summary())
        return self.stats

    def _loop(self) -> None:
        """The one error policy, at the loop boundary:

        * Kafka failing (poll, commit, a flush, a restore; the broker away or refusing): rewind to
          the last commit and retry with a back-off (0.5 s doubling to 30 s). Never exits.
        * A record that cannot be decoded or is invalid: dead letter (``decode``), not an error.
        * State written by another feature set: rebuild its partition from the inputs (``rebuild``).
        * Our own code raising on a batch: rewind, re-run it record by record; the record that
          raises goes to the dead-letter topic with reason ``unprocessable`` and the exception.
        * Record after record raising (``ProcessingHalted``), a configuration error, or anything
          else: the exception leaves the loop; the worker closes cleanly and ``streamrank run``
          prints one line and exits 1, with the input uncommitted.
        """
        from kafka.errors import KafkaError

        backoff = 0.5
        idle_since = time.monotonic()
        rewind_due = False
        while not self._stop.is_set():
            try:
                if rewind_due:  # inside the try: with the broker still away, the rewind itself fails and is retried
                    self._rewind()
                    rewind_due = False
                progressed = self._run_batch()
                backoff = 0.5
            except _Unprocessable as exc:
                # Our code raised on this batch (not Kafka): its state changes are unsaved, so
                # rewind to the last checkpoint and re-run up to the same offsets one record at a
                # time; the record that raises again goes to the dead-letter topic.
                self.metrics.batch_failed("Unprocessable")
                log.error("a batch failed in processing; re-running it record by record", extra={"error": str(exc)})
                rewind_due = True
                continue
            except StaleState as exc:
                # A changelog entry this feature set cannot read, found on its business's next
                # event: rebuild its partition from the input topics and re-read from the commit.
                log.error("unreadable state; rebuilding its partition", extra={"error": str(exc)})
                self._rebuild_next.add(exc.partition)
                rewind_due = True
                continue
            except (TransportError, _CommitFailed, KafkaError, TimeoutError) as exc:
                # Nothing of this batch was committed, or the broker is unreachable (poll, position,
                # commit, a state restore): rewind to the last commit and try again after a back-off.
                self.metrics.batch_failed(type(exc).__name__)
                log.error("batch not delivered; rewinding to the last commit",
                          extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff})
                rewind_due = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                # Failing is not idleness: without this, --exit-when-idle quits with the rewound input unread.
                idle_since = time.monotonic()
                continue
            now = time.monotonic()
            if progressed or not self._joined or self._assigned:
                # An assignment restarts the clock: partitions just taken over (a failed worker's)
                # have everything still to read, and their first fetch can take a while.
                self._assigned = False
                idle_since = now
                self.stats.last_progress = now
                continue
            behind = self._behind() if now - idle_since >= STALLED_FETCH_S else {}
            if behind:
                # Records are there (the last fetched high-water mark is past what we received)
                # and none has arrived for a while: after a broker outage kafka-python can leave a
                # partition's fetch stranded. Seeking to the same position restarts it; nothing
                # is skipped or read twice.
                log.warning("no records for a while although partitions are behind; restarting their fetch",
                            extra={"behind": sorted(f"{tp.topic}[{tp.partition}]" for tp in behind),
                                   "seconds": round(now - idle_since, 1)})
                self.metrics.batch_failed("StalledFetch")
                try:
                    for tp, offset in behind.items():
                        self.consumer.seek(tp, offset)
                except (TransportError, KafkaError) as exc:
                    log.error("restarting the fetch failed; rewinding", extra={"error": f"{type(exc).__name__}: {exc}"})
                    rewind_due = True
                idle_since = now
                continue
            if self.exit_when_idle_s is not None and now - idle_since >= self.exit_when_idle_s and self._fully_merged():
                if not self._broker_answers():
                    # No records because the broker is away, not because the input is done: an
                    # outage is not idleness (kafka-python's poll swallows fetch errors).
                    idle_since = time.monotonic()
                    continue
                if self._behind():
                    continue  # the stalled-fetch rule above deals with it
                log.info("idle; exiting", extra={"idle_s": self.exit_when_idle_s})
                return

    def _behind(self) -> dict[Any, int]:
        """Assigned input partitions whose last known high-water mark is past what this worker
        has received, with the offset to read next. (More than one past: behind a transactional
        producer the mark stays one past the last record, on the commit marker.)"""
        out = {}
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            got = self._next.get(tp)
            if got is None:
                got = self._commit.get(tp)
            if hw is not None and got is not None and hw - got > 1:
                out[tp] = got
        return out

    def _broker_answers(self) -> bool:
        """One group-coordinator round trip (the committed offset of an assigned partition). A
        worker with no partitions (a stand-by) has nothing to wait for."""
        from kafka.errors import KafkaError

        assigned = sorted(self.consumer.assignment())
        if not assigned:
            return True
        try:
            self.consumer.committed(assigned[0], timeout_ms=5000)
            return True
        except (KafkaError, TransportError) as exc:
            log.warning("broker not answering; not idle", extra={"error": f"{type(exc).__name__}: {exc}"})
            return False

    def _fully_merged(self) -> bool:
        return all(m.pending() == 0 for m in self.mergers.values())

    # ------------------------------------------------------------------------- one batch
    def _run_batch(self) -> bool:
        cfg = self.cfg
        swapped = self.models.take_swap()
        if swapped is not None:
            self._note_swap(swapped.version)
        # With decided items still queued, poll must not wait: they are this batch's work.
        timeout = 0 if self._backlog else cfg.poll_timeout_ms
        m = self.metrics
        m.heartbeat()
        t0 = time.perf_counter()
        records = self.consumer.poll(timeout_ms=timeout, max_records=cfg.batch_size)
        t1 = time.perf_counter()
        order = self._order
        for tp, recs in records.items():
            merger = self.mergers.get(tp.partition)
            if merger is None:
                merger = self.mergers[tp.partition] = HeadMerger()
            order.push(tp.topic, tp.partition, recs, merger.push)  # decode, key check, queue time
            self._next[tp] = recs[-1].offset + 1
            self.stats.consumed[tp.topic] += len(recs)
            m.count_consumed(tp.topic, len(recs))
        if records:
            m.observe_fetch(t1 - t0, time.perf_counter() - t1)
        m.observe_lag(self.consumer, self._next, self.store)
        # No pause-based back-pressure on the merge queues: the fetcher holds at most one
        # response per partition, so they stay within a few fetches (and see _restore_pending).
        if self._to_restore:
            self._restore_pending()  # before anything of a newly assigned partition is processed
        m.set_ready(self._joined and not self._to_restore)
        released = self._release(cfg.batch_size)
        self._backlog = len(released) == cfg.batch_size
        if not released:
            if self._uncommitted:
                self._checkpoint()
            return False
        model = self.models.current
        t2 = time.perf_counter()
        out = self._process(released, model if self.arms is None else self.arms.bind(model))
        t3 = time.perf_counter()
        self._send_outputs(out)
        for item in released:  # released in offset order per topic-partition
            self._uncommitted[(item.topic, item.partition)] = item.offset + 1
        t4 = time.perf_counter()
        produce_s = t4 - t3
        commit_s = 0.0
        # Checkpoint (ack outputs → changelog → commit) when caught up, else once per interval: at
        # saturation a business's state is written once per interval, not once per batch.
        if not self._backlog or time.monotonic() - self._checkpointed_at >= self._checkpoint_every_s:
            state_s = self._checkpoint()
            produce_s += state_s
            commit_s = time.perf_counter() - t4 - state_s
        published_at = time.time()
        self._account(out, model.version)
        m.observe_batch(out, model.version, state_s=t3 - t2, produce_s=produce_s, commit_s=commit_s,
                        published_at=published_at)
        return True

    def _release(self, budget: int) -> list[Any]:
        """Up to ``budget`` items whose order is decided, taken round-robin across partitions."""
        released: list[Any] = []
        parts = sorted(p for p, m in self.mergers.items() if m.pending())
        if not parts:
            return released
        self._rr = (getattr(self, "_rr", -1) + 1) % len(parts)
        for p in parts[self._rr:] + parts[: self._rr]:
            room = budget - len(released)
            if room <= 0:
                break
            b_done = self._caught_up(self.cfg.business_topic, p)
            a_done = self._caught_up(self.cfg.activity_topic, p)
            released.extend(islice(self.mergers[p].pop_ready(b_done, a_done), room))
        return released

    def _caught_up(self, topic: str, partition: int) -> bool:
        from kafka import TopicPartition

        tp = TopicPartition(topic, partition)
        hw = self.consumer.highwater(tp)
        if hw is None:
            return False
        nxt = self._next.get(tp)
        if nxt is None:
            nxt = self._next[tp] = self.consumer.position(tp, timeout_ms=5000) or 0
        return nxt >= hw

    def _process(self, released: list[Any], scorer: Any) -> BatchOutput:
        """The batch through the broker-free core. If it raises (our code failing on a record),
        the batch is rewound and re-run record by record (``process_isolated``), which
        dead-letters the culprit: see ``_loop`` for the one error policy."""
        if self._isolate_until:
            out = process_isolated(released, self.store, scorer, spec=self.spec, rows=self._rows,
                                   failed_before=self._failed_in_a_row)
            self._failed_in_a_row = out.failed_in_a_row
            for item in released:
                key = (item.topic, item.partition)
                if item.offset >= self._isolate_until.get(key, -1):
                    self._isolate_until.pop(key, None)
            return out
        try:
            return process(released, self.store, scorer, spec=self.spec, rows=self._rows)
        except StaleState:
            raise
        except Exception as exc:  # noqa: BLE001 - a record our code cannot handle, or a bug
            bounds: dict[tuple[str, int], int] = {}
            for item in released:
                key = (item.topic, item.partition)
                bounds[key] = max(bounds.get(key, -1), item.offset)
            self._isolate_until = bounds
            raise _Unprocessable(f"{type(exc).__name__}: {exc}") from exc

    def _send_outputs(self, out: BatchOutput) -> None:
        """Send a batch's predictions and dead letters; they are acknowledged at the next checkpoint."""
        send = self.sink.send
        encode = self._prediction_codec.encode
        same = self._copartitioned_outputs
        for topic, preds in ((self.cfg.predictions_topic, out.predictions), (self.cfg.holdout_topic, out.holdout),
                             (self.cfg.shadow_topic, out.shadow)):
            if not preds:
                continue
            if topic in same:
                for pred in preds:
                    send(topic, pred["business_id"].encode(), encode(pred), pred["source_partition"])
            else:
                for pred in preds:
                    send(topic, pred["business_id"].encode(), encode(pred))
        for dl in out.dead_letters:
            self.sink.dead_letter(dl, dl.partition if self.cfg.dead_letter_topic in same else None)

    def _checkpoint(self) -> float:
        """Everything processed since the last checkpoint: outputs acked, then changelog, then commit.
        Returns the seconds spent before the commit (flushes and changelog)."""
        t0 = time.perf_counter()
        self._write_state()
        produce_s = time.perf_counter() - t0
        self._commit_offsets()
        self._checkpointed_at = time.monotonic()
        self._forget_committed_deletions(list(self.store))
        return produce_s

    def _write_state(self) -> None:
        sink = self.sink
        sink.flush()
        # State strictly after its predictions: a state that says "applied" implies they were acked.
        ctopic = self.cfg.changelog_topic
        for p, part in self.store.items():
            if part.dirty:
                for bid, value in part.drain_changes():
                    sink.send(ctopic, bid.encode(), value, partition=p)
        sink.flush()

    def _forget_committed_deletions(self, partitions: list[int]) -> None:
        """Replace deletion markers by real tombstones once the group's committed offsets are past
        them (see ``statestore``). The nulls go out with the next flush; one lost in a crash
        leaves a marker, which is harmless and forgotten again after the next restore."""
        from kafka import TopicPartition

        for p in partitions:
            part = self.store.get(p)
            if part is None or not part.deleted:
                continue
            committed = []
            for topic in (self.cfg.business_topic, self.cfg.activity_topic):
                tp = TopicPartition(topic, p)
                off = self._commit.get(tp)
                committed.append(off if off is not None else self.consumer.committed(tp))
            for bid in part.forget_deleted(*committed):
                self.sink.send(self.cfg.changelog_topic, bid.encode(), None, partition=p)

    def _commit_offsets(self) -> None:
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import KafkaError

        offsets = {TopicPartition(t, p): o for (t, p), o in self._uncommitted.items()}
        self._uncommitted = {}
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as exc:
            raise _CommitFailed(str(exc)) from exc
        self._commit.update(offsets)
        self.metrics.observe_commit(offsets)

    def _account(self, out: BatchOutput, model_version: str) -> None:
        s = self.stats
        s.batches += 1
        s.predictions += len(out.predictions)
        s.outcomes.update(out.outcomes)
        for dl in out.dead_letters:
            s.dead_letters[dl.reason] += 1
            log.warning("dead letter", extra={"topic": dl.topic, "partition": dl.partition, "offset": dl.offset, "reason": dl.reason, "detail": dl.detail[:300]})
        if out.predictions and s.models and s.models[-1]["first_scored"] is None:
            first = out.predictions[0]
            s.models[-1]["first_scored"] = f"{first['source_topic']}[{first['source_partition']}]@{first['source_offset']}"
            log.info("first offset scored by model", extra={"model_version": model_version, "topic": first["source_topic"],
                                                             "partition": first["source_partition"], "offset": first["source_offset"]})

    def _rewind(self) -> None:
        """After a failed batch: drop buffered input and unsaved state; re-read from the last commit."""
        self._uncommitted = {}
        # Assigned partitions too: a rewind (or restore) that failed half-way has left some out of the store.
        parts = sorted(set(self.store) | {tp.partition for tp in self.consumer.assignment()} | self._to_restore)
        self._to_restore = set()
        self._drop(parts)
        self._restore(parts)
        for tp in list(self.consumer.assignment()):
            committed = self._commit.get(tp)
            if committed is None:
                committed = self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
            self._next.pop(tp, None)

    # ------------------------------------------------------------------------- rebalance
    def _drop(self, partitions: list[int]) -> None:
        for p in partitions:
            self.store.pop(p, None)
            self.mergers.pop(p, None)
        self._order.forget(partitions)
        for tp in [tp for tp in self._next if tp.partition in partitions]:
            del self._next[tp]

    def _restore(self, partitions: list[int]) -> None:
        if not partitions:
            return
        with self.metrics.restoring(partitions) as tracker:
            parts, rs = restore_partitions(lambda: tracker.wrap(reader(self.cfg, "restore")),
                                           self.cfg.changelog_topic, partitions, spec=self.spec)
            tracker.finished(rs)
        info = {"partitions": partitions, "entities": rs.entities, "records": rs.records,
                "seconds": round(rs.seconds, 3), "entities_per_s": round(rs.rate)}
        self.stats.restores.append(info)
        log.info("state restored", extra=info)
        stale = [p for p in partitions if parts[p].stale]
        unreadable = [p for p in partitions if p in self._rebuild_next and p not in stale]
        for group, reason in ((stale, "feature_set_changed"), (unreadable, "unreadable")):
            if group:
                self._rebuild(group, parts, reason)
        self.store.update(parts)
        if stale or unreadable:
            self._write_state()  # now, not at the next checkpoint: an idle worker would rebuild again after a restart
        self._forget_committed_deletions(partitions)

    def _rebuild(self, partitions: list[int], parts: dict[int, PartitionState], reason: str) -> None:
        """Replace ``parts``' state of ``partitions`` with a fold of the input topics up to the
        group's committed offsets (``consumer.runtime.rebuild``)."""
        from kafka import TopicPartition

        stale = {p: parts[p].stale for p in partitions}
        log.warning("changelog state unusable; rebuilding it from the input topics",
                    extra={"partitions": partitions, "reason": reason, "stale_entries": stale})
        # The broker's committed offsets, not this worker's memory of them: another worker may
        # have committed since this one last owned the partition.
        committed = {p: tuple(self.consumer.committed(TopicPartition(t, p)) for t in self.cfg.input_topics) for p in partitions}
        with self.metrics.rebuilding(partitions) as tracker:
            rebuilt, st = rebuild_partitions(lambda: tracker.wrap(reader(self.cfg, "rebuild")), self._decoder,
                                             self.cfg.input_topics, committed, spec=self.spec)
        self.metrics.rebuilt(len(partitions), st.records, reason)
        for p in partitions:
            replace_in_changelog(rebuilt[p], parts.get(p))
            parts[p] = rebuilt[p]
        self._rebuild_next.difference_update(partitions)
        info = {"partitions": partitions, "reason": reason, "records": st.records, "entities": st.entities,
                "seconds": round(st.seconds, 3), "records_per_s": round(st.rate)}
        self.stats.rebuilds.append(info)
        log.info("state rebuilt from the input topics", extra=info)

    def _rewind_unprocessed(self, partitions: list[int]) -> None:
        """Seek every input partition of ``partitions`` back to its first record not yet processed
        (the oldest still queued in the merge, else the next to fetch). A rebalance that leaves a
        partition with this worker keeps kafka-python's fetch position, which is past the queued
        input about to be dropped: without this those records would never be read again."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        for p in partitions:
            merger = self.mergers.get(p)
            for topic, rank in ((self.cfg.business_topic, BUSINESS_RANK), (self.cfg.activity_topic, ACTIVITY_RANK)):
                tp = TopicPartition(topic, p)
                offset = merger.first_offset(rank) if merger is not None else None
                if offset is None:
                    offset = self._next.get(tp)
                if offset is None:
                    continue  # nothing received since the assignment: the position is the commit
                try:
                    self.consumer.seek(tp, offset)
                except (KafkaError, TransportError, AssertionError, ValueError) as exc:
                    # The partition is already gone from the client: a new owner starts at the commit.
                    log.debug("no rewind for a revoked partition", extra={"partition": f"{topic}[{p}]", "error": repr(exc)})

    def _restore_pending(self) -> None:
        """Restore partitions assigned during the last poll. Done here, outside the rebalance
        callback, so the group's heartbeats keep flowing however long it takes. Their records
        already fetched wait in the merge queues meanwhile. (No pause/resume: kafka-python 3.0 can
        strand a paused partition's parked fetch after resume.)"""
        parts, self._to_restore = sorted(self._to_restore), set()
        self._restore([p for p in parts if p not in self.store])

    @property
    def _decoder(self) -> Decoder:
        if not hasattr(self, "_decoder_obj"):
            registry = FileSchemaRegistry(self.cfg.schema_registry or None)
            self._decoder_obj = Decoder(self.cfg, registry)
            self._prediction_codec_obj = AvroCodec(registry, "Prediction")
        return self._decoder_obj

    @property
    def _order(self) -> RecordOrder:
        """Records → merge items, with each input stream's last event time (``consumer.pipeline.order``)."""
        if not hasattr(self, "_order_obj"):
            self._order_obj = RecordOrder(self._decoder, self.cfg.input_topics)
        return self._order_obj

    @property
    def _prediction_codec(self) -> AvroCodec:
        self._decoder  # noqa: B018 - builds both codecs
        return self._prediction_codec_obj


# No records for this long while the fetched high-water marks say there are some: re-seek.
STALLED_FETCH_S = 10.0

# Young-generation collections every this many container allocations (Python's default: 700).
GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Everything alive once the worker is set up (libraries, the model) is moved out of the
    collector's view, and young collections run less often. Full collections walking those
    objects were most of the p99 latency at half load in ``make bench``."""
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


class _CommitFailed(StreamrankError):
    pass


class _Unprocessable(StreamrankError):
    pass


class _Rebalance(ConsumerRebalanceListener):
    """Revocation: buffered input is dropped and each partition's fetch position is set back to its
    first unprocessed record (the next owner re-reads it from the commit; this worker, if it keeps
    the partition, from there). Assignment: partitions new to this worker have their state restored from the changelog;
    partitions it keeps keep their state (written to the changelog at the revocation)."""

    def __init__(self, worker: Worker):
        self.w = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        parts = sorted({tp.partition for tp in revoked})
        if self.w._uncommitted:
            # Save outputs and state before giving partitions up, but do not commit: this listener
            # runs on kafka-python's IO thread, where a blocking commit raises RuntimeError (the
            # poll then fails with "rebalance callback throws"). The changelog entries carry the
            # offsets they reflect, so whoever re-reads the uncommitted records skips them
            # (already_applied). If the flush fails, restore everything from the changelog.
            try:
                self.w._write_state()
            except DeliveryError as exc:
                log.error("saving state at revocation failed; state will be restored", extra={"error": str(exc)})
                self.w.store.clear()
            self.w._uncommitted = {}  # every partition is revoked (eager protocol); the changelog says what is applied
        self.w._rewind_unprocessed(parts)
        self.w._isolate_until = {k: v for k, v in self.w._isolate_until.items() if k[1] not in parts}
        for p in parts:
            self.w.mergers.pop(p, None)
        self.w._order.forget(parts)
        for tp in [tp for tp in self.w._next if tp.partition in parts]:
            del self.w._next[tp]
        self.w.metrics.forget_partitions(parts)
        # A rebalance has begun: until the next assignment the worker waits for the group, which is
        # not idleness (on Apache Kafka a join can wait out a dead member's session timeout).
        self.w._joined = False
        log.info("partitions revoked", extra={"partitions": parts})

    def on_partitions_assigned(self, assigned: Any) -> None:
        w = self.w
        by_part: dict[int, set[str]] = {}
        for tp in assigned:
            by_part.setdefault(tp.partition, set()).add(tp.topic)
        lopsided = [p for p, topics in by_part.items() if len(topics) != 2]
        if lopsided:
            log.error("assignment is not co-partitioned", extra={"partitions": lopsided})
        keep = set(by_part)
        w._drop([p for p in list(w.store) if p not in keep])
        new = sorted(p for p in keep if p not in w.store)
        w._to_restore.update(new)
        w._joined = True
        w._assigned = True
        log.info("partitions assigned", extra={"partitions": sorted(keep), "to_restore": new})
