"""Offline evaluation: ranking quality, the business metric, and feature importance.

Two frames. The **snapshot frame** (``models.snapshots``; :func:`evaluate_snapshots`, below under
"snapshot frame") is what the gates judge: every served business of each market at snapshot times,
with bootstrap CIs over markets and a sufficiency rule. The **event frame** (:func:`evaluate`,
described next) is kept for the record and for comparisons with older models' metadata.

In the event frame, all metrics are computed per ranking group (``city, state|category`` x day of ``as_of``) on an
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


# ------------------------------------------------------------------------- snapshot frame
# The gates judge on the snapshot frame (``models.snapshots``): at each snapshot time T, every
# served business of each market, ranked; label = conversions in (T, T + H]. One ranking group is
# a (snapshot, market) pair.
#
# Confidence intervals: a percentile bootstrap over *markets* (all of a market's snapshots
# resampled together), seeded. Markets, not snapshots, because a market's rankings at neighbouring
# snapshots share the same businesses, states and (when H exceeds the snapshot step) the same
# conversions: they are one observation seen several times, and resampling snapshots would treat
# them as independent and give CIs that are too narrow. Markets are (nearly) independent draws of
# the world, and the generalisation the gate cares about is "another market like these".
#
# Metrics per scorer on the frame:
# * capture@k: conversions in each group's top-k (ties fractional) / all conversions (micro);
# * ndcg@10: mean over groups with >= 2 businesses and >= 1 conversion;
# * auc: ROC AUC of ``conversions > 0`` within each snapshot (markets pooled), averaged over the
#   snapshots with both classes. Per snapshot, so a count that only grows with time (all-time
#   popularity) is not compared across times.
#
# Sufficiency: a frame with fewer than ``MIN_SNAPSHOT_CONVERSIONS`` conversions in groups where the
# top-k leaves someone out (more than k businesses), or fewer than ``MIN_SNAPSHOT_MARKETS`` such
# markets, cannot decide between two rankers: see :func:`sufficiency`.

BOOTSTRAP_SAMPLES = 200
CI_LEVEL = 0.95
# 50 conversions: below it one conversion moves capture by 2 points or more, the size of the
# model-vs-popularity differences the gate decides on, and AUC's standard error exceeds ~0.04.
MIN_SNAPSHOT_CONVERSIONS = 50
# 3 markets: the CIs resample markets; with 1 or 2 a bootstrap has almost nothing to resample.
MIN_SNAPSHOT_MARKETS = 3
SCORERS = ("model", "popularity", "recent_popularity", "random")
METRICS = ("capture", "ndcg10", "auc")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval (``None``: not defined)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            "value": _finite_or_none(self.value),
            "low": _finite_or_none(self.low),
            "high": _finite_or_none(self.high),
        }

    def __str__(self) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Sufficiency:
    enough: bool
    conversions: float  # in groups with more than k businesses
    markets: int  # markets with such a group holding a conversion
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SnapshotEvaluation:
    k: int
    scores: dict[str, dict[str, Interval]]  # scorer -> metric -> interval
    diff_vs_popularity: dict[str, Interval]  # model - popularity (paired bootstrap), capture and auc
    diff_vs_recent: dict[str, Interval]  # model - recent_popularity
    sufficiency: Sufficiency
    n_rows: int
    n_groups: int
    n_snapshots: int
    n_markets: int
    n_conversions: float
    bootstrap: dict[str, Any]

    def metric(self, scorer: str, name: str) -> float:
        return self.scores[scorer][name].value

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            **{s: {m: iv.to_dict() for m, iv in self.scores[s].items()} for s in self.scores},
            "model_minus_popularity": {m: iv.to_dict() for m, iv in self.diff_vs_popularity.items()},
            "model_minus_recent_popularity": {m: iv.to_dict() for m, iv in self.diff_vs_recent.items()},
            "sufficiency": self.sufficiency.to_dict(),
            "n_rows": self.n_rows,
            "n_groups": self.n_groups,
            "n_snapshots": self.n_snapshots,
            "n_markets": self.n_markets,
            "n_conversions": self.n_conversions,
            "bootstrap": self.bootstrap,
        }


def sufficiency(
    y: np.ndarray,
    groups: np.ndarray,
    markets: np.ndarray,
    k: int = DEFAULT_TOP_K,
    min_conversions: float = MIN_SNAPSHOT_CONVERSIONS,
    min_markets: int = MIN_SNAPSHOT_MARKETS,
) -> Sufficiency:
    """Whether the frame can tell rankers apart: enough conversions where the top-k is a choice."""
    y = np.asarray(y, dtype=np.float64)
    groups = np.asarray(groups)
    if len(y):
        _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
        informative = counts[inv] > k
    else:
        informative = np.zeros(0, dtype=bool)
    conv = float(y[informative].sum())
    mk = int(len(np.unique(np.asarray(markets)[informative & (y > 0)])))
    enough = conv >= min_conversions and mk >= min_markets
    detail = (
        f"{conv:g} conversions in {mk} markets where the top-{k} leaves businesses out "
        f"(need >= {min_conversions:g} in >= {min_markets} markets)"
    )
    return Sufficiency(enough, conv, mk, detail)


@dataclass
class _GroupIndex:
    """The frame sorted by group, with the group and snapshot boundaries the metrics need."""

    order: np.ndarray
    bounds: np.ndarray  # group runs in ``order``
    group_market: np.ndarray  # market code of each group
    n_markets: int
    y: np.ndarray  # in ``order``
    snap_rows: list[np.ndarray]  # per snapshot: row indices (in ``order`` positions)
    row_market: np.ndarray  # market code per row, in ``order``


def _index(y: np.ndarray, groups: np.ndarray, markets: np.ndarray, snapshots: np.ndarray) -> _GroupIndex:
    order, bounds = _group_slices(groups)
    _, mcode = np.unique(markets, return_inverse=True)
    mcode = mcode.astype(np.int64)
    row_market = mcode[order]
    starts = bounds[:-1]
    group_market = row_market[starts] if len(order) else np.zeros(0, dtype=np.int64)
    snaps = np.asarray(snapshots)[order]
    _, sinv = np.unique(snaps, return_inverse=True)
    snap_rows = [np.flatnonzero(sinv == i) for i in range(int(sinv.max()) + 1)] if len(snaps) else []
    return _GroupIndex(
        order, bounds, group_market, int(mcode.max()) + 1 if len(mcode) else 0, y[order], snap_rows, row_market
    )


def _group_stats(ix: _GroupIndex, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: captured conversions, conversions, NDCG@10 (NaN where undefined)."""
    ng = len(ix.bounds) - 1
    cap, tot, nd = np.zeros(ng), np.zeros(ng), np.full(ng, np.nan)
    ys = ix.y
    for i, (a, b) in enumerate(zip(ix.bounds[:-1], ix.bounds[1:], strict=True)):
        yg = ys[a:b]
        if not yg.any():
            continue
        tot[i] = yg.sum()
        cap[i] = _capture_one(yg, s[a:b], k)
        if b - a >= 2:
            nd[i] = _ndcg_one(yg, s[a:b], NDCG_K)
    return cap, tot, nd


def _random_group_stats(ix: _GroupIndex, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ng = len(ix.bounds) - 1
    cap, tot, nd = np.zeros(ng), np.zeros(ng), np.full(ng, np.nan)
    rng = np.random.default_rng(seed)
    ys = ix.y
    for i, (a, b) in enumerate(zip(ix.bounds[:-1], ix.bounds[1:], strict=True)):
        yg = ys[a:b]
        if not yg.any():
            continue
        n = b - a
        tot[i] = yg.sum()
        cap[i] = yg.sum() * min(k, n) / n  # exact expectation
        if n >= 2:
            nd[i] = float(np.mean([_ndcg_one(yg, rng.random(n), NDCG_K) for _ in range(RANDOM_SEEDS)]))
    return cap, tot, nd


def _weighted_auc(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC AUC of ``pos`` by ``s`` under each column of row weights ``W`` [n, B] (ties count 1/2)."""
    order = np.argsort(s, kind="stable")
    ss = s[order]
    Wp = W[order] * pos[order, None]
    Wn = W[order] * (~pos[order])[:, None]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    P = np.add.reduceat(Wp, starts, axis=0)
    N = np.add.reduceat(Wn, starts, axis=0)
    below = np.cumsum(N, axis=0) - N
    num = (P * (below + 0.5 * N)).sum(axis=0)
    den = P.sum(axis=0) * N.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _metric_draws(
    ix: _GroupIndex, s: np.ndarray | None, stats: tuple[np.ndarray, np.ndarray, np.ndarray], Wm: np.ndarray
) -> dict[str, np.ndarray]:
    """Each metric under each row of market weights ``Wm`` [B, n_markets] (row 0: all ones)."""
    cap, tot, nd = stats
    M = ix.n_markets
    cap_m = np.bincount(ix.group_market, weights=cap, minlength=M)
    tot_m = np.bincount(ix.group_market, weights=tot, minlength=M)
    has_nd = np.isfinite(nd)
    nd_m = np.bincount(ix.group_market[has_nd], weights=nd[has_nd], minlength=M)
    ndn_m = np.bincount(ix.group_market[has_nd], minlength=M).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        capture = (Wm @ cap_m) / (Wm @ tot_m)
        ndcg = (Wm @ nd_m) / (Wm @ ndn_m)
    capture = np.where(np.isfinite(capture), capture, np.nan)
    ndcg = np.where(np.isfinite(ndcg), ndcg, np.nan)
    if s is None:
        auc_draws = np.full(Wm.shape[0], 0.5 if ix.y.any() and not ix.y.all() else np.nan)
    else:
        per_snap = []
        for rows in ix.snap_rows:
            pos = ix.y[rows] > 0
            if pos.all() or not pos.any():
                continue
            per_snap.append(_weighted_auc(pos, s[rows], Wm[:, ix.row_market[rows]].T))
        if per_snap:
            A = np.vstack(per_snap)
            with np.errstate(invalid="ignore"):
                cnt = np.isfinite(A).sum(axis=0)
                auc_draws = np.where(cnt > 0, np.nansum(A, axis=0) / np.maximum(cnt, 1), np.nan)
        else:
            auc_draws = np.full(Wm.shape[0], np.nan)
    return {"capture": capture, "ndcg10": ndcg, "auc": auc_draws}


def _interval(draws: np.ndarray, alpha: float) -> Interval:
    point = float(draws[0])
    rest = draws[1:]
    rest = rest[np.isfinite(rest)]
    if not math.isfinite(point) or len(rest) == 0:
        return Interval(point, float("nan"), float("nan"))
    lo, hi = np.quantile(rest, [alpha / 2, 1 - alpha / 2])
    return Interval(point, float(lo), float(hi))


def market_weights(n_markets: int, samples: int, seed: int) -> np.ndarray:
    """Row 0: ones (the point estimate); rows 1..samples: multinomial resamples of the markets."""
    W = np.ones((samples + 1, n_markets), dtype=np.float64)
    if n_markets and samples:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
        W[1:] = rng.multinomial(n_markets, np.full(n_markets, 1.0 / n_markets), size=samples)
    return W


def evaluate_snapshots(
    model_scores: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    markets: np.ndarray,
    snapshots: np.ndarray,
    popularity: np.ndarray,
    recent_popularity: np.ndarray,
    k: int = DEFAULT_TOP_K,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = CI_LEVEL,
    extra: Mapping[str, np.ndarray] | None = None,
    min_conversions: float | None = None,
    min_markets: int | None = None,
) -> SnapshotEvaluation:
    """Model vs popularity vs recency-weighted popularity vs random on a snapshot frame, with
    bootstrap CIs over markets (seeded: the same inputs give the same intervals). ``extra``:
    more scorers (e.g. the promoted model) evaluated on the same resamples. ``min_*``: the
    sufficiency thresholds (default: ``MIN_SNAPSHOT_CONVERSIONS``, ``MIN_SNAPSHOT_MARKETS``)."""
    if min_conversions is None:
        min_conversions = MIN_SNAPSHOT_CONVERSIONS
    if min_markets is None:
        min_markets = MIN_SNAPSHOT_MARKETS
    y = np.asarray(y, dtype=np.float64)
    groups = np.asarray(groups)
    ix = _index(y, groups, np.asarray(markets), np.asarray(snapshots))
    Wm = market_weights(ix.n_markets, samples, seed)
    alpha = 1.0 - level
    scorers: dict[str, np.ndarray | None] = {
        "model": np.asarray(model_scores, dtype=np.float64),
        "popularity": np.asarray(popularity, dtype=np.float64),
        "recent_popularity": np.asarray(recent_popularity, dtype=np.float64),
        "random": None,
    }
    for name, extra_scores in (extra or {}).items():
        scorers[name] = np.asarray(extra_scores, dtype=np.float64)
    draws: dict[str, dict[str, np.ndarray]] = {}
    for name, sc in scorers.items():
        if sc is None:
            stats = _random_group_stats(ix, k, seed)
            draws[name] = _metric_draws(ix, None, stats, Wm)
        else:
            s_sorted = sc[ix.order]
            draws[name] = _metric_draws(ix, s_sorted, _group_stats(ix, s_sorted, k), Wm)
    scores = {n: {m: _interval(d[m], alpha) for m in METRICS} for n, d in draws.items()}

    def diff(other: str) -> dict[str, Interval]:
        return {m: _interval(draws["model"][m] - draws[other][m], alpha) for m in ("capture", "auc")}

    return SnapshotEvaluation(
        k=k,
        scores=scores,
        diff_vs_popularity=diff("popularity"),
        diff_vs_recent=diff("recent_popularity"),
        sufficiency=sufficiency(y, groups, markets, k, min_conversions, min_markets),
        n_rows=len(y),
        n_groups=len(ix.bounds) - 1 if len(y) else 0,
        n_snapshots=len(ix.snap_rows),
        n_markets=ix.n_markets,
        n_conversions=float(y.sum()),
        bootstrap={"over": "markets", "samples": samples, "level": level, "seed": seed},
    )
