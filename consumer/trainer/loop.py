"""One training run from the input topics (or an event-log file), and the periodic loop around it.

``train_once`` hands the input topics, partition by partition (``consumer.io.inputlog.KafkaPartitionLog``),
to ``models.trainer.train_and_register`` (the same fold and ``extract`` as the worker), which resumes
its build from the working directory (``STREAMRANK_TRAIN_DIR``) and reads only the log after it, in
``STREAMRANK_TRAIN_WORKERS`` processes or on a Dask cluster (``STREAMRANK_DASK_SCHEDULER``, the fit
too); then it records the run (``consumer.trainer.metrics``). ``run_every`` repeats it until stopped; a broker hiccup or a
failed run (any ``StreamrankError``: a broker's, the models package's ``TrainingError``) is
logged and retried at the next period, never the end of a periodic trainer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from consumer.config import Config, label_config, train_dir
from consumer.errors import ConfigError, StreamrankError
from consumer.io.eventfiles import read_log
from consumer.io.inputlog import KafkaPartitionLog, LogRange, LogRecord
from consumer.trainer.metrics import TrainingRun
from features.errors import InvalidEvent, SpecError
from features.events import ActivityEvent, BusinessEvent
from features.order import ACTIVITY_RANK, BUSINESS_RANK


@dataclass(frozen=True)
class TrainRequest:
    """What one run trains on: the options for ``models.train`` and where the events come from."""

    options: Any  # models.train.TrainOptions
    from_file: str | None = None
    serve_metrics: bool = False
    workers: int | None = None  # None: STREAMRANK_TRAIN_WORKERS


@dataclass(frozen=True)
class TrainResult:
    outcome: Any  # models.trainer.TrainOutcome
    seconds: float
    report_path: str


def file_log_records(path: str) -> Iterator[LogRecord]:
    """An event-log file as trainer records: one partition, offsets counted per topic."""
    offsets = [0, 0]
    for kind, rec in read_log(path):
        rank = BUSINESS_RANK if kind == "business" else ACTIVITY_RANK
        offset = offsets[rank]
        offsets[rank] += 1
        try:
            event = (BusinessEvent if rank == BUSINESS_RANK else ActivityEvent).from_record(rec)
        except InvalidEvent:
            continue
        yield LogRecord(rank, 0, offset, event, event.business_id)


def train_once(cfg: Config, request: TrainRequest, *, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Build, train, evaluate, register and maybe promote one model. Raises ``TrainingError`` when
    training cannot produce a model; any failure is a ``StreamrankError`` (the project's root)."""
    from models.registry import ModelRegistry
    from models.trainer import train_and_register

    rng: LogRange | None = None
    if request.from_file:
        records: Any = file_log_records(request.from_file)
        work_dir = None  # a file is not a log that grows: nothing to resume
    else:
        records = KafkaPartitionLog(cfg)
        work_dir = train_dir(cfg)
    registry = ModelRegistry(cfg.registry_dir)
    t0 = time.perf_counter()
    options = request.options
    if cfg.train_window_days and options.window_days is None:
        options = options.with_(window_days=cfg.train_window_days)
    if cfg.train_memory_mb and options.memory_budget_bytes is None:
        options = options.with_(memory_budget_bytes=cfg.train_memory_mb * 2**20)
    # The run's facts go to the log and the metrics textfile, failures included.
    with TrainingRun(cfg, rng, serve=request.serve_metrics) as run, dask_client(cfg.dask_scheduler) as client:
        outcome = run.done(
            train_and_register(
                records,
                registry,
                label_cfg=label_config(cfg),
                options=options,
                work_dir=work_dir,
                workers=request.workers or cfg.train_workers,
                client=client,
                engine=_engine(client),
                progress=_partition_progress(progress),
            )
        )
    report = registry.version_dir(outcome.version) / "report.md"
    return TrainResult(outcome, time.perf_counter() - t0, str(report))


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A client of ``STREAMRANK_DASK_SCHEDULER`` for one run (None when it is empty): a scheduler
    address, or ``local[:N]`` for a local cluster of N worker processes (default 2)."""
    if not address:
        yield None
        return
    try:
        from models.daskfit import connect
    except ImportError as exc:
        raise ConfigError(
            f"STREAMRANK_DASK_SCHEDULER={address!r} needs dask: pip install 'streamrank[distributed]' ({exc})"
        ) from exc
    if address == "local" or address.startswith("local:"):
        n = int(address.partition(":")[2] or 2)
        client = connect(n_workers=n, threads_per_worker=1, processes=True)
    else:
        client = connect(address)
    try:
        yield client
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()


def _engine(client: Any) -> Any:
    if client is None:
        return "auto"
    from models.daskfit import DaskEngine

    return DaskEngine(client)


def _partition_progress(progress: Callable[[str], None] | None) -> Callable[[Any, int, int], None] | None:
    """A progress line per built partition: records, events/s, the ETA and memory so far."""
    if progress is None:
        return None
    t0 = time.perf_counter()
    total_records = [0]

    def on_partition(s: Any, done: int, total: int) -> None:
        total_records[0] += s.run_counts.records
        elapsed = time.perf_counter() - t0
        eta = elapsed / done * (total - done)
        progress(
            f"partition {s.partition} built ({done}/{total}): {s.run_counts.records:,} new records in {s.seconds:.1f}s "
            f"({s.run_counts.records / max(s.seconds, 1e-9):,.0f} events/s); all: {total_records[0]:,} records, "
            f"ETA {eta:.0f}s, peak RSS {s.peak_rss_mb:,.0f} MB"
        )

    return on_partition


def _fit_line(fit: Any) -> str:
    """What the model was fitted on (the examples the fit saw, by source), its objective and trees."""
    ex = getattr(fit, "examples", {}) or {}
    parts = [
        f"{src} {d['rows']:,} rows in {d['groups']:,} groups ({d['groups_with_pairs']:,} with pairs)"
        for src in ("snapshots", "events")
        if (d := ex.get(src))
    ]
    objective = getattr(fit, "objective", "") or "?"
    return f"{'; '.join(parts) or 'n/a'}; {objective}, {fit.rounds} trees chosen on the inner split; {fit.seconds:.2f}s"


def describe(result: TrainResult) -> list[str]:
    """The run in a few human lines: decision, data, metrics against the baselines, gates, report."""
    o, dt = result.outcome, result.seconds
    ev, b = o.evaluation, o.build
    lines = [
        f"model {o.version}: {'PROMOTED' if o.promoted else 'not promoted'} ({o.reason})",
        f"  log: {b.records:,} events, {b.examples:,} scoring moments sampled, in {dt:.1f}s "
        f"({b.records / dt:,.0f} events/s overall)",
        f"  fit: {_fit_line(o.fit)}",
    ]
    sn = getattr(o, "snapshot", None)
    if sn is not None:
        # What the gates judge: the served rankings at daily snapshots, 95 % CIs over markets.
        lines.append(
            f"  snapshots (gates): {sn.n_rows:,} (snapshot, business) rows, {sn.n_snapshots} snapshots, "
            f"{sn.n_markets} markets, {sn.n_conversions:,.0f} conversions; "
            f"{'enough data' if sn.sufficiency.enough else 'INSUFFICIENT data'} to decide"
        )
        for metric, label in (("capture", f"top-{sn.k} capture"), ("ndcg10", "NDCG@10"), ("auc", "AUC")):
            row = "  ".join(
                f"{name} {sn.scores[key][metric]}"
                for key, name in (
                    ("model", "model"),
                    ("popularity", "popularity"),
                    ("recent_popularity", "recent"),
                    ("random", "random"),
                    ("current", "current"),
                )
                if key in sn.scores
            )
            lines.append(f"    {label}: {row}")
        lines.append(
            f"    model - popularity: capture {sn.diff_vs_popularity['capture']}  AUC {sn.diff_vs_popularity['auc']}"
        )
    lines += [
        f"  event frame: top-{ev.k} capture model {ev.model.capture:.3f}  popularity {ev.popularity.capture:.3f}  "
        f"random {ev.random.capture:.3f}; NDCG@10 model {ev.model.ndcg10:.3f}  popularity {ev.popularity.ndcg10:.3f}; "
        f"AUC model {ev.model.auc:.3f}  popularity {ev.popularity.auc:.3f}",
    ]
    lines += [f"  gate {g.name}: {_gate_result(g)} - {g.detail}" for g in o.gates]
    lines += [f"  importance shift: {shift}" for shift in o.shifts]
    lines.append(f"  report: {result.report_path}")
    return lines


def _gate_result(g: Any) -> str:
    result = getattr(g, "result", None)
    if isinstance(result, str):
        return result
    return "skipped" if g.passed is None else "pass" if g.passed else "FAIL"


def run_every(
    period_s: float, once: Callable[[], Any], stop: threading.Event, on_error: Callable[[StreamrankError], None]
) -> None:
    """Call ``once`` every ``period_s`` seconds (start to start) until ``stop`` is set.

    A failed run (a broker hiccup, too little data) is reported and retried at the next period; a
    mistake in the settings (``ConfigError``, ``SpecError``) raises: it would fail every period
    the same way, and a periodic trainer that never trains should not look alive."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            once()
        except (ConfigError, SpecError):
            raise
        except StreamrankError as exc:
            on_error(exc)
        stop.wait(max(0.0, period_s - (time.monotonic() - started)))
