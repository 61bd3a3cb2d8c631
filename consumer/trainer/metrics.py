"""The trainer's run metrics: one record per ``streamrank train`` run.

:class:`TrainingRun` holds each run's duration, data range, metrics, gates and promotion decision,
and writes them as one JSON log line (logger ``streamrank.trainer.run``) and as gauges written
atomically to ``<registry>/metrics/streamrank_trainer.prom`` (node_exporter's textfile collector
format). A periodic trainer (``train --every``) also serves them on ``STREAMRANK_METRICS_PORT``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import write_to_textfile
from prometheus_client.metrics_core import GaugeMetricFamily

from consumer.runtime.health import MetricsServer
from consumer.runtime.metrics import CallbackCollector

log = logging.getLogger("streamrank.metrics")
TRAINER_TEXTFILE = "metrics/streamrank_trainer.prom"
run_log = logging.getLogger("streamrank.trainer.run")
# `streamrank train` quiets logging to WARNING; the one line per run must still come out.
run_log.setLevel(logging.INFO)


class TrainerMetrics:
    """Gauges describing the last training run, plus run counters, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._last: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.runs = Counter(
            "streamrank_trainer_runs", "Training runs by this process, per result", ["result"], registry=self.registry
        )
        CallbackCollector(self.registry, self._families, [])

    def record(self, facts: dict[str, Any]) -> None:
        with self._lock:
            self._last = facts
        self.runs.labels(facts["result"]).inc()

    def _families(self) -> list[GaugeMetricFamily]:
        with self._lock:
            f = self._last
        if f is None:
            return []
        p = "streamrank_trainer_last_run_"

        def g(name: str, doc: str, value: Any, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(p + name, doc, labels=list(labels) if labels else None)
            if labels:
                fam.add_metric(list(labels.values()), _num(value))
            else:
                fam.add_metric([], _num(value))
            return fam

        out = [
            g("timestamp_seconds", "When the last training run ended", f["ended_at"]),
            g("duration_seconds", "Duration of the last training run", f["duration_s"]),
            g("success", "1 if the last run trained and registered a model, 0 if it failed", f["result"] != "failed"),
            g("promoted", "1 if the last run promoted its model", bool(f.get("promoted"))),
            g(
                "info",
                "The last run's model version and result (value 1)",
                1,
                {"model_version": f.get("version") or "", "result": f["result"]},
            ),
            g("data_start_timestamp_seconds", "Earliest event time in the last run's data", _ms(f.get("data_min_ms"))),
            g("data_end_timestamp_seconds", "Latest event time in the last run's data", _ms(f.get("data_end_ms"))),
            g("events", "Input events read by the last run", f.get("events")),
            g("examples", "Training examples built by the last run", f.get("examples")),
        ]
        metric = GaugeMetricFamily(
            p + "metric", "The last run's validation metrics, per scorer", labels=["scorer", "metric"]
        )
        for scorer, values in (f.get("metrics") or {}).items():
            if isinstance(values, dict):
                for name, v in values.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        metric.add_metric([scorer, name], float(v))
        out.append(metric)
        gate = GaugeMetricFamily(
            p + "gate",
            "The last run's gates: 1 passed, 0 failed, -1 skipped, -2 insufficient validation data",
            labels=["gate"],
        )
        for gd in f.get("gates") or []:
            gate.add_metric([gd["name"]], _gate_value(gd))
        out.append(gate)
        out += _snapshot_families(p, f.get("snapshot_metrics"))
        return out


def _gate_value(gd: dict[str, Any]) -> float:
    if gd.get("insufficient"):
        return -2.0  # the data could not decide: distinct from a skipped gate (nothing to compare with)
    return -1.0 if gd["passed"] is None else float(bool(gd["passed"]))


def _snapshot_families(p: str, snap: dict[str, Any] | None) -> list[GaugeMetricFamily]:
    """The snapshot frame the gates judged (models.snapshots): each scorer's metric with its
    bootstrap interval (bound = value, low, high), and whether the frame could decide at all."""
    if not snap:
        return []
    metric = GaugeMetricFamily(
        p + "snapshot_metric",
        "The last run's snapshot-frame metrics (what the gates judge), per scorer, with interval bounds",
        labels=["scorer", "metric", "bound"],
    )
    for scorer, values in snap.items():
        if not isinstance(values, dict) or scorer in ("sufficiency", "bootstrap"):
            continue
        for name, interval in values.items():
            if isinstance(interval, dict):
                for bound in ("value", "low", "high"):
                    v = interval.get(bound)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        metric.add_metric([scorer, name, bound], float(v))
    out = [metric]
    sufficiency = snap.get("sufficiency")
    if isinstance(sufficiency, dict) and "enough" in sufficiency:
        enough = GaugeMetricFamily(
            p + "snapshot_sufficient", "1 if the last run's snapshot frame had enough data to decide the gates"
        )
        enough.add_metric([], float(bool(sufficiency["enough"])))
        out.append(enough)
    return out


def _num(v: Any) -> float:
    if v is None:
        return float("nan")
    return float(v)


def _ms(v: Any) -> float | None:
    return None if v is None else v / 1000.0


_trainer: TrainerMetrics | None = None
_trainer_server: MetricsServer | None = None


class TrainingRun:
    """One ``streamrank train`` run: ``with TrainingRun(cfg, rng) as run: run.done(train_and_register(...))``.

    On exit the run's facts are logged (one JSON line) and written to the textfile; an exception
    is recorded as a failed run and re-raised.
    """

    def __init__(self, cfg: Any, data_range: Any = None, *, serve: bool = False):
        global _trainer, _trainer_server
        self.cfg = cfg
        self.data_range = data_range
        self.outcome: Any = None
        if _trainer is None:
            _trainer = TrainerMetrics()
        self.metrics = _trainer
        if serve and cfg.metrics_port and _trainer_server is None:
            _trainer_server = MetricsServer(_trainer.registry, cfg.metrics_port)

    def done(self, outcome: Any) -> Any:
        self.outcome = outcome
        return outcome

    def __enter__(self) -> TrainingRun:
        self._t0 = time.perf_counter()
        self._started = time.time()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        facts = self.facts(exc)
        self.metrics.record(facts)
        path = Path(self.cfg.registry_dir) / TRAINER_TEXTFILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(path), self.metrics.registry)
            facts["textfile"] = str(path)
        except OSError as exc2:  # metrics must never fail a training run
            log.warning("cannot write the trainer's metrics textfile", extra={"path": str(path), "error": str(exc2)})
        level = logging.ERROR if facts["result"] == "failed" else logging.INFO
        run_log.log(level, "training run finished", extra={"run": facts})

    def facts(self, exc: BaseException | None = None) -> dict[str, Any]:
        o = self.outcome
        rng = self.data_range.to_dict() if hasattr(self.data_range, "to_dict") else self.data_range
        facts: dict[str, Any] = {
            "started_at": self._started,
            "ended_at": time.time(),
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "data_range": rng,
        }
        if o is None:
            facts.update(result="failed", promoted=False, error=f"{type(exc).__name__}: {exc}" if exc else "no outcome")
            if isinstance(rng, dict):
                facts.update(
                    data_min_ms=rng.get("min_event_time"),
                    data_end_ms=rng.get("max_event_time"),
                    events=rng.get("records"),
                )
            return facts
        b = o.build
        facts.update(
            result="promoted" if o.promoted else "not_promoted",
            version=o.version,
            promoted=o.promoted,
            reason=o.reason,
            data_min_ms=b.data_min_ms,
            data_end_ms=b.data_end_ms,
            events=b.records,
            examples=b.examples,
            metrics=o.evaluation.to_dict(),
            snapshot_metrics=o.snapshot.to_dict() if o.snapshot is not None else None,
            gates=[g.to_dict() for g in o.gates],
        )
        return facts
