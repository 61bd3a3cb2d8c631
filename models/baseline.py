"""The popularity ranker: what a worker serves before any model has been promoted.

It scores the same feature rows a promoted model scores (the worker's fold and ``extract``, the
same per-business state), so switching between it and a model is an ordinary hot swap, and it
exposes the same interface (``consumer.pipeline.process.Scorer``: ``score(X)``, ``version``,
``feature_set_version``; plus ``spec``, ``metadata`` and a no-op ``validate`` like
``models.registry.LoadedModel``).

Which columns. The trainer's popularity baseline (``models.dataset``) is a business's all-time
conversions so far, read from the state's lifetime ``totals``. The feature set carries them as
``count_<kind>_all`` (feature revision 2; ``count_<kind>_lifetime`` is accepted too): those columns
of the conversion kinds are the score, so the served baseline is exactly the trainer's. A feature set
without lifetime counts falls back to ``count_<kind>_<W>`` at the *longest* window ``W`` (28 days by
default): for a business younger than the window they equal the all-time count, and for an older
one they are its recent popularity. Columns are found by name in ``spec.names``, never by position, and a spec lacking them
is refused at construction.

Score and ties. ``score = P_W + sum_j 2^-(j+1) * P_j / (P_j + 1)`` where ``P_W`` is the summed
count of the conversion kinds in the chosen column(s) and ``P_j`` the same sum at each shorter
window, longest first. The tie-break term is below 1, so rows are ordered by ``P_W`` first (an
integer) and, among equal ``P_W``, by more recent conversions. It is a pure function of the row:
deterministic, no random state, identical on every worker and in every replay; rows that tie on
every count get exactly equal scores.

Version. ``popularity-<feature-set-version>`` for the default conversion kinds (the trainer's
default label), ``popularity-<feature-set-version>-<kinds>`` for others: stable across restarts
and workers, and never a registry version (those start with ``v<timestamp>``), so a promoted
model always differs from it and replaces it through the watcher.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from features.spec import FeatureSpec, window_label
from models.dataset import LabelConfig
from models.errors import ModelError

POPULARITY = "popularity"
DEFAULT_CONVERSION_KINDS: tuple[str, ...] = LabelConfig().kinds


class PopularityScorer:
    """Scores feature rows by past conversions of the business (see the module docstring)."""

    baseline = POPULARITY  # what the worker's metrics and logs call it; LoadedModel has no such attribute

    def __init__(self, spec: FeatureSpec, conversion_kinds: Iterable[str] = DEFAULT_CONVERSION_KINDS):
        kinds = tuple(conversion_kinds)
        try:
            LabelConfig(kinds=kinds)  # the trainer's check of the kinds, one error for both
        except ValueError as exc:
            raise ModelError(f"popularity baseline: {exc}") from exc
        self.spec = spec
        self.kinds = kinds
        self.feature_set_version = spec.version
        self.n_features = len(spec.names)
        self.primary, self.secondary = popularity_columns(spec, kinds)
        suffix = "" if kinds == DEFAULT_CONVERSION_KINDS else "-" + "+".join(k.lower() for k in kinds)
        self.version = f"{POPULARITY}-{spec.version}{suffix}"
        names = spec.names
        self.metadata: dict[str, Any] = {
            "kind": "baseline",
            "baseline": POPULARITY,
            "conversion_kinds": list(kinds),
            "columns": [names[i] for i in self.primary],
            "tie_break_columns": [[names[i] for i in cols] for cols in self.secondary],
            "feature_set": spec.to_dict(),
        }

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{self.version}: expected rows of {self.n_features} features, got shape {X.shape}")
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        out = _count(X, self.primary)
        weight = 0.5
        for cols in self.secondary:
            p = _count(X, cols)
            out += weight * (p / (p + 1.0))
            weight /= 2
        return out

    def validate(self) -> None:
        """Nothing to check: it has no trained parameters (``LoadedModel`` runs its sanity set here)."""

    def __repr__(self) -> str:
        return f"PopularityScorer(version={self.version!r}, columns={self.metadata['columns']!r})"


def popularity_columns(spec: FeatureSpec, kinds: Iterable[str]) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Indexes, in ``spec.names``, of the popularity columns and of the tie-break columns.

    Primary: the lifetime counts of every conversion kind if the spec has them all
    (``count_<kind>_lifetime``, or ``count_<kind>_all`` as ``features.extract`` names them), else
    ``count_<kind>_<longest window>``. Tie-breaks: the counts at each shorter window, longest first.
    """
    index = {n: i for i, n in enumerate(spec.names)}
    labels = [window_label(w) for w in reversed(spec.windows_ms)]  # longest first
    lows = [k.lower() for k in kinds]

    def columns(label: str) -> tuple[int, ...] | None:
        found = [index.get(f"count_{k}_{label}") for k in lows]
        return None if any(i is None for i in found) else tuple(i for i in found if i is not None)

    lifetime = columns("lifetime") or columns("all")
    windowed = [c for c in (columns(lab) for lab in labels) if c is not None]
    if lifetime is not None:
        return lifetime, windowed
    if not windowed:
        raise ModelError(f"popularity baseline: feature set {spec.version} has no count columns for {list(kinds)}")
    return windowed[0], windowed[1:]


def _count(X: np.ndarray, cols: tuple[int, ...]) -> np.ndarray:
    """Summed counts of ``cols``, float64; a missing value (NaN) counts as none."""
    return np.nan_to_num(X[:, list(cols)].astype(np.float64), nan=0.0).sum(axis=1)


# ------------------------------------------------------------------------------ base margin
POPULARITY_MARGIN = "log1p_popularity"


class PopularityMargin:
    """A model's base margin: ``weight * log1p(popularity score of the row)``.

    The popularity score is :class:`PopularityScorer`'s (the same columns, found by name), so the
    margin is a pure function of the feature row: the trainer adds it to every example's margin
    (XGBoost ``base_margin``) and :class:`~models.registry.LoadedModel` adds it to every score, from
    the record in the model's metadata (``model.base_margin``, :meth:`to_dict`). A model with zero
    trees ranks exactly as popularity does; each tree corrects it.
    """

    def __init__(
        self, spec: FeatureSpec, conversion_kinds: Iterable[str] = DEFAULT_CONVERSION_KINDS, weight: float = 1.0
    ):
        self.scorer = PopularityScorer(spec, conversion_kinds)
        self.weight = float(weight)

    def values(self, X: np.ndarray) -> np.ndarray:
        return self.weight * np.log1p(self.scorer.score(X))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": POPULARITY_MARGIN,
            "weight": self.weight,
            "conversion_kinds": list(self.scorer.kinds),
            "columns": self.scorer.metadata["columns"],
            "tie_break_columns": self.scorer.metadata["tie_break_columns"],
        }

    @classmethod
    def from_dict(cls, record: Any, spec: FeatureSpec) -> PopularityMargin:
        """Rebuild the recorded margin for ``spec``; :class:`ModelError` if the record is unknown or
        its columns are not the ones this spec's rule picks (it would score differently)."""
        if not isinstance(record, dict) or record.get("kind") != POPULARITY_MARGIN:
            raise ModelError(f"unknown base margin record: {record!r}")
        try:
            margin = cls(spec, tuple(record["conversion_kinds"]), float(record["weight"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"unreadable base margin record: {exc}") from exc
        d = margin.to_dict()
        if d["columns"] != record.get("columns") or d["tie_break_columns"] != record.get("tie_break_columns"):
            raise ModelError(f"base margin columns {record.get('columns')} are not this feature set's {d['columns']}")
        return margin
