"""One training run, end to end: build -> split -> fit -> evaluate -> gate -> register -> promote.

The fit gets training-period rows only (``models.train``): event examples before the split's
training end and/or snapshot examples at training snapshot times ``T < train_end`` (labels close
before validation starts), built in the same fold of the log as the validation snapshots; it
chooses its rounds on an inner split of those rows. Nothing the gates judge reaches it.

:func:`train_and_register` is what ``streamrank train`` calls with the records of
``consumer.io.inputlog.read_input_log`` and its ``LogRange``.

The gates judge on the *snapshot frame* (``models.snapshots``): what a reader of the predictions
topic sees - every served business of each market at daily snapshot times over the validation
period, labelled by its conversions in the next horizon - with bootstrap CIs over markets
(``models.evaluate.evaluate_snapshots``). The event frame's metrics (scoring moments,
``models.evaluate.evaluate``) are still computed and recorded under ``metrics``; they decide nothing.

Gates (all must pass to promote; a skipped gate does not block):

1. ``sanity``: the candidate orders the hand-written sanity set correctly (``models.sanity``).
2. ``beats_popularity``: its snapshot top-k capture is above the popularity baseline's
   (all-time conversions so far), by more than ``options.min_improvement_over_popularity`` (default 0).
3. ``not_worse_than_current``: its snapshot capture is at least the promoted model's on the *same*
   snapshot frame minus ``options.tolerance`` (default 0.02 absolute). Skipped when nothing is
   promoted, or the promoted model cannot be loaded for this feature set (another feature-set
   version: its rows cannot be built by this code, so it is not comparable).

Insufficient validation data: when the snapshot frame is too small to tell two rankers apart
(``models.evaluate.sufficiency``: fewer than 50 conversions in groups where the top-k leaves
businesses out, or fewer than 3 such markets), gates 2 and 3 neither pass nor fail: their result is
"insufficient validation data", and the candidate is **not promoted** (reason stated). The workers
keep serving what they serve (the promoted model, or the popularity ranker before any), which is
the conservative choice: a model is promoted only on evidence that it beats popularity.

Every run registers its model (metadata records the gates and the decision with its reason), and
promotes only if the gates pass. Each decision is logged on ``streamrank.models.trainer`` as a JSON
message with the same dict under ``extra={"decision": ...}``, and kept in ``metadata["decisions"]``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.spec import DEFAULT_SPEC, FeatureSpec
from models.baseline import PopularityMargin
from models.buildstore import BuildResult, PartitionSummary, RecordsLog, build
from models.dataset import DAY_MS, BuildStats, LabelConfig, TrainingSet
from models.drift import build_reference
from models.errors import ModelRefused, RegistryError, TrainingError
from models.evaluate import (
    Evaluation,
    SnapshotEvaluation,
    evaluate,
    evaluate_snapshots,
    frame_metrics,
    gain_importance,
    importance_shifts,
)
from models.fitdata import ChunkLoader, chunks_of, feature_bytes
from models.registry import LoadedModel, ModelRegistry, code_version
from models.report import write_report
from models.rowsets import SnapshotChunks, event_set, read_rate, snapshot_chunks, snapshot_frame, snapshot_rows
from models.sanity import check_sanity
from models.snapshots import (
    SnapshotFrame,
    last_complete_time,
    snapshot_times,
    training_snapshot_times,
)
from models.streambuild import BuildConfig
from models.train import (
    FitResult,
    FitSet,
    Split,
    TrainOptions,
    concat,
    event_examples,
    fit,
    snapshot_examples,
    time_split,
)

log = logging.getLogger("streamrank.models.trainer")


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool | None  # None: skipped (not applicable)
    detail: str
    value: float | None = None
    threshold: float | None = None
    insufficient: bool = False  # passed is None: the data cannot decide; blocks promotion

    @property
    def result(self) -> str:
        if self.insufficient:
            return "insufficient validation data"
        return "skipped" if self.passed is None else "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "insufficient": self.insufficient,
            "result": self.result,
            "detail": self.detail,
            "value": self.value,
            "threshold": self.threshold,
        }


@dataclass
class TrainOutcome:
    version: str
    promoted: bool
    reason: str
    gates: list[Gate]
    evaluation: Evaluation
    current: dict[str, Any] | None
    importance: dict[str, float]
    shifts: list[dict[str, Any]]
    build: BuildStats
    fit: FitResult
    metadata: dict[str, Any] = field(default_factory=dict)
    snapshot: SnapshotEvaluation | None = None  # what the gates judged

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "promoted": self.promoted,
            "reason": self.reason,
            "gates": [g.to_dict() for g in self.gates],
            "metrics": self.evaluation.to_dict(),
            "snapshot_metrics": self.snapshot.to_dict() if self.snapshot else None,
            "importance_shifts": self.shifts,
        }


class _Decisions:
    """Collects decisions and logs each one as it is made."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        entry = {"event": event, **fields}
        self.items.append(entry)
        log.info(json.dumps(entry, sort_keys=True, default=_json_default), extra={"decision": entry})


def train_and_register(
    records: Iterable[Any],
    registry: ModelRegistry,
    spec: FeatureSpec = DEFAULT_SPEC,
    label_cfg: LabelConfig = LabelConfig(),
    options: TrainOptions = TrainOptions(),
    data_range: Any = None,
    *,
    work_dir: str | Path | None = None,
    workers: int = 1,
    client: Any = None,
    engine: Any = "auto",
    progress: Callable[[PartitionSummary, int, int], None] | None = None,
) -> TrainOutcome:
    """Train on ``records`` and register the model in ``registry``; promote it if the gates pass.

    ``records``: a :class:`~models.buildstore.PartitionLog` (read partition by partition, as the
    trainer's Kafka reader does), or any iterable of log records (held in memory).
    ``work_dir``: the build's checkpoint and shards (``models.buildstore``): a run reads only what
    the log holds after the last run's checkpoint; ``None`` builds in a temporary directory.
    ``workers``: processes building partitions in parallel; ``client``: a ``dask.distributed.Client``
    that builds them instead (``work_dir`` on storage its workers share).
    ``engine``: where the fit runs (``models.train.fit``): ``"auto"`` (in memory, or out of core from
    the shards when the training snapshots exceed ``options.memory_budget_bytes``), ``"memory"``,
    ``"external_memory"``, ``"dask"`` or an engine object (``models.daskfit.DaskEngine(client)``).
    ``data_range``: what the records cover (``consumer.io.inputlog.LogRange``, or its ``to_dict()``,
    or any mapping), recorded as is; the observed offsets and event-time span are recorded too.
    Raises :class:`TrainingError` when the data cannot support a train/validation split.
    """
    with _work_dir(work_dir) as wd:
        built = _build(records, wd, spec, label_cfg, options, workers, client, progress)
        return _train(built, registry, spec, label_cfg, options, data_range, engine)


def _train(
    built: BuildResult,
    registry: ModelRegistry,
    spec: FeatureSpec,
    label_cfg: LabelConfig,
    options: TrainOptions,
    data_range: Any,
    engine: Any = "auto",
) -> TrainOutcome:
    decide = _Decisions()
    started = time.time()
    ts = _event_set(built, options, decide)
    split, train, val = _split(ts, label_cfg, options, decide)
    # Both snapshot frames from the build's grid rows: the training snapshots (before
    # split.train_end_ms, when the examples use them) and the validation snapshots the gates judge.
    train_frame, frame = _snapshot_frames(built, spec, label_cfg, ts.stats, split, options, decide)
    examples = _examples(train, train_frame, options, decide)
    margin = PopularityMargin(spec, label_cfg.kinds) if options.base_margin == "popularity" else None
    fr = _fit(examples, label_cfg, options, margin, engine, decide)
    # evaluate: the candidate, the promoted model on the same validation rows, the importance shifts
    model_record = {"base_margin": fr.base_margin} if fr.base_margin is not None else {}
    candidate = LoadedModel("candidate", spec, fr.booster, {"model": model_record})
    evaluation = _evaluate(candidate, val, options, decide)
    current, current_model = _current_model(registry, spec, val, options, decide)
    snapshot = _evaluate_snapshots(candidate, current_model, frame, current, options, decide)
    importance = gain_importance(fr.booster, spec.names)
    # What serving should look like: the training period's scoring moments (the rows a worker
    # scores), with the candidate's scores on them (models.drift; the workers' drift metrics).
    drift_reference = build_reference(train.X, spec.names, candidate.score(train.X), seed=options.seed).to_dict()
    previous_version, previous_importance = _previous_importance(registry)
    shifts = _importance_shifts(importance, previous_version, previous_importance, options, decide)
    sanity_failures = check_sanity(candidate, label_kinds=label_cfg.kinds)
    gates, promote, reason = _gate(snapshot, current, sanity_failures, options, decide)

    # register (every run, with the record of its decision), then promote if the gates passed
    meta = {
        "run_started_at": _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat(timespec="seconds"),
        "feature_set": {"version": spec.version, "spec": spec.to_dict()},
        "code": code_version(),
        "data": {
            "range": _range_dict(data_range),
            "observed_offsets": ts.stats.offsets,
            "build": ts.stats.to_dict(),
            "label": label_cfg.to_dict(),
            "split": split.to_dict(),
            "frame": options.frame,
            "examples": options.examples,
            "sample_rate": ts.stats.sample_rate,
            "training_examples": fr.examples,
            "training_snapshots": train_frame.summary() if train_frame is not None else None,
        },
        "options": options.to_dict(),
        "params": fr.params,
        "training": {k: v for k, v in fr.to_dict().items() if k != "params"},
        "metrics": evaluation.to_dict(),
        "snapshot_metrics": snapshot.to_dict(),
        "snapshot_frame": frame.summary(),
        "current_model": current,
        "importance": importance,
        "drift_reference": drift_reference,
        "importance_shifts": {
            "against": previous_version,
            "threshold": options.importance_threshold,
            "shifts": shifts,
            "previous_importance": previous_importance or None,
        },
        "sanity_failures": sanity_failures,
        "gates": [g.to_dict() for g in gates],
        "promotion": {"promoted": promote, "reason": reason},
        "decisions": decide.items,
        "model": {
            "objective": fr.objective,
            "best_iteration": fr.best_iteration,
            "rounds": fr.rounds,
            "n_features": len(spec.names),
            "predict_nthread": 1,
            **model_record,
        },
    }
    version = _register(registry, fr, meta, decide)
    if promote:
        _promote(registry, version, reason, snapshot, decide)
    return TrainOutcome(
        version=version,
        promoted=promote,
        reason=reason,
        gates=gates,
        evaluation=evaluation,
        current=current,
        importance=importance,
        shifts=shifts,
        build=ts.stats,
        fit=fr,
        metadata=registry.metadata(version),
        snapshot=snapshot,
    )


# --------------------------------------------------------------------------------- steps
@contextmanager
def _work_dir(work_dir: str | Path | None) -> Iterator[Path]:
    if work_dir is not None:
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix="streamrank-build-") as tmp:
        yield Path(tmp)


def _build(
    records: Any,
    work_dir: Path,
    spec: FeatureSpec,
    label_cfg: LabelConfig,
    options: TrainOptions,
    workers: int,
    client: Any,
    progress: Callable[[PartitionSummary, int, int], None] | None,
) -> BuildResult:
    source = records if hasattr(records, "partitions") else RecordsLog(records)
    rate = 1.0 if options.sample_rate is None else float(options.sample_rate)
    cfg = BuildConfig(spec=spec, label_cfg=label_cfg, sample_rate=rate, seed=options.seed)
    return build(source, work_dir, cfg, workers=workers, client=client, progress=progress)


def _event_set(built: BuildResult, options: TrainOptions, decide: _Decisions) -> TrainingSet:
    window = None
    if options.window_days is not None and built.data_end_ms is not None:
        window = built.data_end_ms - options.window_days * DAY_MS
    ts = event_set(built, options.sample_rate, options.start_ms, window)
    ts.stats.sample_rate = built.cfg.sample_rate * read_rate(built, options.sample_rate)
    decide(
        "built",
        examples=len(ts),
        sample_rate=ts.stats.sample_rate,
        events=ts.stats.records,
        events_per_s=_finite(ts.stats.events_per_s),
        seconds=round(ts.stats.seconds, 3),
        incremental=built.incremental,
        rebuilt=built.rebuilt,
        partitions=len(built.partitions),
    )
    if len(ts) == 0:
        raise TrainingError("no training examples: the log has no complete scoring moments")
    return ts


def _split(
    ts: TrainingSet, label_cfg: LabelConfig, options: TrainOptions, decide: _Decisions
) -> tuple[Split, TrainingSet, TrainingSet]:
    """Train before, validate after a time cut; refuse a split too small to judge a model by."""
    split = time_split(ts.as_of, label_cfg.horizon_ms, options.validation_days, options.gap_ms)
    train, val = ts.take(split.train_idx), ts.take(split.val_idx)
    n_val_groups = len(np.unique(val.groups))
    decide("split", **split.to_dict(), validation_groups=n_val_groups)
    if len(train) < options.min_train_examples:
        raise TrainingError(
            f"{len(train)} training examples before {split.train_end_ms} (need {options.min_train_examples}): "
            f"the log is too short for {options.validation_days} validation days plus a {split.gap_ms} ms gap"
        )
    if n_val_groups < options.min_validation_groups:
        raise TrainingError(f"{n_val_groups} validation groups (need {options.min_validation_groups})")
    return split, train, val


def _snapshot_frames(
    built: BuildResult,
    spec: FeatureSpec,
    label_cfg: LabelConfig,
    stats: BuildStats,
    split: Split,
    options: TrainOptions,
    decide: _Decisions,
) -> tuple[SnapshotFrame | SnapshotChunks | None, SnapshotFrame]:
    """The training snapshots (``None`` unless ``options.examples`` uses them; left on disk as
    :class:`~models.rowsets.SnapshotChunks` when they exceed the memory budget) and the validation
    snapshots, from the build's grid rows.

    Validation: daily from the first validation day to the last one whose horizon is complete
    (``snapshot_times``). Training: ``training_snapshot_times`` from the first full day of data
    (or ``options.start_ms``) to ``split.train_end_ms`` exclusive, so every training label
    ``(T, T + H]`` closes before ``split.val_start_ms``; thinned to ``options.snapshot_rows``.
    """
    end = stats.data_end_ms
    last_ok = last_complete_time(end, label_cfg, spec) if end is not None else None
    val_times = snapshot_times(split.val_start_ms, last_ok) if last_ok is not None else []
    train_times: list[int] = []
    if options.examples in ("snapshots", "both") and stats.data_min_ms is not None:
        first = (stats.data_min_ms // DAY_MS + 1) * DAY_MS
        if options.start_ms is not None:
            first = max(first, int(options.start_ms))
        if options.window_days is not None and end is not None:
            first = max(first, end - options.window_days * DAY_MS)
        train_times = training_snapshot_times(first, split.train_end_ms, stats.active_businesses, options.snapshot_rows)
    chunked = options.examples != "events" and _out_of_core(built, train_times, spec, options)
    both = snapshot_frame(built, val_times if chunked else train_times + val_times, last_ok)
    frame = both.between(split.val_start_ms, None)
    decide("snapshot_frame", **frame.summary())
    if options.examples == "events":
        return None, frame
    train_part: SnapshotFrame | SnapshotChunks
    if chunked:
        train_part = snapshot_chunks(built, [t for t in train_times if last_ok is not None and t <= last_ok])
    else:
        train_part = both.between(None, split.train_end_ms)
    decide("training_snapshots", **train_part.summary(), out_of_core=chunked)
    return train_part, frame


def _out_of_core(built: BuildResult, times: list[int], spec: FeatureSpec, options: TrainOptions) -> bool:
    """Whether the training snapshots stay on disk: their features exceed the memory budget."""
    budget = options.memory_budget_bytes
    return budget is not None and feature_bytes(snapshot_rows(built, times), len(spec.names)) > budget


def _examples(
    train: TrainingSet, train_part: SnapshotFrame | SnapshotChunks | None, options: TrainOptions, decide: _Decisions
) -> FitSet | list[ChunkLoader]:
    """The fit's rows: event examples, snapshot examples or both (``options.examples``); chunk
    loaders when the training snapshots stay on disk."""
    if isinstance(train_part, SnapshotChunks):
        return _chunked_examples(train, train_part, options, decide)
    parts = []
    if options.examples in ("events", "both"):
        parts.append(event_examples(train, options.frame))
    if options.examples in ("snapshots", "both") and train_part is not None:
        parts.append(snapshot_examples(train_part))
    examples = concat(*parts) if parts else event_examples(train, options.frame)
    decide("training_examples", how=options.examples, **examples.summary())
    return examples


def _chunked_examples(
    train: TrainingSet, chunks: SnapshotChunks, options: TrainOptions, decide: _Decisions
) -> list[ChunkLoader]:
    loaders: list[ChunkLoader] = list(chunks.loaders)
    rows = chunks.rows
    if options.examples == "both":
        ev = event_examples(train, options.frame)
        # event groups after every snapshot group id (ShardSnapshots: times x markets)
        offset = len(chunks.times) * max(1, len(chunks.loaders[0].markets) if chunks.loaders else 1)
        ev = FitSet(ev.X, ev.y, ev.groups + offset, ev.time, ev.source)
        loaders += chunks_of(ev, max(1, len(ev)))
        rows += len(ev)
    decide("training_examples", how=options.examples, rows=rows, chunks=len(loaders), out_of_core=True)
    return loaders


def _fit(
    examples: FitSet | list[ChunkLoader],
    label_cfg: LabelConfig,
    options: TrainOptions,
    margin: PopularityMargin | None,
    engine: Any,
    decide: _Decisions,
) -> FitResult:
    fr = fit(examples, options, label_cfg.horizon_ms, margin, engine=engine)
    decide(
        "fitted",
        engine=fr.engine,
        rounds=fr.rounds,
        rounds_run=fr.rounds_run,
        inner_split=fr.inner,
        base_margin=fr.base_margin is not None,
        seconds=round(fr.seconds, 3),
    )
    return fr


def _evaluate(candidate: LoadedModel, val: TrainingSet, options: TrainOptions, decide: _Decisions) -> Evaluation:
    evaluation = evaluate(
        candidate.score(val.X),
        val.y,
        val.groups,
        val.business,
        val.as_of,
        val.popularity,
        k=options.top_k,
        seed=options.seed,
    )
    decide("evaluated", metrics=evaluation.to_dict())
    return evaluation


def _evaluate_snapshots(
    candidate: LoadedModel,
    current_model: LoadedModel | None,
    frame: SnapshotFrame,
    current: dict | None,
    options: TrainOptions,
    decide: _Decisions,
) -> SnapshotEvaluation:
    """The candidate (and the promoted model, on the same resamples) on the snapshot frame."""
    extra = {"current": current_model.score(frame.X)} if current_model is not None and len(frame) else None
    snap = evaluate_snapshots(
        candidate.score(frame.X) if len(frame) else np.zeros(0),
        frame.y,
        frame.groups,
        frame.market,
        frame.snapshot,
        frame.popularity,
        frame.recent_popularity,
        k=options.top_k,
        seed=options.seed,
        extra=extra,
    )
    if current is not None and current_model is not None:
        cur = snap.scores.get("current")
        current["metrics"] = {m: _finite(iv.value) for m, iv in cur.items()} if cur else None
        current["note"] = "evaluated on this run's snapshot frame" if cur else "not compared: empty snapshot frame"
    decide("evaluated_snapshots", metrics=snap.to_dict())
    return snap


def _importance_shifts(
    importance: dict[str, float],
    previous_version: str | None,
    previous_importance: dict[str, float],
    options: TrainOptions,
    decide: _Decisions,
) -> list[dict[str, Any]]:
    """Features whose gain share moved past the threshold since the previous model (none without one)."""
    if not previous_version:
        return []
    shifts = [s.to_dict() for s in importance_shifts(importance, previous_importance, options.importance_threshold)]
    decide(
        "importance_shifts",
        against=previous_version,
        threshold=options.importance_threshold,
        moved=[s["feature"] for s in shifts],
    )
    return shifts


def _gate(
    snapshot: SnapshotEvaluation,
    current: dict | None,
    sanity_failures: list[str],
    options: TrainOptions,
    decide: _Decisions,
) -> tuple[list[Gate], bool, str]:
    """The gates, the promotion decision and its reason (a skipped gate does not block; a gate
    without enough data to decide does: nothing is promoted on noise)."""
    gates = _gates(snapshot, current, sanity_failures, options)
    for g in gates:
        decide("gate", **g.to_dict())
    failed = [g for g in gates if g.passed is False]
    undecided = [g for g in gates if g.insufficient]
    promote = not failed and not undecided
    if promote:
        reason = "all gates passed: " + "; ".join(f"{g.name}: {g.detail}" for g in gates)
    else:
        parts = []
        if failed:
            parts.append("gates failed: " + "; ".join(f"{g.name}: {g.detail}" for g in failed))
        if undecided:
            parts.append(
                f"insufficient validation data: {snapshot.sufficiency.detail}; not promoted "
                "(the workers keep serving the promoted model, or the popularity ranker before any)"
            )
        reason = "; ".join(parts)
    decide("promotion", promote=promote, reason=reason)
    return gates, promote, reason


def _register(registry: ModelRegistry, fr: FitResult, meta: dict[str, Any], decide: _Decisions) -> str:
    version = registry.register(
        bytes(fr.booster.save_raw("ubj")),
        meta,
        write_extra=lambda folder, v, m: write_report(folder, m),
    )
    decide("registered", version=version)
    return version


def _promote(
    registry: ModelRegistry, version: str, reason: str, snapshot: SnapshotEvaluation, decide: _Decisions
) -> None:
    details = {"snapshot_capture": _finite(snapshot.metric("model", "capture"))}
    registry.promote(version, reason, decided_by="trainer", details=details)
    decide("promoted", version=version)


# ------------------------------------------------------------------------------- helpers
def _current_model(
    registry: ModelRegistry, spec: FeatureSpec, val: TrainingSet, options: TrainOptions, decide
) -> tuple[dict | None, LoadedModel | None]:
    """The promoted model's record (``metrics``: on the snapshot frame, filled in later;
    ``event_metrics``: on the event frame's validation rows) and the model itself if comparable."""
    try:
        version = registry.promoted_version()
    except RegistryError as exc:
        decide("current_model", version=None, comparable=False, note=f"unreadable pointer: {exc}")
        return {"version": None, "metrics": None, "note": f"unreadable pointer: {exc}"}, None
    if version is None:
        decide("current_model", version=None, comparable=False, note="nothing promoted yet")
        return None, None
    try:
        model = registry.load(version, spec)
    except ModelRefused as exc:
        decide("current_model", version=version, comparable=False, note=str(exc))
        return {"version": version, "metrics": None, "note": f"not comparable: {exc}"}, None
    metrics = frame_metrics(model.score(val.X), val.y, val.groups, val.business, val.as_of, options.top_k)
    decide("current_model", version=version, comparable=True, event_metrics=metrics.to_dict())
    return {"version": version, "metrics": None, "event_metrics": metrics.to_dict(), "note": ""}, model


def _previous_importance(registry: ModelRegistry) -> tuple[str | None, dict[str, float]]:
    """The importance of the promoted model, else of the latest registered one."""
    candidates = []
    try:
        p = registry.promoted_version()
        if p:
            candidates.append(p)
    except RegistryError:
        pass
    latest = registry.latest_version()
    if latest and latest not in candidates:
        candidates.append(latest)
    for v in candidates:
        try:
            imp = registry.metadata(v).get("importance")
        except RegistryError:
            continue
        if isinstance(imp, dict):
            return v, {str(k): float(x) for k, x in imp.items() if x is not None}
    return None, {}


def _gates(
    snap: SnapshotEvaluation, current: dict | None, sanity_failures: list[str], options: TrainOptions
) -> list[Gate]:
    k = snap.k
    suff = snap.sufficiency
    gates = [
        Gate(
            "sanity",
            not sanity_failures,
            "sanity set passes"
            if not sanity_failures
            else f"{len(sanity_failures)} failures: " + "; ".join(sanity_failures),
        ),
    ]
    mc, pc = snap.metric("model", "capture"), snap.metric("popularity", "capture")
    margin = options.min_improvement_over_popularity
    if not suff.enough:
        gates.append(Gate("beats_popularity", None, f"insufficient validation data: {suff.detail}", insufficient=True))
    else:
        ok = math.isfinite(mc) and math.isfinite(pc) and mc > pc + margin
        gates.append(
            Gate(
                "beats_popularity",
                ok,
                f"snapshot top-{k} capture {snap.scores['model']['capture']} vs popularity "
                f"{snap.scores['popularity']['capture']}, difference {snap.diff_vs_popularity['capture']}"
                + (f" (+{margin} required)" if margin else ""),
                _finite(mc),
                _finite(pc + margin),
            )
        )
    cur_metrics = (current or {}).get("metrics")
    cur_version = (current or {}).get("version")
    if not cur_metrics or cur_metrics.get("capture") is None:
        note = "no promoted model" if current is None else (current.get("note") or "current model not comparable")
        gates.append(Gate("not_worse_than_current", None, f"skipped: {note}"))
    elif not suff.enough:
        gates.append(
            Gate("not_worse_than_current", None, f"insufficient validation data: {suff.detail}", insufficient=True)
        )
    else:
        cc = float(cur_metrics["capture"])
        ok = math.isfinite(mc) and mc >= cc - options.tolerance
        gates.append(
            Gate(
                "not_worse_than_current",
                ok,
                f"snapshot top-{k} capture {_fmt(mc)} vs current {cur_version} {_fmt(cc)} "
                f"(tolerance {options.tolerance})",
                _finite(mc),
                _finite(cc - options.tolerance),
            )
        )
    return gates


def _range_dict(data_range: Any) -> Any:
    if data_range is None:
        return None
    if hasattr(data_range, "to_dict"):
        return data_range.to_dict()
    if isinstance(data_range, Mapping):
        return dict(data_range)
    return str(data_range)


def _fmt(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "n/a"


def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
