"""Training examples: what one is, the rules that make it, and the types that carry it.

An example is a business's features at a scoring moment (or a snapshot time), labelled with its
conversions after it. This module holds the definitions every builder shares; the build itself is
``models.streambuild`` (one partition at a time, as the log is read) and ``models.rowsets`` turns
its rows into a :class:`TrainingSet` (``models.rowsets.build_training_set`` for records in memory).

* :class:`LabelConfig` - what counts as a conversion (``kinds``) and how far ahead the label looks
  (``horizon_ms``): the label of an example at ``as_of`` is the number of distinct conversions of
  its business with event time in ``(as_of, as_of + H]``; an example whose horizon ends after the
  data's end minus the allowed lateness is incomplete (a late conversion could still change it).
* :func:`scoring_moments` - the scoring-moment rule shared with the worker
  (``features.scoring.apply``; a :class:`Tombstone` forgets the business, as in the worker).
* Sampling - deterministic, by a seeded hash of ``event_id`` (:func:`sampled`); the rate adapts to
  the log's size when not given (:func:`auto_sample_rate`).
* :class:`BuildStats`, :class:`TrainingSet` - what a build saw, and the examples as arrays.

Input records: ``rank`` (0 business, 1 activity), ``partition``, ``offset`` and ``event`` (``None``:
a tombstone on the compacted business topic) - ``consumer.io.inputlog.LogRecord`` or any look-alike.
A tombstone names its business through an optional ``key`` attribute (:func:`record_key`); one
without a key cannot be attributed and is counted and skipped.

Features never see data after ``as_of``: ``as_of`` is the business state's clock (the largest
accepted activity time), and the state holds only events folded so far, all at or before it.
Labels are strictly after ``as_of``. The popularity baseline per example is the business's
all-time conversions up to the moment, as accepted by the state.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from features.events import ACTIVITY_KINDS, ActivityEvent, BusinessEvent
from features.scoring import SCORED, apply
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState

log = logging.getLogger("streamrank.models.dataset")

DAY_MS = 86_400_000
# Automatic sampling (``sample_rate=None``): keep every scoring moment of a log with up to this
# many activity records, else the share that keeps about this many (see :func:`auto_sample_rate`).
EVENT_EXAMPLE_BUDGET = 100_000


@dataclass(frozen=True)
class LabelConfig:
    """What counts as a conversion, and how far ahead the label looks."""

    kinds: tuple[str, ...] = ("BIZSITE_VISIT", "CALL", "DIRECTIONS")
    horizon_ms: int = DAY_MS

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        bad = [k for k in self.kinds if k not in ACTIVITY_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"label kinds must be non-empty activity kinds, got {self.kinds}")
        if int(self.horizon_ms) <= 0:
            raise ValueError("horizon_ms must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "horizon_ms": int(self.horizon_ms)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelConfig:
        return cls(kinds=tuple(d["kinds"]), horizon_ms=int(d["horizon_ms"]))


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deletion on the business topic, carried through the merge in place of an event."""

    business_id: str | None


# ------------------------------------------------------------------------ compacted table
def record_key(record: Any) -> str | None:
    """The business id a record is about: its event's, else its ``key`` attribute (tombstones)."""
    ev = record.event
    if ev is not None:
        return ev.business_id
    key = getattr(record, "key", None)
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "replace")
    return key


# ----------------------------------------------------------------------- the scoring rule
def scoring_moments(
    events: Iterable[BusinessEvent | ActivityEvent | Tombstone],
    spec: FeatureSpec = DEFAULT_SPEC,
    states: dict[str, BusinessState] | None = None,
) -> Iterator[tuple[ActivityEvent, BusinessState]]:
    """Fold ``events`` (already in merge order) into ``states``; yield each scoring moment.

    The rule itself is ``features.scoring.apply`` (shared with the worker's ``consumer.pipeline.process``):
    an activity event that the state accepted (not a duplicate, not late) and after which its
    business is scorable (known, not closed) is a scoring moment, as of
    ``features.scoring.as_of(state)`` (the business's activity clock). The yielded state is live
    and mutated by the next events: read it before advancing the iterator.

    A :class:`Tombstone` forgets the business's state, as the worker does (``BUSINESS_DELETED``).
    """
    if states is None:
        states = {}
    get = states.get
    for ev in events:
        if type(ev) is Tombstone:
            if ev.business_id is not None:
                states.pop(ev.business_id, None)
            continue
        # ``type(ev) is`` on the hot path; mypy cannot narrow on it: ev is an event here.
        bid: str = ev.business_id  # type: ignore[assignment]
        st, outcome = apply(get(bid), ev, spec)  # type: ignore[arg-type]
        states[bid] = st
        if outcome is SCORED:
            yield ev, st  # type: ignore[misc]  # SCORED only for activity events


# --------------------------------------------------------------------------- training set
@dataclass
class BuildStats:
    """What a build read and made. ``records`` and ``business_records``: this run's (an incremental
    run reads only the new log); the rest describes the whole log built so far."""

    records: int = 0
    business_records: int = 0
    activity_records: int = 0
    tombstones: int = 0
    unkeyed_tombstones: int = 0
    conversions: int = 0  # conversion events (re-deliveries within the label memory counted once)
    scoring_moments: int = 0
    sample_rate: float = 1.0  # the share of scoring moments kept (chosen when the caller passed None)
    active_businesses: int = 0  # distinct businesses with activity in the log
    sampled: int = 0
    dropped_incomplete: int = 0  # sampled moments whose label horizon ends after the data
    examples: int = 0
    data_min_ms: int | None = None  # smallest activity event time
    data_end_ms: int | None = None  # largest activity event time (or end_ms): labels end here
    offsets: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # topic -> partition -> [min, max + 1]
    seconds: float = 0.0  # reading, folding, labelling and writing the rows

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events_per_s"] = self.events_per_s
        return d


@dataclass
class TrainingSet:
    """Examples in build order (partition by partition, merge order within one).

    ``groups`` are dense ids into ``group_table`` (``(city, state|category, UTC day of as_of)``);
    ``business`` dense ids into ``business_table``; ``y`` the next-horizon conversion count;
    ``popularity`` the baseline score (all-time conversions up to the moment).
    """

    X: np.ndarray  # float32 [n, n_features]
    y: np.ndarray  # float32 [n]
    groups: np.ndarray  # int64 [n]
    business: np.ndarray  # int64 [n]
    as_of: np.ndarray  # int64 [n]
    popularity: np.ndarray  # float64 [n]
    group_table: list[tuple[str, int]]
    business_table: list[str]
    feature_names: tuple[str, ...]
    feature_set_version: str
    label_cfg: LabelConfig
    stats: BuildStats = field(default_factory=BuildStats)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def business_ids(self) -> np.ndarray:
        return np.asarray(self.business_table, dtype=object)[self.business]

    @property
    def group_days(self) -> np.ndarray:
        days = np.array([d for _, d in self.group_table], dtype=np.int64)
        return days[self.groups] if len(self.group_table) else np.zeros(0, dtype=np.int64)

    def take(self, idx: np.ndarray) -> TrainingSet:
        """A subset (tables shared, so group and business ids stay comparable)."""
        idx = np.asarray(idx)
        return TrainingSet(
            X=self.X[idx],
            y=self.y[idx],
            groups=self.groups[idx],
            business=self.business[idx],
            as_of=self.as_of[idx],
            popularity=self.popularity[idx],
            group_table=self.group_table,
            business_table=self.business_table,
            feature_names=self.feature_names,
            feature_set_version=self.feature_set_version,
            label_cfg=self.label_cfg,
            stats=self.stats,
        )


_GOLD = 0x9E3779B1


def _sample_threshold(sample_rate: float) -> int:
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return min(int(sample_rate * 2**32), 2**32)


def _seed_crc(seed: int) -> int:
    return zlib.crc32(f"streamrank-sample-{seed}".encode())


def sampled(event_id: str, sample_rate: float, seed: int = 0) -> bool:
    """Deterministic Bernoulli(sample_rate) of (seed, event_id): the same answer in every process.

    CRC-32 of the id (seeded), spread by Fibonacci hashing: cheap, stable, uniform enough for
    sampling (not a cryptographic hash; Python's ``hash()`` is salted per process, so never that).
    """
    if sample_rate >= 1.0:
        return True
    h = (zlib.crc32(event_id.encode(), _seed_crc(seed)) * _GOLD) & 0xFFFFFFFF
    return h < _sample_threshold(sample_rate)


def auto_sample_rate(activity_records: int, budget: int = EVENT_EXAMPLE_BUDGET) -> float:
    """The sample rate for a log of ``activity_records`` activity records: 1 (keep every scoring
    moment) up to ``budget`` records, else ``budget / activity_records`` (about ``budget`` sampled
    moments, bounding the build's memory and the fit's time). A small log - a 24k-event Yelp
    city - is never thinned; a 700k-event one keeps ~14 %."""
    if budget < 1:
        raise ValueError("budget must be >= 1")
    if activity_records <= budget:
        return 1.0
    return budget / activity_records
