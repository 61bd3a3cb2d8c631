"""The monitor's Kafka shell: read the topics, feed ``MonitorCore``, expose its snapshot.

* **Partitions.** One monitor reads *every* partition of the prediction topics (serving, hold-out,
  shadow: whichever exist; topics created later are picked up) and of the activity topic, by
  manual assignment: a market's ranking spans partitions, so the monitor cannot share them out.
  It commits its positions under ``STREAMRANK_MONITOR_GROUP`` (so lag tools see it) but never
  starts from them.
* **Restart: rebuilt from the topics.** On start every partition is read from its beginning, so
  the windows, the latest scores and the popularity counts are exactly those of a monitor that
  never stopped (up to what the topics still hold). It is ready (``/readyz``) once it has caught
  up with every partition once, and exports its business figures only from then on: a rebuild's
  partial figures (a window half read) never reach Prometheus, where a short ``for:`` could fire
  on them. Its progress (``streamrank_monitor_pending`` and the like) is exported throughout.
* **Reader isolation.** ``read_committed``: with exactly-once workers, aborted predictions never
  count.
* **Release.** Each partition's newest event time is its watermark; records are released to the
  core up to the slowest partition that is not caught up, minus ``STREAMRANK_MONITOR_SETTLE_MS``;
  when every partition is caught up and nothing arrived for ``QUIET_S``, everything is released.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from consumer.config import Config
from consumer.errors import DecodeError
from consumer.monitor.core import MonitorCore, MonitorSettings, Snapshot
from consumer.monitor.exposition import MonitorMetrics

log = logging.getLogger("streamrank.monitor")
QUIET_S = 5.0
LIVE_AFTER_S = 60.0  # /healthz fails when the poll loop has not turned for this long


class Monitor:
    def __init__(
        self, cfg: Config, settings: MonitorSettings | None = None, metrics: MonitorMetrics | None = None
    ) -> None:
        from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry

        self.cfg = cfg
        self.settings = settings or MonitorSettings.from_config(cfg)
        self.core = MonitorCore(self.settings)
        self.metrics = metrics or MonitorMetrics()
        registry = FileSchemaRegistry(cfg.schema_registry or None)
        self._pred_codec = AvroCodec(registry, "Prediction")
        self._act_codec = AvroCodec(registry, "ActivityEvent")
        self.prediction_topics = list(dict.fromkeys([cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic]))
        self._stop = threading.Event()
        self._positions: dict[Any, int] = {}
        self._watermarks: dict[Any, int] = {}
        self._last_turn = time.monotonic()
        self._last_record = time.monotonic()
        self.ready = False
        self.snapshot: Snapshot | None = None

    # ------------------------------------------------------------------------------ health
    def health(self) -> tuple[bool, dict]:
        age = time.monotonic() - self._last_turn
        return age < LIVE_AFTER_S, {"last_poll_s_ago": round(age, 1)}

    def readiness(self) -> tuple[bool, dict]:
        return self.ready, {"phase": "monitoring" if self.ready else "rebuilding", **self.core.memory()}

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------------------ Kafka
    def _consumer(self) -> Any:
        from kafka import KafkaConsumer

        from consumer.io.clients import check_reachable, consumer_kwargs

        check_reachable(self.cfg.bootstrap)
        return KafkaConsumer(
            **consumer_kwargs(
                self.cfg, self.cfg.monitor_group, max_poll_records=10_000, isolation_level="read_committed"
            )
        )

    def _assign_new(self, consumer: Any) -> None:
        """Assign the partitions of topics that exist now; new ones from their beginning."""
        from kafka import TopicPartition

        consumer.topics()  # refresh the metadata: topics created since the last look
        tps = []
        for topic in [*self.prediction_topics, self.cfg.activity_topic]:
            for p in sorted(consumer.partitions_for_topic(topic) or ()):
                tps.append(TopicPartition(topic, p))
        new = [tp for tp in tps if tp not in self._positions]
        if not new:
            return
        consumer.assign(tps)
        for tp in tps:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
        consumer.seek_to_beginning(*new)
        for tp in new:
            self._positions[tp] = -1
        log.info("monitor reads", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in new]})

    def _feed(self, batch: dict[Any, list[Any]]) -> int:
        from features.errors import InvalidEvent
        from features.events import ActivityEvent

        n = 0
        for tp, recs in batch.items():
            is_activity = tp.topic == self.cfg.activity_topic
            wm = self._watermarks.get(tp, -1)
            for rec in recs:
                n += 1
                self._positions[tp] = rec.offset + 1
                try:
                    if is_activity:
                        ev = ActivityEvent.from_record(
                            self._act_codec.decode(rec.value, rec.topic, rec.partition, rec.offset)
                        )
                        self.core.add_activity(ev.business_id, ev.kind, ev.event_id, ev.event_time)
                        wm = max(wm, ev.event_time)
                    else:
                        p = self._pred_codec.decode(rec.value, rec.topic, rec.partition, rec.offset)
                        self.core.add_prediction(p)
                        wm = max(wm, int(p["event_time"]))
                except (DecodeError, InvalidEvent, TypeError):
                    self.metrics.undecodable.labels(tp.topic).inc()
            self._watermarks[tp] = wm
            self.metrics.records.labels(tp.topic).inc(len(recs))
        return n

    def _caught_up(self, consumer: Any, tp: Any) -> bool:
        hw = consumer.highwater(tp)
        pos = self._positions.get(tp, -1)
        if hw is None:
            return False
        return pos >= hw or (pos < 0 and hw == 0)

    def _release(self, consumer: Any, got: int) -> None:
        behind = [tp for tp in self._positions if not self._caught_up(consumer, tp)]
        now = time.monotonic()
        if got:
            self._last_record = now
        if behind:
            upto = min(self._watermarks.get(tp, -1) for tp in behind) - self.settings.settle_ms
            self.core.release(upto)
            return
        if not self.ready:
            self.ready = True
            self.metrics.ready.set(1)
            log.info("monitor caught up with every partition: ready", extra=self.core.memory())
        if now - self._last_record >= QUIET_S:
            self.core.release()
        elif self._watermarks:
            self.core.release(max(self._watermarks.values()) - self.settings.settle_ms)

    def refresh(self) -> Snapshot:
        t = time.perf_counter()
        snap = self.core.snapshot()
        self.snapshot = snap
        if self.ready:  # a rebuild's partial figures are not exported
            self.metrics.snapshot.set(snap)
        self.metrics.pending.set(self.core.pending)
        self.metrics.late.set(self.core.counts["late"])
        self.metrics.refresh_seconds.set(time.perf_counter() - t)
        return snap

    def _commit(self, consumer: Any) -> None:
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in self._positions.items() if pos >= 0}
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - positions are for lag tools only; the monitor never reads them back
            log.warning("monitor could not commit its positions", extra={"error": str(exc)})

    def run(self, *, until_caught_up: bool = False, max_s: float | None = None) -> Snapshot:
        """Serve until ``request_stop`` (or, with ``until_caught_up``, until every partition is read
        to its end once; then everything is released). Returns the last snapshot."""
        consumer = self._consumer()
        deadline = None if max_s is None else time.monotonic() + max_s
        next_refresh = next_assign = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_assign:
                    self._assign_new(consumer)
                    next_assign = now + 10.0
                if not self._positions:
                    self._stop.wait(1.0)
                    continue
                got = self._feed(consumer.poll(timeout_ms=self.cfg.poll_timeout_ms))
                self._last_turn = time.monotonic()
                self._release(consumer, got)
                if until_caught_up and self.ready:
                    self.core.release()
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                if self._last_turn >= next_refresh:
                    self.refresh()
                    self._commit(consumer)
                    next_refresh = self._last_turn + self.cfg.monitor_refresh_s
            snap = self.refresh()
            self._commit(consumer)
            return snap
        finally:
            consumer.close()
