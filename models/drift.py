"""Feature and score drift: reference histograms at training, population stability when serving.

At training, :func:`build_reference` bins each feature of the training period's *scoring moments*
(the rows a worker scores: features at an activity event, not the snapshot rows the fit may use)
into up to ``bins`` quantile bins plus one bin for missing values (NaN), and the candidate's scores
on those rows the same way. The edges and each bin's share go into the model's metadata
(``drift_reference``), so the reference travels with the model it describes.

When serving, rows are counted into the same bins (:meth:`Histogram.counts`) over a window and
compared with the reference by the population stability index::

    PSI = sum over bins of (a - e) * ln(a / e)

with e the reference share and a the window's share, both floored at ``EPS`` so an empty bin is
finite. Rules of thumb (and the alert's threshold): below 0.1 stable, 0.1-0.25 a moderate shift,
above 0.25 a large one. A feature with a single value in training has one edge-less bin plus the
missing bin; any other value then lands in the same bin (PSI only sees a change in the missing
share): a constant feature cannot drift in a way PSI can measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BINS = 10
EPS = 1e-4
MAX_REFERENCE_ROWS = 50_000  # a random sample of this many rows is plenty for deciles


@dataclass(frozen=True)
class Histogram:
    """``edges``: ascending interior cut points (bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``);
    ``shares``: the reference share of each of those bins, then of the missing bin (NaN)."""

    edges: np.ndarray
    shares: np.ndarray

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 2

    def counts(self, values: np.ndarray) -> np.ndarray:
        """How many of ``values`` fall in each bin (the missing bin last)."""
        v = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges, v, side="right")
        idx[np.isnan(v)] = self.n_bins - 1
        return np.bincount(idx, minlength=self.n_bins)

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [float(x) for x in self.edges], "shares": [float(x) for x in self.shares]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Histogram:
        edges = np.asarray(d["edges"], dtype=np.float64)
        shares = np.asarray(d["shares"], dtype=np.float64)
        if len(shares) != len(edges) + 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("a drift histogram needs ascending edges and one share per bin plus the missing bin")
        return cls(edges, shares)


def histogram(values: np.ndarray, bins: int = DEFAULT_BINS) -> Histogram:
    """The reference histogram of ``values``: quantile cut points (duplicates merged), shares."""
    v = np.asarray(values, dtype=np.float64)
    present = v[~np.isnan(v)]
    if len(present):
        qs = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(qs)
        # A cut at the minimum would leave the first bin empty by construction.
        edges = edges[edges > present.min()]
    else:
        edges = np.zeros(0)
    h = Histogram(edges, np.zeros(len(edges) + 2))
    c = h.counts(v)
    return Histogram(edges, c / max(1, c.sum()))


def psi(expected: np.ndarray, actual_counts: np.ndarray) -> float:
    """Population stability index of ``actual_counts`` against the ``expected`` shares."""
    total = actual_counts.sum()
    if total <= 0:
        return float("nan")
    a = np.maximum(actual_counts / total, EPS)
    e = np.maximum(expected, EPS)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReference:
    """Per-feature and score histograms of the training rows a worker would score."""

    features: dict[str, Histogram]
    score: Histogram
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "features": {name: h.to_dict() for name, h in self.features.items()},
            "score": self.score.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReference:
        return cls(
            features={name: Histogram.from_dict(h) for name, h in d["features"].items()},
            score=Histogram.from_dict(d["score"]),
            rows=int(d["rows"]),
        )


def build_reference(
    X: np.ndarray,
    names: Sequence[str],
    scores: np.ndarray,
    bins: int = DEFAULT_BINS,
    max_rows: int = MAX_REFERENCE_ROWS,
    seed: int = 0,
) -> DriftReference:
    """Histograms of every column of ``X`` (named by ``names``) and of ``scores`` (row-aligned)."""
    n = len(X)
    if n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        X, scores = X[keep], np.asarray(scores)[keep]
    features = {name: histogram(X[:, j], bins) for j, name in enumerate(names)}
    return DriftReference(features, histogram(scores, bins), min(n, max_rows))
