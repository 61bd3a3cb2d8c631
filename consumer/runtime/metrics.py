"""The worker's metrics: every series a worker exposes, in one registry per ``Worker``.

One non-default ``CollectorRegistry`` per ``Worker`` so a test can run several workers in one
process. The worker calls it at batch boundaries only: histograms are observed once per batch per
stage, counters move with ``inc(n)``, and the two per-event distributions (event-time-to-publish
latency, scores) go through :class:`BulkHistogram`, which bins a whole batch with numpy.
:mod:`consumer.runtime.health` serves them with ``/healthz`` and ``/readyz``.

Liveness is progress, not "the process is up": the poll loop must have turned within
``stall_s``, and while records it received wait uncommitted, a batch must have been committed
within ``stall_s``.
A worker restoring state (or rebuilding it from the input topics) is live as long as it reads
records; one waiting for its first model (``STREAMRANK_BASELINE=none``) is live (it is doing what it
should) but not ready. Readiness: a model is serving, the group has assigned partitions, and every
assigned partition's state is restored. The popularity baseline (``models.baseline``, served while
nothing is promoted) counts as a model: its predictions are sensible rankings, so a worker serving
it is ready; ``streamrank_serving_baseline`` (1) and ``/readyz``'s ``baseline`` field say it is
the baseline that serves.

Consumer lag is ``high-water mark − committed offset`` per input partition, from the consumer's
fetch high-water mark (``end_offsets`` is wrong on the embedded broker). Before this worker's
first commit on a partition, it is measured from the fetch position.

``python -m consumer.tools.bench --metrics-cost`` prints the per-batch cost of the worker's metric
updates.

Why one module of ~500 lines: :class:`WorkerMetrics` declares every series a worker exposes, side
by side, with the liveness and readiness rules that read them; the Prometheus rules in ``ops/``
are checked against the series it exports (``tests/ops``). The rest is the two collectors it needs
(:class:`BulkHistogram`, :class:`CallbackCollector`) and the restore progress counter.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
import time
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from consumer.pipeline.predictions import Predictions
from consumer.runtime.drift import DriftWatch
from consumer.runtime.health import MetricsServer

log = logging.getLogger("streamrank.metrics")

STAGES = ("poll", "decode", "state", "score", "produce", "commit")
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event time to acknowledged publish: sub-second when live, up to days when replaying a backlog.
LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6 * 3600.0,
    86400.0,
    7 * 86400.0,
    30 * 86400.0,
)
# rank:* objectives give margins (roughly -8..8), binary:logistic probabilities: one set covers both.
SCORE_BUCKETS = (-8.0, -4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0, 4.0, 8.0)
RESTORE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DEFAULT_STALL_S = 60.0
DEAD_LETTER_REASONS = ("undecodable", "invalid", "key_mismatch")  # consumer.pipeline.decode's categories
LAG_EVERY_S = 1.0  # lag is recomputed at most this often (Prometheus scrapes every few seconds)


# ------------------------------------------------------------------------------ bulk histogram
class BulkHistogram:
    """A Prometheus histogram fed a whole batch of values at once.

    ``prometheus_client.Histogram.observe`` costs a lock and a bucket search per value; for a
    per-event distribution that is per-event overhead in the hot path. This bins a numpy array
    in one ``searchsorted`` + ``bincount`` and exposes the usual ``_bucket``/``_sum``/``_count``.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ):
        bounds = np.asarray(sorted(float(b) for b in buckets), dtype=np.float64)
        if bounds.size == 0 or not np.all(np.isfinite(bounds)):
            raise ValueError(f"{name}: buckets must be finite upper bounds (+Inf is implied)")
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]
        self._series: dict[tuple[str, ...], list[Any]] = {}  # labels -> [counts per bucket, sum]
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Any, labels: Sequence[str] = ()) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        key = tuple(str(x) for x in labels)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
        # side="left": a value equal to a bound belongs to that bucket (le = "less or equal").
        counts = np.bincount(np.searchsorted(self._bounds, v, side="left"), minlength=len(self._le))
        total = float(v.sum())
        with self._lock:
            s = self._series.get(key)
            if s is None:
                self._series[key] = [counts.astype(np.int64), total]
            else:
                s[0] += counts
                s[1] += total

    def remove(self, labels: Sequence[str]) -> None:
        with self._lock:
            self._series.pop(tuple(str(x) for x in labels), None)

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, s[0].copy(), s[1]) for k, s in self._series.items()]
        for key, counts, total in snapshot:
            cum = np.cumsum(counts)
            fam.add_metric(list(key), [(le, float(c)) for le, c in zip(self._le, cum, strict=True)], total)
        yield fam


class CallbackCollector:
    """Gauges computed at scrape time (model age, liveness) without a timer thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        families: Callable[[], Iterable[GaugeMetricFamily]],
        names: list[tuple[str, str]],
    ):
        self._families = families
        self._names = names
        registry.register(self)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(n, d) for n, d in self._names]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families()


# ------------------------------------------------------------------------------ worker metrics
class WorkerMetrics:
    def __init__(
        self,
        worker_id: str = "",
        *,
        topics: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
        stall_s: float = DEFAULT_STALL_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        drift: Mapping[str, Any] | None = None,
    ):
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.worker_id = worker_id
        self.stall_s = stall_s
        self._clock, self._wall = clock, wall
        p = "streamrank_"
        self.consumed = Counter(p + "events_consumed", "Input records received, per topic", ["topic"], registry=r)
        self.predictions = Counter(
            p + "predictions",
            "Predictions published (acknowledged), per arm and model version",
            ["arm", "model_version"],
            registry=r,
        )
        self.dead_letters = Counter(
            p + "dead_letters", "Input records sent to the dead-letter topic, per reason", ["reason"], registry=r
        )
        self.outcomes = Counter(
            p + "event_outcomes", "What became of each processed input record", ["outcome"], registry=r
        )
        self.batches = Counter(p + "batches", "Batches processed and committed", registry=r)
        self.batch_failures = Counter(
            p + "batch_failures",
            "Batches aborted before commit (re-read after a back-off), per error",
            ["error"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            p + "batch_stage_seconds",
            "Time per batch spent in each stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.event_to_publish = BulkHistogram(
            p + "event_to_publish_seconds",
            "From a scored event's event time to its prediction being acknowledged",
            LATENCY_BUCKETS,
            registry=r,
        )
        self.scores = BulkHistogram(
            p + "score",
            "Distribution of published scores, per model version",
            SCORE_BUCKETS,
            ["model_version"],
            registry=r,
        )
        self.lag = Gauge(
            p + "consumer_lag",
            "High-water mark minus committed offset, per input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.entities = Gauge(
            p + "state_entities", "Businesses held in feature state, per partition", ["partition"], registry=r
        )
        self.restore_in_progress = Gauge(
            p + "restore_in_progress", "1 while partitions' state is being restored", registry=r
        )
        self.restore_partitions = Gauge(p + "restore_partitions", "Partitions in the restore under way", registry=r)
        self.restore_records_read = Gauge(
            p + "restore_records_read", "Changelog records read by the restore under way", registry=r
        )
        self.restore_records_remaining = Gauge(
            p + "restore_records_remaining",
            "Changelog records left to read by the restore under way (known partitions)",
            registry=r,
        )
        self.restores = Counter(p + "restores", "State restores completed", registry=r)
        self.restore_records = Counter(
            p + "restore_records", "Changelog records read by completed restores", registry=r
        )
        self.restore_seconds = Histogram(
            p + "restore_seconds", "Duration of state restores", buckets=RESTORE_BUCKETS, registry=r
        )
        self.rebuild_in_progress = Gauge(
            p + "state_rebuild_in_progress",
            "1 while partitions' state is being rebuilt from the input topics",
            registry=r,
        )
        self.rebuilds = Counter(
            p + "state_rebuilds",
            "Partitions whose state was rebuilt from the input topics, per reason "
            "(feature_set_changed: changelog of another feature-set version; unreadable: an entry failed to decode)",
            ["reason"],
            registry=r,
        )
        self.rebuild_records = Counter(
            p + "state_rebuild_records", "Input records folded by completed state rebuilds", registry=r
        )
        self.model_info = Gauge(
            p + "model_info", "The model being served (value 1)", ["model_version", "feature_set_version"], registry=r
        )
        self.model_created = Gauge(
            p + "model_created_timestamp_seconds", "When the served model was trained", registry=r
        )
        self.serving_baseline = Gauge(
            p + "serving_baseline",
            "1 while the worker serves the popularity baseline (no model promoted), else 0",
            registry=r,
        )
        self.model_swaps = Counter(p + "model_swaps", "Models swapped in (the first one included)", registry=r)
        self.model_refusals = Counter(
            p + "model_refusals", "Promoted models refused (failed to load or validate)", registry=r
        )
        self.last_commit = Gauge(
            p + "last_commit_timestamp_seconds", "Wall time of the last committed batch", registry=r
        )
        Gauge(p + "worker_info", "This worker (value 1)", ["worker_id"], registry=r).labels(worker_id).set(1)
        # Feature and score PSI against the serving model's training data; ``drift``: DriftWatch's
        # settings (window_s, min_rows, exclude), its defaults when None.
        self.drift = DriftWatch(r, **(drift or {}))
        CallbackCollector(
            r,
            self._scrape_time_families,
            [(p + "model_age_seconds", ""), (p + "live", ""), (p + "ready", ""), (p + "last_loop_age_seconds", "")],
        )

        self._stage = {s: self.stage_seconds.labels(s) for s in STAGES}
        # Series that exist at 0 from the start: rate() sees their first increase, and an alert
        # comparing them never meets an absent series.
        self._consumed: dict[str, Any] = {t: self.consumed.labels(t) for t in topics}
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        self.phase = "starting"
        self._ready = False
        self._beat: float | None = None
        self._last_commit_at: float | None = None
        self._work_since: float | None = None  # lag first seen > 0 since it was last 0
        self._restore_progress_at: float | None = None
        self._phase_before_restore = "running"
        self._lag_at = float("-inf")
        self._lag_labels: set[tuple[str, str]] = set()
        self._commits: dict[Any, int] = {}  # TopicPartition -> committed offset, this assignment only
        self._model_version: str | None = None
        self._baseline: str | None = None
        self._model_labels: tuple[str, str] | None = None
        self._model_created_s: float | None = None
        self._entity_parts: set[int] = set()

    # ---------------------------------------------------------------- lifecycle and health
    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if phase != "running":
            self._ready = False

    def heartbeat(self) -> None:
        self._beat = self._clock()

    def set_ready(self, ready: bool) -> None:
        self._ready = bool(ready) and self.phase == "running" and self._model_version is not None

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        info: dict[str, Any] = {"phase": self.phase, "worker_id": self.worker_id, "stall_s": self.stall_s}
        if self.phase in ("starting", "waiting_for_model"):
            return True, info
        if self.phase == "stopped":
            return False, info
        if self.phase in ("restoring", "rebuilding"):
            since = now - (self._restore_progress_at or now)
            info["restore_progress_age_s"] = round(since, 3)
            return since < self.stall_s, info
        beat = now - self._beat if self._beat is not None else float("inf")
        info["last_loop_age_s"] = round(beat, 3) if beat != float("inf") else None
        if beat >= self.stall_s:
            info["reason"] = "the poll loop has not turned"
            return False, info
        if self._work_since is not None:
            waiting = now - max(self._work_since, self._last_commit_at or float("-inf"))
            info["records_waiting_for_s"] = round(waiting, 3)
            if waiting >= self.stall_s:
                info["reason"] = "records are waiting and nothing was committed"
                return False, info
        return True, info

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self._ready, {
            "phase": self.phase,
            "model_version": self._model_version,
            "baseline": self._baseline,
            "worker_id": self.worker_id,
        }

    def _scrape_time_families(self) -> list[GaugeMetricFamily]:
        p = "streamrank_"
        age = (self._wall() - self._model_created_s) if self._model_created_s is not None else float("nan")
        loop_age = (self._clock() - self._beat) if self._beat is not None else float("nan")
        return [
            GaugeMetricFamily(p + "model_age_seconds", "Age of the served model (since it was trained)", value=age),
            GaugeMetricFamily(
                p + "live", "1 while the worker makes progress (what /healthz answers)", value=float(self.health()[0])
            ),
            GaugeMetricFamily(
                p + "ready",
                "1 once state is restored and a model serves (what /readyz answers)",
                value=float(self._ready),
            ),
            GaugeMetricFamily(p + "last_loop_age_seconds", "Seconds since the poll loop last turned", value=loop_age),
        ]

    # ---------------------------------------------------------------- per batch
    def count_consumed(self, topic: str, n: int) -> None:
        c = self._consumed.get(topic)
        if c is None:
            c = self._consumed[topic] = self.consumed.labels(topic)
        c.inc(n)

    def observe_fetch(self, poll_s: float, decode_s: float) -> None:
        self._stage["poll"].observe(poll_s)
        self._stage["decode"].observe(decode_s)

    def stage_seconds_total(self) -> dict[str, float]:
        """Seconds spent in each stage since the worker started (the sums of ``batch_stage_seconds``)."""
        return {
            s: self.registry.get_sample_value("streamrank_batch_stage_seconds_sum", {"stage": s}) or 0.0 for s in STAGES
        }

    def observe_batch(
        self,
        out: Any,
        model_version: str,
        *,
        state_s: float,
        produce_s: float,
        commit_s: float,
        published_at: float | None = None,
    ) -> None:
        """One committed batch: ``out`` is the ``process.BatchOutput`` that was delivered.

        Predictions are counted by the arm and model version each record carries; ``model_version``
        (the promoted model of the batch) is kept for callers and logs.
        """
        st = self._stage
        st["state"].observe(max(0.0, state_s - out.score_seconds))
        st["score"].observe(out.score_seconds)
        st["produce"].observe(produce_s)
        st["commit"].observe(commit_s)
        self.batches.inc()
        for outcome, n in out.outcomes.items():
            self.outcomes.labels(str(outcome)).inc(n)
        if out.dead_letters:
            for reason, n in _Tally(dl.reason for dl in out.dead_letters).items():
                self.dead_letters.labels(reason).inc(n)
        preds = out.predictions
        # Experiment arms (consumer.pipeline.arms) add hold-out and shadow records, each with its own arm and
        # model version; counted like the served ones, the arm label tells them apart.
        extra = [*getattr(out, "holdout", ()), *getattr(out, "shadow", ())]
        if isinstance(preds, Predictions) and not extra:  # one model and arm, as columns
            self._observe_columns(preds, getattr(out, "features", None), published_at)
            return
        published = preds + extra if extra else preds
        if not published:
            return
        keys = _Tally((p["arm"], p["model_version"]) for p in published)
        for (arm, version), n in keys.items():
            self.predictions.labels(arm, version).inc(n)
        versions = {version for _, version in keys}
        if len(versions) == 1:
            self.scores.observe_many([p["score"] for p in published], (versions.pop(),))
        else:
            for version in versions:
                self.scores.observe_many([p["score"] for p in published if p["model_version"] == version], (version,))
        if not preds:
            return
        self.drift.observe(
            getattr(out, "features", None), np.fromiter((p["score"] for p in preds), np.float64, len(preds))
        )
        now = self._wall() if published_at is None else published_at
        event_ms = np.fromiter((p["event_time"] for p in preds), dtype=np.float64, count=len(preds))
        self.event_to_publish.observe_many(now - event_ms / 1000.0)

    def _observe_columns(self, preds: Predictions, features: Any, published_at: float | None) -> None:
        """``observe_batch``'s prediction figures for a batch of one model and arm, from its arrays."""
        if not len(preds):
            return
        c = preds.columns
        self.predictions.labels(c.arm[0], c.model_version[0]).inc(len(preds))
        self.scores.observe_many(c.score, (c.model_version[0],))
        self.drift.observe(features, c.score)
        now = self._wall() if published_at is None else published_at
        self.event_to_publish.observe_many(now - c.event_time.astype(np.float64) / 1000.0)

    def observe_commit(self, offsets: dict[Any, int]) -> None:
        self._commits.update(offsets)
        self._last_commit_at = self._clock()
        self.last_commit.set(self._wall())

    def batch_failed(self, error: str) -> None:
        self.batch_failures.labels(error).inc()

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """On revocation: what this worker knew about those partitions is no longer its to report."""
        parts = set(partitions)
        for tp in [tp for tp in self._commits if tp.partition in parts]:
            del self._commits[tp]
        for labels in [lb for lb in self._lag_labels if int(lb[1]) in parts]:
            self.lag.remove(*labels)
            self._lag_labels.discard(labels)
        for p in parts & self._entity_parts:
            self.entities.remove(str(p))
            self._entity_parts.discard(p)

    def observe_lag(self, consumer: Any, fetched: dict[Any, int], store: dict[int, Any], force: bool = False) -> None:
        """Lag per assigned input partition and state size; throttled to once per ``LAG_EVERY_S``.

        ``fetched``: the worker's offset after the last record received per TopicPartition, the
        base until this worker has committed on that partition.

        Liveness counts records as waiting when the worker has *received* them and not committed
        them, not when lag > 0: behind a transactional producer the high-water mark stays one past
        the last record (the commit marker), and lag never reaches 0 on an idle partition.
        """
        now = self._clock()
        if not force and now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        seen: set[tuple[str, str]] = set()
        waiting = False
        for tp in consumer.assignment() or ():
            got, committed = fetched.get(tp), self._commits.get(tp)
            waiting = waiting or (got is not None and (committed is None or got > committed))
            hw = consumer.highwater(tp)
            base = committed if committed is not None else got
            if hw is None or base is None:
                continue
            labels = (tp.topic, str(tp.partition))
            self.lag.labels(*labels).set(max(0, hw - base))
            seen.add(labels)
        for labels in self._lag_labels - seen:
            self.lag.remove(*labels)
        self._lag_labels = seen
        if not waiting:
            self._work_since = None
        elif self._work_since is None:
            self._work_since = now
        parts = set()
        for p, part in store.items():
            self.entities.labels(str(p)).set(len(part))
            parts.add(p)
        for p in self._entity_parts - parts:
            self.entities.remove(str(p))
        self._entity_parts = parts

    # ---------------------------------------------------------------- restore
    @contextmanager
    def restoring(self, partitions: Sequence[int], phase: str = "restoring") -> Iterator[_RestoreTracker]:
        if self.phase not in ("restoring", "rebuilding"):
            self._phase_before_restore = self.phase
        self.set_phase(phase)
        self._restore_progress_at = self._clock()
        self.restore_in_progress.set(1)
        self.restore_partitions.set(len(partitions))
        self.restore_records_read.set(0)
        self.restore_records_remaining.set(0)
        tracker = _RestoreTracker(self)
        try:
            yield tracker
        finally:
            self.restore_in_progress.set(0)
            self.restore_partitions.set(0)
            self.restore_records_remaining.set(0)
            self.set_phase(self._phase_before_restore)

    @contextmanager
    def rebuilding(self, partitions: Sequence[int]) -> Iterator[_RestoreTracker]:
        """A rebuild is watched like a restore (live while it reads records; the restore_records_*
        gauges count its input records), in its own phase."""
        with self.restoring(partitions, phase="rebuilding") as tracker:
            self.rebuild_in_progress.set(1)
            try:
                yield tracker
            finally:
                self.rebuild_in_progress.set(0)

    def rebuilt(self, partitions: int, records: int, reason: str) -> None:
        self.rebuilds.labels(reason).inc(partitions)
        self.rebuild_records.inc(records)

    def _restore_progress(self, n: int, remaining: int | None) -> None:
        self._restore_progress_at = self._clock()
        self.restore_records_read.inc(n)
        if remaining is not None:
            self.restore_records_remaining.set(remaining)

    # ---------------------------------------------------------------- model
    def model_swapped(self, model: Any) -> None:
        labels = (model.version, str(getattr(model, "feature_set_version", "")))
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.remove(*self._model_labels)
        self.model_info.labels(*labels).set(1)
        self.predictions.labels("default", model.version)
        self._model_labels = labels
        self._model_version = model.version
        # A baseline (models.baseline) marks itself; it serves sensible predictions, so /readyz is ready with it.
        self._baseline = getattr(model, "baseline", None)
        self.serving_baseline.set(1 if self._baseline else 0)
        self._model_created_s = model_created_s(model.version, getattr(model, "metadata", None))
        if self._model_created_s is not None:
            self.model_created.set(self._model_created_s)
        self.model_swaps.inc()
        self.drift.on_model(model, tuple(getattr(getattr(model, "spec", None), "names", ())))

    def model_refused(self, version: str, reason: str) -> None:
        self.model_refusals.inc()

    # ---------------------------------------------------------------- serving
    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        return MetricsServer(self.registry, port, host=host, health=self.health, readiness=self.readiness)


class _RestoreTracker:
    def __init__(self, metrics: WorkerMetrics):
        self._m = metrics

    def wrap(self, consumer: Any) -> _CountingConsumer:
        return _CountingConsumer(consumer, self._m)

    def finished(self, stats: Any) -> None:
        m = self._m
        m.restores.inc()
        m.restore_records.inc(stats.records)
        m.restore_seconds.observe(stats.seconds)


class _CountingConsumer:
    """The restore's consumer, counting what each poll returns (``statestore`` has no progress
    hook, and a restore can be long: liveness and progress must see it advance). It only reads
    what the consumer already holds (``highwater``): ``position`` may talk to the broker."""

    def __init__(self, consumer: Any, metrics: WorkerMetrics):
        self._c = consumer
        self._m = metrics
        self._next: dict[Any, int] = {}

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        batch = self._c.poll(*args, **kwargs)
        n = 0
        for tp, recs in batch.items():
            if recs:
                n += len(recs)
                self._next[tp] = recs[-1].offset + 1
        remaining, known = 0, False
        for tp in self._c.assignment() or ():
            hw = self._c.highwater(tp)
            if hw is None:
                continue
            nxt = self._next.get(tp)
            if nxt is None and hw > 0:  # fetched nothing yet: where it starts (compaction) is not known
                continue
            known = True
            remaining += max(0, hw - (nxt or 0))
        self._m._restore_progress(n, remaining if known else None)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)


_VERSION_TIME = re.compile(r"^v(\d{14})-")


def model_created_s(version: str, metadata: dict[str, Any] | None) -> float | None:
    """When a model was trained: its metadata's ``created_at``, else the time in its version name."""
    created = (metadata or {}).get("created_at")
    if isinstance(created, str):
        try:
            t = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            return (t if t.tzinfo else t.replace(tzinfo=_dt.UTC)).timestamp()
        except ValueError:
            pass
    m = _VERSION_TIME.match(version or "")
    if m:
        return _dt.datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=_dt.UTC).timestamp()
    return None
