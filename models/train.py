"""Time-based split, the training examples and the XGBoost fit.

**Split.** Validation is the last ``validation_days`` UTC days of scoring moments (whole days, so a
ranking group - ``city, state|category`` x day - is never cut in two). Training ends ``gap`` before
validation starts, ``gap >= H`` (the label horizon), rounded up to whole days: every training
label window ``(as_of, as_of + H]`` closes before the first validation ``as_of``, so no conversion
is both a training label and validation evidence, and training features never overlap validation
labels. Precisely: ``min(val.as_of) - max(train.as_of) > gap >= H``. Snapshot examples obey the same
cut: a training snapshot ``T`` is ``< train_end``, so its label ``(T, T + H]`` closes before the
validation start.

**Examples** (``TrainOptions.examples``). ``"snapshots"``: the rankings a user sees
(``models.snapshots``), at snapshot times of the training period - every served business of a
market at ``T``, features from the same fold and ``extract``, label ``(T, T + H]``, one query per
(snapshot, market); the snapshot times are UTC midnights, thinned so the rows stay within
``snapshot_rows`` (``models.snapshots.training_snapshot_times``). ``"events"``: scoring moments
grouped by market x day, sampled (``sample_rate``; ``None`` adapts it to the log's size,
``models.dataset.auto_sample_rate``) and reduced to one example per (group, business): its latest
sampled moment of the day (the evaluation frame of ``models.evaluate``; ``frame="all"`` keeps every
moment). On sparse data those groups are nearly all single businesses, which gives ``rank:ndcg``
no pairs; a snapshot query holds the whole market. ``"both"``: the two sets, query ids kept apart.

**Fit.** Two objectives: ``rank:ndcg``, one query per group (``qid``, rows sorted by it as XGBoost
requires), linear gains on the conversion count (``ndcg_exp_gain=False``: the DCG then weighs
conversions, like the business metric, and large counts cannot overflow the exponential gain); and
``binary:logistic`` (label = converted > 0), pointwise, so its scores compare across markets. The
default ``objective="auto"`` lets the inner split below choose between them: ``rank:ndcg`` orders
within a market but leaves scores of different markets on arbitrary offsets, which costs the
snapshot AUC (markets pooled) on sparse worlds; ``binary:logistic`` wins there and loses on some
small dense ones (``python -m models.sweep``). ``hist``, depth 6, eta 0.1. Deterministic: fixed
``seed`` and ``nthread``.

**Rounds are chosen on the training period only** (:func:`choose_rounds`): an inner time split of
the training examples - the last ``inner_validation_share`` of their days as inner validation, a gap
``>= H`` before it, as above - grows up to ``num_boost_round`` trees on the inner training rows and
stops ``early_stopping_rounds`` after the best inner top-k capture + AUC (with ``auto``, for each
objective; the better criterion wins, ``rank:ndcg`` on a tie or when the inner split cannot judge);
the model is then refit on every training row with that objective and that many rounds. The gates' validation data is never passed to the fit, so
their metrics are honest estimates (no early stopping on them).

**Base margin** (``base_margin="popularity"``, the default): every row starts from ``log1p`` of its popularity
score (``models.baseline.PopularityMargin``, computed from the feature row) and the trees learn
corrections; zero rounds - a candidate of the inner choice - is popularity itself. The margin is
recorded in the model's metadata and added by ``LoadedModel.score`` when serving.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from models.baseline import PopularityMargin
from models.dataset import DAY_MS, TrainingSet
from models.errors import TrainingError
from models.evaluate import evaluation_frame
from models.fitdata import (
    DASK,
    ENGINES,
    EXTERNAL_MEMORY,
    MEMORY,
    ChunkLoader,
    Engine,
    ExternalMemoryEngine,
    FitData,
    MemoryData,
    Scorer,
    feature_bytes,
    fit_order,
)
from models.snapshots import SnapshotFrame

OBJECTIVES = ("rank:ndcg", "binary:logistic")
AUTO = "auto"  # the inner split chooses among OBJECTIVES
FRAMES = ("latest", "all")
EXAMPLES = ("snapshots", "events", "both")
BASE_MARGINS = ("none", "popularity")


@dataclass(frozen=True)
class TrainOptions:
    """Every knob of a training run (recorded in the model's metadata)."""

    objective: str = AUTO  # or one of OBJECTIVES (see the module doc)
    # Training examples: "snapshots" (every served business of a market at training snapshot
    # times), "events" (scoring moments, grouped by market x day) or "both". See the module doc.
    examples: str = "snapshots"
    snapshot_rows: int = 200_000  # row budget of the training snapshots (they are thinned to fit)
    # "latest": one example per (group, business) - its latest sampled moment of the group's day -
    # for training and validation alike (a ranking query lists each business once; see evaluate).
    # "all": every sampled scoring moment.
    frame: str = "latest"
    validation_days: int = 7
    gap_ms: int | None = None  # None: the label horizon; never less than it
    num_boost_round: int = 200
    early_stopping_rounds: int = 20
    # Rounds are chosen on the training period: its last share of days is the inner validation.
    inner_validation_share: float = 0.2
    fallback_rounds: int = 20  # rounds when the inner split is too small to judge by
    # "popularity": every row starts from log1p(popularity) and the trees learn corrections (the
    # measured default: python -m models.sweep); "none": the trees alone. See the module doc.
    base_margin: str = "popularity"
    max_depth: int = 6
    eta: float = 0.1
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    max_bin: int = 256
    seed: int = 0
    nthread: int = 2
    # Fit engine (fit(engine="auto")): above this many bytes of float32 features (rows x features x 4)
    # the fit runs in external memory (models.fitdata); None: always in memory.
    memory_budget_bytes: int | None = None
    # Data
    # share of event scoring moments kept (deterministic, by event id); None: adapted to the log's
    # size (models.dataset.auto_sample_rate: all of a log up to 100k activity records)
    sample_rate: float | None = None
    start_ms: int | None = None  # examples from here; the state is folded from the log's start (as the worker's)
    # Rolling window: train and judge on the rows of the last N days of data (None: all of it).
    # The state is still folded from the log's start; the window bounds the rows, not the fold.
    window_days: int | None = None
    # Evaluation and gates
    top_k: int = 3
    tolerance: float = 0.02  # a candidate may trail the promoted model's capture by this much
    min_improvement_over_popularity: float = 0.0  # capture must exceed popularity's by more
    importance_threshold: float = 0.05  # report features whose gain share moved more
    min_train_examples: int = 100
    min_validation_groups: int = 5

    def __post_init__(self) -> None:
        if self.objective not in (AUTO, *OBJECTIVES):
            raise TrainingError(f"objective must be {AUTO} or one of {OBJECTIVES}, got {self.objective!r}")
        if self.frame not in FRAMES:
            raise TrainingError(f"frame must be one of {FRAMES}, got {self.frame!r}")
        if self.validation_days < 1:
            raise TrainingError("validation_days must be >= 1")
        if self.gap_ms is not None and self.gap_ms < 0:
            raise TrainingError("gap_ms must be >= 0")
        if self.num_boost_round < 1 or self.early_stopping_rounds < 1:
            raise TrainingError("num_boost_round and early_stopping_rounds must be >= 1")
        if self.window_days is not None and self.window_days < 1:
            raise TrainingError("window_days must be >= 1 (or None: all of the data)")
        if self.sample_rate is not None and not 0.0 < self.sample_rate <= 1.0:
            raise TrainingError("sample_rate must be in (0, 1] (or None: adapted to the log's size)")
        if self.examples not in EXAMPLES:
            raise TrainingError(f"examples must be one of {EXAMPLES}, got {self.examples!r}")
        if self.base_margin not in BASE_MARGINS:
            raise TrainingError(f"base_margin must be one of {BASE_MARGINS}, got {self.base_margin!r}")
        if self.snapshot_rows < 1:
            raise TrainingError("snapshot_rows must be >= 1")
        if not 0.0 < self.inner_validation_share < 1.0:
            raise TrainingError("inner_validation_share must be in (0, 1)")
        if self.fallback_rounds < 0:
            raise TrainingError("fallback_rounds must be >= 0")
        if self.top_k < 1:
            raise TrainingError("top_k must be >= 1")
        if self.nthread < 1:
            raise TrainingError("nthread must be >= 1")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes < 1:
            raise TrainingError("memory_budget_bytes must be >= 1 (or None: no budget)")

    def xgb_params(self) -> dict[str, Any]:
        if self.objective == AUTO:
            raise TrainingError("objective 'auto' is resolved by fit (the inner split) before any booster is trained")
        p: dict[str, Any] = {
            "objective": self.objective,
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "max_bin": self.max_bin,
            "seed": self.seed,
            "nthread": self.nthread,
            "verbosity": 0,
        }
        if self.objective == "rank:ndcg":
            p["ndcg_exp_gain"] = False
            p["eval_metric"] = "ndcg@10"
        else:
            p["eval_metric"] = "logloss"
        return p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> TrainOptions:
        return replace(self, **changes)


# ----------------------------------------------------------------------------------- split
@dataclass(frozen=True)
class Split:
    train_idx: np.ndarray
    val_idx: np.ndarray
    val_start_ms: int  # first validation day, 00:00 UTC
    train_end_ms: int  # every training as_of is < this
    gap_ms: int  # val_start_ms - train_end_ms (>= the label horizon)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_examples": len(self.train_idx),
            "validation_examples": len(self.val_idx),
            "val_start_ms": self.val_start_ms,
            "train_end_ms": self.train_end_ms,
            "gap_ms": self.gap_ms,
        }


def time_split(as_of: np.ndarray, horizon_ms: int, validation_days: int = 7, gap_ms: int | None = None) -> Split:
    """Validation = the last ``validation_days`` days of ``as_of``; training ends >= H earlier."""
    as_of = np.asarray(as_of, dtype=np.int64)
    if len(as_of) == 0:
        raise TrainingError("no examples to split")
    gap = max(int(gap_ms) if gap_ms is not None else int(horizon_ms), int(horizon_ms))
    gap_days = max(1, math.ceil(gap / DAY_MS)) if gap > 0 else 0
    last_day = int(as_of.max()) // DAY_MS
    val_start_day = last_day - validation_days + 1
    val_start = val_start_day * DAY_MS
    train_end = (val_start_day - gap_days) * DAY_MS
    day = as_of // DAY_MS
    val_idx = np.flatnonzero(day >= val_start_day)
    train_idx = np.flatnonzero(as_of < train_end)
    return Split(train_idx, val_idx, val_start, train_end, val_start - train_end)


def frame(ts: TrainingSet, how: str = "latest") -> TrainingSet:
    """``ts`` as used for fitting: one example per (group, business) for ``"latest"``."""
    if how == "all":
        return ts
    return ts.take(evaluation_frame(ts.groups, ts.business, ts.as_of))


# -------------------------------------------------------------------------------- examples
@dataclass
class FitSet:
    """The rows a fit learns from, whatever built them.

    ``time`` is where each label window starts - an event example's ``as_of``, a snapshot
    example's ``T`` - so the label is ``(time, time + H]``; the inner split cuts on it. ``groups``
    are the query ids (``rank:*``): one per event group (market x day) or per (snapshot, market).
    ``source`` says which builder made each row (``"events"`` or ``"snapshots"``).
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    time: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> FitSet:
        return FitSet(self.X[idx], self.y[idx], self.groups[idx], self.time[idx], self.source[idx])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": len(self), "groups": int(len(np.unique(self.groups)))}
        for src in ("events", "snapshots"):
            sel = self.source == src
            if sel.any():
                g = self.groups[sel]
                _, sizes = np.unique(g, return_counts=True)
                out[src] = {
                    "rows": int(sel.sum()),
                    "groups": int(len(sizes)),
                    "groups_with_pairs": int((sizes > 1).sum()),
                    "conversions": float(self.y[sel].sum()),
                }
        return out


def event_examples(ts: TrainingSet, how: str = "latest") -> FitSet:
    """Event examples (scoring moments, grouped by market x day), reduced to ``frame(ts, how)``."""
    f = frame(ts, how)
    n = len(f)
    return FitSet(
        np.asarray(f.X, dtype=np.float32),
        np.asarray(f.y, dtype=np.float32),
        np.asarray(f.groups, dtype=np.int64),
        np.asarray(f.as_of, dtype=np.int64),
        np.full(n, "events", dtype=object),
    )


def snapshot_examples(sf: SnapshotFrame) -> FitSet:
    """Snapshot examples: every served business of a market at each snapshot ``T`` (the frame
    of ``models.snapshots``), one query per (snapshot, market), label window ``(T, T + H]``."""
    n = len(sf)
    return FitSet(
        np.asarray(sf.X, dtype=np.float32),
        np.asarray(sf.y, dtype=np.float32),
        sf.groups,
        np.asarray(sf.snapshot, dtype=np.int64),
        np.full(n, "snapshots", dtype=object),
    )


def concat(*sets: FitSet) -> FitSet:
    """The rows of ``sets`` in order, query ids renumbered so no two sets share one."""
    parts = [s for s in sets if len(s)]
    if not parts:
        return sets[0] if sets else FitSet(*(np.zeros(0) for _ in range(5)))
    groups, offset = [], 0
    for s in parts:
        _, dense = np.unique(s.groups, return_inverse=True)
        groups.append(dense.astype(np.int64) + offset)
        offset += int(dense.max()) + 1
    return FitSet(
        np.concatenate([s.X for s in parts]),
        np.concatenate([s.y for s in parts]),
        np.concatenate(groups),
        np.concatenate([s.time for s in parts]),
        np.concatenate([s.source for s in parts]),
    )


# ------------------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    booster: Any  # xgboost.Booster with ``rounds`` trees, fitted on every training row
    best_iteration: int  # rounds - 1 (-1: no tree; the base margin alone)
    best_score: float  # the inner validation criterion at the chosen rounds
    rounds_run: int  # rounds the inner fit ran before it stopped
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0
    inner: dict[str, Any] = field(default_factory=dict)  # the inner split and how rounds were chosen
    examples: dict[str, Any] = field(default_factory=dict)  # FitSet.summary() of the training rows
    base_margin: dict[str, Any] | None = None  # PopularityMargin.to_dict(), recorded for serving
    objective: str = ""  # the objective trained (what "auto" resolved to)
    objectives: dict[str, float] = field(default_factory=dict)  # with "auto": inner criterion per objective
    engine: str = "memory"  # where the rows were trained on: "memory" | "external_memory" | "dask"
    engine_detail: dict[str, Any] = field(default_factory=dict)  # FitData.describe(): batches, workers...

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_iteration": self.best_iteration,
            "best_score": self.best_score,
            "rounds": self.rounds,
            "rounds_run": self.rounds_run,
            "seconds": self.seconds,
            "params": self.params,
            "inner_split": self.inner,
            "examples": self.examples,
            "base_margin": self.base_margin,
            "objective": self.objective,
            "inner_criterion_by_objective": self.objectives,
            "engine": self.engine,
            "engine_detail": self.engine_detail,
            "eval_metric_history": self.history,
        }


def training_labels(y: np.ndarray, objective: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if objective == "binary:logistic":
        return (y > 0).astype(np.float32)
    return y


def dmatrix(ex: FitSet | TrainingSet, objective: str, margin: PopularityMargin | None = None):
    """An XGBoost DMatrix with rows sorted by group (qid) for ranking objectives; with ``margin``,
    each row's base margin set to it."""
    import xgboost as xgb

    order = np.argsort(ex.groups, kind="stable") if objective.startswith("rank:") else np.arange(len(ex.y))
    X = np.asarray(ex.X)[order]
    kw: dict[str, Any] = {
        "label": training_labels(np.asarray(ex.y)[order], objective),
        "missing": np.nan,
        "nthread": -1,
    }
    if objective.startswith("rank:"):
        kw["qid"] = np.asarray(ex.groups)[order]
    if margin is not None:
        kw["base_margin"] = margin.values(X).astype(np.float32)
    return xgb.DMatrix(X, **kw)


def _checkpoints(n: int) -> list[int]:
    """Round counts the inner fit is judged at: every round up to 10, then every 5th, then 10th."""
    pts = list(range(1, min(n, 10) + 1)) + list(range(15, min(n, 50) + 1, 5)) + list(range(60, n + 1, 10))
    if n not in pts:
        pts.append(n)
    return pts


def inner_split(time_ms: np.ndarray, horizon_ms: int, options: TrainOptions) -> Split:
    """The training period's own time split: the last ``inner_validation_share`` of its days (at
    least one) as inner validation, training ending ``gap >= H`` before (the rule of
    :func:`time_split`: every inner-training label window closes before the inner validation)."""
    t = np.asarray(time_ms, dtype=np.int64)
    if len(t) == 0:
        raise TrainingError("no training examples")
    span_days = int(t.max() // DAY_MS - t.min() // DAY_MS + 1)
    days = max(1, round(span_days * options.inner_validation_share))
    return time_split(t, horizon_ms, days, options.gap_ms)


def _criterion(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int) -> float:
    """What rounds are chosen by: top-k capture + AUC on the inner validation (the two numbers the
    gates and the sweep judge); NaN parts count as 0."""
    from models.evaluate import auc, topk_capture

    c, a = topk_capture(y, scores, groups, k), auc(y, scores)
    return (c if math.isfinite(c) else 0.0) + (a if math.isfinite(a) else 0.0)


def choose_rounds(
    examples: FitSet | FitData,
    options: TrainOptions,
    horizon_ms: int,
    margin: PopularityMargin | None = None,
) -> tuple[int, float, int, dict[str, Any], dict[str, list[float]]]:
    """Rounds by early stopping on the inner split of ``examples`` (the training period only).

    Returns ``(rounds, criterion, rounds_run, inner record, history)``. The inner fit grows trees
    on the inner training rows and is judged at :func:`_checkpoints` on the inner validation rows
    (:func:`_criterion`); it stops ``early_stopping_rounds`` rounds after the best. With a base
    margin, 0 rounds (the margin alone: popularity) is a candidate too. When the inner split has
    too few rows or no conversion to judge by, ``options.fallback_rounds`` are used (recorded).
    ``examples`` is a FitSet (fitted in memory) or any engine's :class:`~models.fitdata.FitData`.
    """
    data = _as_data(examples)
    rows = data.rows
    sp = inner_split(rows.time, horizon_ms, options)
    tr_y, va_y = rows.y[sp.train_idx], rows.y[sp.val_idx]
    inner: dict[str, Any] = {
        "share": options.inner_validation_share,
        "train_rows": len(sp.train_idx),
        "validation_rows": len(sp.val_idx),
        "validation_conversions": float(va_y.sum()) if len(va_y) else 0.0,
        "val_start_ms": sp.val_start_ms,
        "train_end_ms": sp.train_end_ms,
        "gap_ms": sp.gap_ms,
    }
    if (
        len(tr_y) < max(1, options.min_train_examples // 2)
        or len(va_y) == 0
        or not (va_y > 0).any()
        or not (tr_y > 0).any()
    ):
        inner["rounds_from"] = "fallback: the inner split is too small to judge rounds by"
        return min(options.fallback_rounds, options.num_boost_round), float("nan"), 0, inner, {}
    params = options.xgb_params()
    dtr = data.matrix(sp.train_idx, params, margin)
    va_idx = fit_order(rows.groups, sp.val_idx, options.objective)
    scorer = data.scorer(va_idx, options.objective, margin)
    va = (rows.y[va_idx], rows.groups[va_idx])  # labels and query ids of the scored rows, in their order
    rounds, best, done, history = _early_stopping(data, params, dtr, scorer, va, options, margin)
    inner["rounds_from"] = "early stopping on the inner validation (top-k capture + AUC)"
    return rounds, best, done, inner, history


def _early_stopping(
    data: FitData,
    params: dict[str, Any],
    dtr: Any,
    scorer: Scorer,
    va: tuple[np.ndarray, np.ndarray],
    options: TrainOptions,
    margin: PopularityMargin | None,
) -> tuple[int, float, int, dict[str, list[float]]]:
    """Grow trees on ``dtr`` checkpoint by checkpoint, judging each on the inner validation rows
    ``va`` (labels and groups; ``scorer`` scores them). Returns (rounds, criterion, run, history)."""
    va_y, va_groups = va
    k = options.top_k
    history: dict[str, list[float]] = {"inner_validation:rounds": [], "inner_validation:capture+auc": []}
    best_r, best = -1, -math.inf
    if margin is not None:
        best_r, best = 0, _criterion(va_y, scorer.base, va_groups, k)
        history["inner_validation:rounds"].append(0)
        history["inner_validation:capture+auc"].append(best)
    booster = None
    done = 0
    for r in _checkpoints(options.num_boost_round):
        booster = data.train(params, dtr, r - done, booster)
        done = r
        s = scorer.margins(booster) + scorer.base
        c = _criterion(va_y, s, va_groups, k)
        history["inner_validation:rounds"].append(r)
        history["inner_validation:capture+auc"].append(c)
        if c > best + 1e-12:
            best_r, best = r, c
        elif r - best_r >= options.early_stopping_rounds:
            break
    return max(best_r, 0), best, done, history


def fit(
    examples: FitSet | Sequence[ChunkLoader],
    options: TrainOptions = TrainOptions(),
    horizon_ms: int = DAY_MS,
    margin: PopularityMargin | None = None,
    engine: str | Engine = "auto",
) -> FitResult:
    """Choose the rounds on the inner split of ``examples`` (:func:`choose_rounds`), then refit on
    every row of ``examples`` with that many rounds. ``examples`` must be training-period rows only:
    nothing here looks at the gates' validation data.

    ``examples``: a FitSet, or chunk loaders (callables returning FitSet chunks; their rows in order
    are the training rows, group ids shared). ``engine``: ``"auto"`` (in memory unless the features
    exceed ``options.memory_budget_bytes``, then ``"external_memory"``), ``"memory"``,
    ``"external_memory"``, ``"dask"`` (the default ``distributed`` client) or an engine object
    (``models.fitdata.ExternalMemoryEngine``, ``models.daskfit.DaskEngine``). The protocol is the
    same whatever the engine; ``FitResult.engine`` records which one ran."""
    data = open_data(examples, options, engine)
    try:
        return _fit(data, options, horizon_ms, margin)
    finally:
        data.close()


def _fit(data: FitData, options: TrainOptions, horizon_ms: int, margin: PopularityMargin | None) -> FitResult:
    if len(data.rows) < options.min_train_examples:
        raise TrainingError(f"{len(data.rows)} training examples, need at least {options.min_train_examples}")
    t0 = time.perf_counter()
    options, (rounds, score, rounds_run, inner, history), by_objective = _choose_objective(
        data, options, horizon_ms, margin
    )
    params = options.xgb_params()
    booster = data.train(params, data.matrix(None, params, margin), rounds)
    seconds = time.perf_counter() - t0
    return FitResult(
        booster,
        rounds - 1,
        score,
        rounds_run,
        history,
        seconds,
        params,
        rounds=rounds,
        inner=inner,
        examples=data.rows.summary(),
        base_margin=margin.to_dict() if margin is not None else None,
        objective=options.objective,
        objectives=by_objective,
        engine=data.engine,
        engine_detail=data.describe(),
    )


def _as_data(examples: FitSet | FitData) -> FitData:
    return MemoryData(examples) if isinstance(examples, FitSet) else examples


def open_data(examples: FitSet | Sequence[ChunkLoader], options: TrainOptions, engine: str | Engine) -> FitData:
    """The engine's :class:`~models.fitdata.FitData` for ``examples`` (see :func:`fit`)."""
    if not isinstance(engine, str):
        return engine.open(examples, options)
    if engine not in ("auto", *ENGINES):
        raise TrainingError(f"engine must be 'auto' or one of {ENGINES} (or an engine object), got {engine!r}")
    if engine == DASK:
        from models.daskfit import DaskEngine  # dask only when asked for

        return DaskEngine().open(examples, options)
    if engine == EXTERNAL_MEMORY:
        return ExternalMemoryEngine().open(examples, options)
    if isinstance(examples, FitSet):
        if engine == MEMORY or not _over_budget(len(examples), examples.X.shape[1], options):
            return MemoryData(examples)
        return ExternalMemoryEngine().open(examples, options)
    ext = ExternalMemoryEngine().open(examples, options)
    if engine == MEMORY or not _over_budget(len(ext.rows), ext.n_features, options):
        ext.close()
        return MemoryData(load_chunks(examples))
    return ext


def _over_budget(rows: int, features: int, options: TrainOptions) -> bool:
    budget = options.memory_budget_bytes
    return budget is not None and feature_bytes(rows, features) > budget


def load_chunks(chunks: Sequence[ChunkLoader]) -> FitSet:
    """The chunks' rows in one in-memory FitSet (group ids kept as they are: shared across chunks)."""
    parts = [load() for load in chunks]
    if not parts:
        raise TrainingError("no chunks to fit on")
    return FitSet(*(np.concatenate([getattr(p, col) for p in parts]) for col in ("X", "y", "groups", "time", "source")))


def _choose_objective(
    examples: FitData, options: TrainOptions, horizon_ms: int, margin: PopularityMargin | None
) -> tuple[TrainOptions, tuple[int, float, int, dict[str, Any], dict[str, list[float]]], dict[str, float]]:
    """``options`` with its objective resolved, that objective's :func:`choose_rounds` result, and
    the inner criterion of every candidate (empty unless ``objective="auto"``)."""
    if options.objective != AUTO:
        return options, choose_rounds(examples, options, horizon_ms, margin), {}
    best: tuple[TrainOptions, Any] | None = None
    scores: dict[str, float] = {}
    for objective in OBJECTIVES:  # rank:ndcg first: it keeps ties and unjudged splits
        o = options.with_(objective=objective)
        chosen = choose_rounds(examples, o, horizon_ms, margin)
        scores[objective] = chosen[1]
        if best is None or chosen[1] > best[1][1] + 1e-12:
            best = (o, chosen)
    assert best is not None
    return best[0], best[1], scores
