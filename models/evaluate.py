"""Offline evaluation: ranking quality, the business metric, and feature importance.

All metrics are computed per ranking group (``city, state|category`` x day of ``as_of``) on an
*evaluation frame*: one example per (group, business), the business's latest scoring moment in
that group. A busy business has many scoring moments a day; ranking a city/category means ranking
its businesses once each (by their latest score, as the worker serves them), so duplicates would
count the same business's conversions several times in a top-k.

Metrics, each for the model, the popularity baseline (past conversions up to ``as_of``) and random:

* ``capture@k`` (the business metric): share of next-horizon conversions that land in each
  group's top-k, micro-averaged: ``sum_g conversions(top-k of g) / sum_g conversions(g)``. Ties at
  the k-th place are broken uniformly at random *in expectation* (the tied block counts
  fractionally), so a baseline with many equal scores is neither favoured nor penalised.
  Random is exact: ``sum_g min(k, n_g) / n_g * conversions(g) / total``.
* ``ndcg@10``: linear gains (conversion counts), tie-averaged like ``sklearn.metrics.ndcg_score``,
  mean over groups with at least two businesses and at least one conversion. Random: mean over
  seeded permutations.
* ``auc``: ROC AUC of ``conversions > 0`` over the frame (random: 0.5).

Lift = model capture / baseline capture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_TOP_K = 3
NDCG_K = 10
RANDOM_SEEDS = 5


# ------------------------------------------------------------------------------------ frame
def evaluation_frame(groups: np.ndarray, businesses: Sequence[str] | np.ndarray, as_of: np.ndarray) -> np.ndarray:
    """Indices of one example per (group, business): the latest ``as_of`` (last in input on ties)."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, biz_codes = np.unique(np.asarray(businesses, dtype=object).astype(str), return_inverse=True)
    # Sort by (group, business, as_of, index); the last of each (group, business) run wins.
    order = np.lexsort((np.arange(n), np.asarray(as_of), biz_codes, np.asarray(groups)))
    g = np.asarray(groups)[order]
    b = biz_codes[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (g[1:] != g[:-1]) | (b[1:] != b[:-1])
    return np.sort(order[last])


def _group_slices(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that makes groups contiguous, and the run boundaries in that order."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True]) if len(g) else np.array([0])
    return order, bounds


# ---------------------------------------------------------------------------------- metrics
def _capture_one(y: np.ndarray, s: np.ndarray, k: int) -> float:
    n = len(y)
    if n <= k:
        return float(y.sum())
    t = np.partition(s, n - k)[n - k]  # the k-th largest score
    above = s > t
    tied = s == t
    slots = k - int(above.sum())
    return float(y[above].sum() + y[tied].sum() * slots / int(tied.sum()))


def topk_capture(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = DEFAULT_TOP_K) -> float:
    """Share of all conversions captured by each group's top-k by ``scores`` (expected, ties random)."""
    y = np.asarray(y, dtype=np.float64)
    total = float(y.sum())
    if total <= 0:
        return float("nan")
    s = np.asarray(scores, dtype=np.float64)
    order, bounds = _group_slices(np.asarray(groups))
    ys, ss = y[order], s[order]
    captured = 0.0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yg = ys[a:b]
        if yg.any():
            captured += _capture_one(yg, ss[a:b], k)
    return captured / total


def random_topk_capture(y: np.ndarray, groups: np.ndarray, k: int = DEFAULT_TOP_K) -> float:
    """Expected top-k capture of a uniformly random order (exact, no sampling)."""
    y = np.asarray(y, dtype=np.float64)
    total = float(y.sum())
    if total <= 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    per_group = np.bincount(inverse, weights=y)
    return float((np.minimum(k, counts) / counts * per_group).sum() / total)


def _discounts(n: int, k: int) -> np.ndarray:
    d = np.zeros(n, dtype=np.float64)
    m = min(n, k)
    d[:m] = 1.0 / np.log2(np.arange(2, m + 2))
    return d


def _ndcg_one(y: np.ndarray, s: np.ndarray, k: int) -> float:
    n = len(y)
    disc = _discounts(n, k)
    ideal = float(np.sort(y)[::-1] @ disc)
    if ideal <= 0:
        return float("nan")
    # Tie-averaged DCG (as sklearn): a block of equal scores shares the mean gain over its positions.
    _, inv, counts = np.unique(-s, return_inverse=True, return_counts=True)
    block_gain = np.bincount(inv, weights=y) / counts
    cum = np.r_[0.0, np.cumsum(disc)]
    ends = np.cumsum(counts)
    starts = ends - counts
    dcg = float((block_gain * (cum[ends] - cum[starts])).sum())
    return dcg / ideal


def ndcg_at_k(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = NDCG_K) -> float:
    """Mean NDCG@k over groups with >= 2 items and at least one positive label (linear gains)."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    order, bounds = _group_slices(np.asarray(groups))
    ys, ss = y[order], s[order]
    vals = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b - a < 2:
            continue
        yg = ys[a:b]
        if not yg.any():
            continue
        vals.append(_ndcg_one(yg, ss[a:b], k))
    return float(np.mean(vals)) if vals else float("nan")


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``y > 0``; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    pos = np.asarray(y) > 0
    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, np.asarray(scores, dtype=np.float64)))


@dataclass(frozen=True)
class MetricSet:
    ndcg10: float
    auc: float
    capture: float  # top-k capture, k = Evaluation.k

    def to_dict(self) -> dict[str, float | None]:
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


def score_metrics(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = DEFAULT_TOP_K) -> MetricSet:
    return MetricSet(
        ndcg10=ndcg_at_k(y, scores, groups, NDCG_K),
        auc=auc(y, scores),
        capture=topk_capture(y, scores, groups, k),
    )


def random_metrics(y: np.ndarray, groups: np.ndarray, k: int = DEFAULT_TOP_K, seed: int = 0) -> MetricSet:
    rng = np.random.default_rng(seed)
    ndcgs = [ndcg_at_k(y, rng.random(len(y)), groups, NDCG_K) for _ in range(RANDOM_SEEDS)]
    return MetricSet(ndcg10=float(np.mean(ndcgs)), auc=0.5, capture=random_topk_capture(y, groups, k))


@dataclass(frozen=True)
class Evaluation:
    k: int
    model: MetricSet
    popularity: MetricSet
    random: MetricSet
    n_examples: int  # rows in the evaluation frame (one per group and business)
    n_groups: int
    n_conversions: float

    @property
    def lift_vs_popularity(self) -> float:
        return _ratio(self.model.capture, self.popularity.capture)

    @property
    def lift_vs_random(self) -> float:
        return _ratio(self.model.capture, self.random.capture)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "model": self.model.to_dict(),
            "popularity": self.popularity.to_dict(),
            "random": self.random.to_dict(),
            "lift_vs_popularity": _finite_or_none(self.lift_vs_popularity),
            "lift_vs_random": _finite_or_none(self.lift_vs_random),
            "n_examples": self.n_examples,
            "n_groups": self.n_groups,
            "n_conversions": self.n_conversions,
        }


def evaluate(
    model_scores: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    businesses: Sequence[str] | np.ndarray,
    as_of: np.ndarray,
    popularity: np.ndarray,
    k: int = DEFAULT_TOP_K,
    seed: int = 0,
) -> Evaluation:
    """Model vs popularity vs random on the evaluation frame of the given examples."""
    idx = evaluation_frame(groups, businesses, as_of)
    yf, gf = np.asarray(y)[idx], np.asarray(groups)[idx]
    return Evaluation(
        k=k,
        model=score_metrics(yf, np.asarray(model_scores)[idx], gf, k),
        popularity=score_metrics(yf, np.asarray(popularity)[idx], gf, k),
        random=random_metrics(yf, gf, k, seed),
        n_examples=len(idx),
        n_groups=len(np.unique(gf)),
        n_conversions=float(yf.sum()),
    )


def frame_metrics(
    scores: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    businesses: Sequence[str] | np.ndarray,
    as_of: np.ndarray,
    k: int = DEFAULT_TOP_K,
) -> MetricSet:
    """The model metrics of :func:`evaluate` for one more scorer (e.g. the promoted model)."""
    idx = evaluation_frame(groups, businesses, as_of)
    return score_metrics(np.asarray(y)[idx], np.asarray(scores)[idx], np.asarray(groups)[idx], k)


# ------------------------------------------------------------------------------- importance
def gain_importance(booster: Any, feature_names: Sequence[str]) -> dict[str, float]:
    """Total gain per feature, normalised to sum 1 (all zeros for a model without splits).

    The booster is trained without feature names (``f0``, ``f1``, ...), mapped back by index.
    """
    raw = booster.get_score(importance_type="total_gain")
    gains = {name: 0.0 for name in feature_names}
    for key, value in raw.items():
        if key.startswith("f") and key[1:].isdigit() and int(key[1:]) < len(feature_names):
            gains[feature_names[int(key[1:])]] += float(value)
        elif key in gains:
            gains[key] += float(value)
    total = sum(gains.values())
    if total > 0:
        gains = {k: v / total for k, v in gains.items()}
    return gains


@dataclass(frozen=True)
class ImportanceShift:
    feature: str
    previous: float
    current: float

    @property
    def delta(self) -> float:
        return self.current - self.previous

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "previous": self.previous, "current": self.current, "delta": self.delta}


def importance_shifts(
    current: Mapping[str, float], previous: Mapping[str, float], threshold: float = 0.05
) -> list[ImportanceShift]:
    """Features whose gain share moved by more than ``threshold`` (absolute), largest move first.

    A feature present on one side only counts as 0 on the other.
    """
    names = list(dict.fromkeys([*current, *previous]))
    shifts = [ImportanceShift(n, float(previous.get(n, 0.0)), float(current.get(n, 0.0))) for n in names]
    moved = [s for s in shifts if abs(s.delta) > threshold]
    return sorted(moved, key=lambda s: (-abs(s.delta), s.feature))


# ---------------------------------------------------------------------------------- helpers
def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return float("nan")
    return a / b


def _finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None
