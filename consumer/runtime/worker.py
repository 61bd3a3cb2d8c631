"""The worker: a thin Kafka shell around ``consumer.pipeline.process``.

One loop iteration is one batch (:meth:`Worker._batch`):

    poll → decode + order (inbox) → process + score (isolation) → publish (outputs)
         → checkpoint: sink flush → changelog → commit

Each step has its module in ``consumer.runtime``: ``inbox`` (records received, per-partition head
merge, release in order), ``isolation`` (the broker-free core, re-run record by record after a
failure), ``outputs`` (predictions and dead letters out), ``checkpoint`` (why that order makes a
crash safe), ``partitions`` and ``rebalance`` (assignment, restore, rebuild, the rewinds), ``idle``
(stalled fetches, exit when idle), ``startup`` (topics, the first model, gc), ``stats``.

Which model scores: the promoted one (``modelwatch``, hot-swapped at a batch boundary); while
nothing is promoted, the popularity baseline (``models.baseline``, ``model_version``
``popularity-<feature set>``), unless ``STREAMRANK_BASELINE=none``, where the worker waits for a
promoted model before it joins the group.

Offsets are committed only after everything the batch produced is acknowledged (at-least-once).
The checkpoint runs after every batch while the worker is caught up, and at most every
``checkpoint_interval_ms`` while it works off a backlog (predictions are sent at once either way; a
crash re-processes at most the batches since the last checkpoint, re-emitting their predictions
with the same ids). Partitions are assigned with the range assignor, so partition *p* of both
input topics always lands on the same worker, with its state (restored from changelog partition
*p* on assignment).

The one error policy is :meth:`Worker._loop`'s. Hooks for tools, all public: ``Worker.ready`` (an
event set once partitions are assigned, restored and fetching), ``Worker(on_batch=...)`` (a
:class:`BatchTiming` per turn of the loop), and the stage timers in ``Worker.metrics``
(``WorkerMetrics.stage_seconds_total``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError

from consumer.config import Config, drift_settings, label_config
from consumer.errors import StaleState, TransportError, UnprocessableBatch
from consumer.io.transport import check_transport, input_consumer, subscribe
from consumer.pipeline.arms import ArmModels
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.pipeline.decode import Decoder
from consumer.pipeline.order import RecordOrder
from consumer.pipeline.store import PartitionState
from consumer.runtime.checkpoint import Checkpoint
from consumer.runtime.idle import Idle, IdleWatch
from consumer.runtime.inbox import Inbox
from consumer.runtime.isolation import Isolation
from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.modelwatch import ModelHolder
from consumer.runtime.outputs import Outputs
from consumer.runtime.partitions import Partitions, all_fetched
from consumer.runtime.rebalance import RebalanceListener
from consumer.runtime.sink import Sink
from consumer.runtime.startup import prepare_topics, tune_gc, wait_for_model, warm_up
from consumer.runtime.stats import WorkerStats
from features.spec import DEFAULT_SPEC, FeatureSpec
from models.baseline import POPULARITY, PopularityScorer
from models.registry import ModelRegistry

__all__ = ["BatchTiming", "Worker", "WorkerStats"]

log = logging.getLogger("streamrank.worker")


@dataclass(frozen=True)
class BatchTiming:
    """One turn of the loop, for ``Worker(on_batch=...)``: whether it processed records, when it
    started (``time.perf_counter()``, ``time.process_time()``) and ended (``perf_counter``)."""

    progressed: bool
    started: float
    cpu_started: float
    finished: float


@dataclass(frozen=True)
class _Connected:
    """The parts that work on the group's consumer, built once a model serves."""

    consumer: Any
    inbox: Inbox
    partitions: Partitions
    checkpoint: Checkpoint
    isolation: Isolation
    outputs: Outputs
    idle: IdleWatch


class Worker:
    def __init__(
        self,
        cfg: Config,
        *,
        exit_when_idle_s: float | None = None,
        spec: FeatureSpec = DEFAULT_SPEC,
        worker_id: str | None = None,
        on_batch: Callable[[BatchTiming], None] | None = None,
    ):
        self.cfg = cfg
        self.spec = spec
        self.exit_when_idle_s = exit_when_idle_s
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.on_batch = on_batch
        self.stats = WorkerStats()
        self.store: dict[int, PartitionState] = {}
        self.metrics = WorkerMetrics(  # own registry: several workers can share a process
            self.worker_id, topics=cfg.input_topics, drift=drift_settings(cfg)
        )
        # Served while nothing is promoted (STREAMRANK_BASELINE=popularity): the popularity ranker
        # on this worker's feature set; none: the worker waits for a promoted model.
        fallback = PopularityScorer(spec, label_config(cfg).kinds) if cfg.baseline == POPULARITY else None
        self.models = ModelHolder(
            ModelRegistry(cfg.registry_dir), cfg.model_poll_s, on_refused=self.metrics.model_refused, fallback=fallback
        )
        self.arms = ArmModels.from_config(cfg, self.models.registry)  # None: one promoted arm, the classic path
        # Set once the group has assigned partitions, their state is restored and each has answered
        # a fetch: input produced from then on is processed without start-up delay. Cleared at revocation.
        self.ready = threading.Event()
        self._stop = threading.Event()

    # ------------------------------------------------------------------------- lifecycle
    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> WorkerStats:
        server = self.metrics.serve(self.cfg.metrics_port) if self.cfg.metrics_port else None
        try:
            return self._run()
        finally:
            self.metrics.set_phase("stopped")
            if server is not None:
                server.close()

    def _run(self) -> WorkerStats:
        cfg = self.cfg
        check_transport(cfg.transport)  # before waiting for a model: a missing client is a config error
        if self.arms is not None:
            self.arms.load_fixed()  # a fixed arm version that cannot be served is a config error too
        copartitioned = prepare_topics(cfg, self.arms)
        model = wait_for_model(
            self.models,
            self.metrics,
            self._stop,
            registry_dir=cfg.registry_dir,
            poll_s=cfg.model_poll_s,
            give_up_after_s=self.exit_when_idle_s,
        )
        if model is None:
            log.warning("stopping before any model was promoted")
            return self.stats
        self._serving(model.version)
        self.models.start()
        seconds, _ = warm_up(cfg, self.spec, model)
        log.info("compiled kernels loaded", extra={"seconds": round(seconds, 3)})
        sink = Sink(cfg, self.worker_id)
        consumer = input_consumer(cfg, cfg.group_id)
        try:
            k = self._connect(consumer, sink, copartitioned)
            log.info(
                "worker started",
                extra={
                    "worker_id": self.worker_id,
                    "group": cfg.group_id,
                    "topics": list(cfg.input_topics),
                    "transport": cfg.transport,
                    "config": cfg.describe(),
                },
            )  # describe() masks secrets
            self.metrics.set_phase("running")
            tune_gc()
            self._loop(k)
            if k.checkpoint.needed:  # stopped by a signal between checkpoints
                k.checkpoint.run()
        finally:
            self.models.stop()
            try:
                consumer.close()  # leaves the group: partitions move at once, not after a session timeout
            finally:
                sink.close()
        log.info("worker stopped", extra=self.stats.summary())
        return self.stats

    def _connect(self, consumer: Any, sink: Sink, copartitioned: set[str]) -> _Connected:
        cfg = self.cfg
        registry = FileSchemaRegistry(cfg.schema_registry or None)
        decoder = Decoder(cfg, registry)
        inbox = Inbox(consumer, RecordOrder(decoder, cfg.input_topics, self.spec), cfg.input_topics)
        checkpoint = Checkpoint(cfg, consumer, sink, self.store, self.metrics)
        partitions = Partitions(
            cfg, self.spec, consumer, decoder, self.store, inbox, checkpoint, self.metrics, self.stats
        )
        isolation = Isolation(self.spec)
        subscribe(
            consumer,
            list(cfg.input_topics),
            RebalanceListener(partitions, checkpoint, isolation, self.metrics, self.ready),
        )
        outputs = Outputs(cfg, sink, AvroCodec(registry, "Prediction"), copartitioned)
        idle = IdleWatch(consumer, inbox, checkpoint, self.metrics, self.exit_when_idle_s)
        return _Connected(consumer, inbox, partitions, checkpoint, isolation, outputs, idle)

    def _serving(self, version: str) -> None:
        self.stats.model_served(version)
        self.metrics.model_swapped(self.models.current)
        if self.models.serving_fallback:
            log.warning(
                "serving the popularity baseline: no model is promoted; the first promoted model replaces it",
                extra={"model_version": version, "registry": self.cfg.registry_dir},
            )
        else:
            log.info("serving model", extra={"model_version": version})

    # ------------------------------------------------------------------------- the loop
    def _loop(self, k: _Connected) -> None:
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
        backoff = 0.5
        rewind_due = False
        while not self._stop.is_set():
            try:
                if rewind_due:  # inside the try: with the broker still away, the rewind itself fails and is retried
                    k.partitions.rewind()
                    rewind_due = False
                progressed = self._batch(k) if self.on_batch is None else self._timed_batch(k, self.on_batch)
                backoff = 0.5
            except UnprocessableBatch as exc:
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
                k.partitions.rebuild_on_restore(exc.partition)
                rewind_due = True
                continue
            except (TransportError, KafkaError, TimeoutError) as exc:  # CommitFailed and DeliveryError included
                # Nothing of this batch was committed, or the broker is unreachable (poll, position,
                # commit, a state restore): rewind to the last commit and try again after a back-off.
                self.metrics.batch_failed(type(exc).__name__)
                log.error(
                    "batch not delivered; rewinding to the last commit",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff},
                )
                rewind_due = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                k.idle.reset()
                continue
            verdict = self._after_batch(k, progressed)
            if verdict is Idle.EXIT:
                return
            rewind_due = verdict is Idle.REWIND

    def _after_batch(self, k: _Connected, progressed: bool) -> Idle:
        new_assignment = k.partitions.take_new_assignment()
        if progressed or not k.partitions.joined or new_assignment:
            # An assignment restarts the clock: partitions just taken over (a failed worker's)
            # have everything still to read, and their first fetch can take a while.
            k.idle.reset()
            self.stats.last_progress = time.monotonic()
            return Idle.WAIT
        return k.idle.check()

    def _timed_batch(self, k: _Connected, on_batch: Callable[[BatchTiming], None]) -> bool:
        t, c = time.perf_counter(), time.process_time()
        progressed = self._batch(k)
        on_batch(BatchTiming(progressed, t, c, time.perf_counter()))
        return progressed

    # ------------------------------------------------------------------------- one batch
    def _batch(self, k: _Connected) -> bool:
        """poll → decode → order → process → score → publish → checkpoint. False: nothing processed."""
        swapped = self.models.take_swap()
        if swapped is not None:
            self._serving(swapped.version)
        self._poll(k)  # poll, decode, order into the inbox
        k.partitions.restore_pending()  # before anything of a newly assigned partition is processed
        self._update_ready(k)
        released = k.inbox.release(self.cfg.batch_size)
        if not released:
            if k.checkpoint.needed:
                k.checkpoint.run()
            return False
        model = self.models.current
        assert model is not None  # the loop starts once a model (or the baseline) serves
        t0 = time.perf_counter()
        out = k.isolation.process(released, self.store, model if self.arms is None else self.arms.bind(model))
        t1 = time.perf_counter()
        k.outputs.send(out)
        k.checkpoint.processed(released)
        produce_s = time.perf_counter() - t1
        state_s = commit_s = 0.0
        if k.checkpoint.due(k.inbox.backlog):
            state_s, commit_s = k.checkpoint.run()
        published_at = time.time()
        self.stats.account(out, model.version)
        self.metrics.observe_batch(
            out,
            model.version,
            state_s=t1 - t0,
            produce_s=produce_s + state_s,
            commit_s=commit_s,
            published_at=published_at,
        )
        return True

    def _poll(self, k: _Connected) -> None:
        m, inbox, consumed = self.metrics, k.inbox, self.stats.consumed
        m.heartbeat()
        t0 = time.perf_counter()
        # With decided items still queued, poll must not wait: they are this batch's work.
        records = k.consumer.poll(
            timeout_ms=0 if inbox.backlog else self.cfg.poll_timeout_ms, max_records=self.cfg.batch_size
        )
        t1 = time.perf_counter()
        for tp, recs in records.items():
            inbox.push(tp, recs)
            consumed[tp.topic] += len(recs)
            m.count_consumed(tp.topic, len(recs))
        if records:
            m.observe_fetch(t1 - t0, time.perf_counter() - t1)
        m.observe_lag(k.consumer, inbox.received, self.store)

    def _update_ready(self, k: _Connected) -> None:
        restored = k.partitions.restored()
        self.metrics.set_ready(restored)
        if restored and not self.ready.is_set() and all_fetched(k.consumer):
            self.ready.set()
