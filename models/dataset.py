"""Training examples from the event log: features at each scoring moment, labels from the future.

Input: an iterable of records with ``rank`` (0 business, 1 activity), ``partition``, ``offset`` and
``event`` (``None``: a tombstone on the compacted business topic) - ``consumer.io.inputlog.LogRecord``
or any look-alike. A tombstone names its business through an optional ``key`` attribute (str or
bytes, the Kafka key); a tombstone without one cannot be attributed and is counted and skipped.

The build, in three passes over memory (``_read``, ``_fold``, ``_label``, driven by
:func:`build_training_set`):

1. **Read.** Group records by partition and topic (sorted by offset if they arrived out of order),
   note the data's end (largest activity event time), and collect every conversion
   (``LabelConfig.kinds``) once per ``event_id`` for the labels.
2. **Fold** each partition in the deterministic merge order the live worker uses
   (``features.order.merge_finished`` on ``(rank, event_time, offset)``), from the log's start:
   the state a worker scores with holds the business's whole history (lifetime counts, age,
   lifecycle). ``start_ms`` only chooses which moments become examples (``as_of >= start_ms``).
   :func:`scoring_moments` applies the scoring-moment rule shared with
   the worker (``features.scoring.apply``; tombstones forget the business, as in the worker); each moment
   is sampled deterministically (a seeded hash of ``event_id``, no random state; the rate adapts
   to the log's size when not given, :func:`auto_sample_rate`) and its features
   written with ``extract_into`` straight into a growing float32 matrix.
3. **Label.** For an example of business b at ``as_of``: the number of distinct conversions of b
   with event time in ``(as_of, as_of + H]`` (per-business sorted times + ``searchsorted``,
   vectorised). Examples whose horizon ends after the data's end minus the allowed lateness are
   dropped (label incomplete: a late conversion could still change it).

Features never see data after ``as_of``: ``as_of`` is the business state's clock (the largest
accepted activity time), and the state holds only events folded so far, all at or before it.
Labels are strictly after ``as_of``. The popularity baseline per example is the business's
all-time conversions up to the moment, as accepted by the state.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from features.events import ACTIVITY_KINDS, ActivityEvent, BusinessEvent
from features.extract import extract_into, group_key
from features.order import ACTIVITY_RANK, BUSINESS_RANK, merge_finished
from features.scoring import SCORED, apply
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState

log = logging.getLogger("streamrank.models.dataset")

DAY_MS = 86_400_000
_INITIAL_ROWS = 4096
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
    records: int = 0
    business_records: int = 0
    activity_records: int = 0
    tombstones: int = 0
    unkeyed_tombstones: int = 0
    prefix_business_records: int = 0  # business records before start_ms (folded, no examples)
    activity_before_start: int = 0  # activity before start_ms (folded, no examples)
    conversions: int = 0  # distinct conversion events in the log
    scoring_moments: int = 0
    sample_rate: float = 1.0  # the share of scoring moments kept (chosen when the caller passed None)
    active_businesses: int = 0  # distinct businesses with activity in the log
    sampled: int = 0
    dropped_incomplete: int = 0  # sampled moments whose label horizon ends after the data
    examples: int = 0
    data_min_ms: int | None = None  # smallest activity event time
    data_end_ms: int | None = None  # largest activity event time (or end_ms): labels end here
    offsets: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # topic -> partition -> [min, max + 1]
    seconds_read: float = 0.0
    seconds_fold: float = 0.0
    seconds_label: float = 0.0

    @property
    def seconds(self) -> float:
        return self.seconds_read + self.seconds_fold + self.seconds_label

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = self.seconds
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


def build_training_set(
    records: Iterable[Any],
    spec: FeatureSpec = DEFAULT_SPEC,
    label_cfg: LabelConfig = LabelConfig(),
    sample_rate: float | None = 1.0,
    seed: int = 0,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> TrainingSet:
    """Fold the log and return the labelled examples (see the module doc).

    ``sample_rate``: the share of scoring moments kept; ``None`` chooses it from the log's size
    (:func:`auto_sample_rate` of its activity records), recorded in ``stats.sample_rate``.
    ``start_ms``: the first ``as_of`` that makes an example (default: all); everything before it is
    folded all the same, so the features are the worker's. ``end_ms``: the data's end for label completeness (default: the largest
    activity event time in the log). The throughput includes consuming ``records``.
    """
    if sample_rate is not None:
        _sample_threshold(sample_rate)  # validate before reading
    stats = BuildStats()
    read = _read(records, frozenset(label_cfg.kinds), end_ms, stats)
    rate = auto_sample_rate(stats.activity_records) if sample_rate is None else float(sample_rate)
    stats.sample_rate = rate
    threshold = _sample_threshold(rate)
    examples = _fold(read, spec, label_cfg, threshold, _seed_crc(seed), start_ms, stats)
    ts = _label(examples, read, spec, label_cfg, stats)
    log.info(
        "training set built",
        extra={"build": {k: v for k, v in stats.to_dict().items() if not isinstance(v, float) or math.isfinite(v)}},
    )
    return ts


@dataclass
class _Read:
    """Pass 1's result: the records by partition, and the conversions the labels count."""

    parts: dict[int, tuple[list, list]]  # partition -> (business [(offset, event, record)], activity merge items)
    unsorted: set[tuple[int, int]]  # (partition, rank) whose offsets arrived out of order
    conv_biz: list[str]
    conv_time: list[int]
    data_end: int | None  # labels end here: end_ms, else the largest activity event time


@dataclass
class _Examples:
    """Pass 2's result: one feature row per example, and what the labels and groups need of it."""

    X: np.ndarray
    rows: int = 0
    business: list[str] = field(default_factory=list)
    group_key: list[str] = field(default_factory=list)
    as_of: list[int] = field(default_factory=list)
    popularity: list[int] = field(default_factory=list)


def _read(records: Iterable[Any], conv_kinds: frozenset[str], end_ms: int | None, stats: BuildStats) -> _Read:
    """Pass 1: group the records by partition and topic, note offsets, data span and conversions."""
    t0 = time.perf_counter()
    parts: dict[int, tuple[list, list]] = {}
    unsorted: set[tuple[int, int]] = set()
    spans: dict[tuple[int, int], list[int]] = {}  # (partition, rank) -> [min offset, max offset + 1]
    conv_seen: set[str] = set()
    conv_biz: list[str] = []
    conv_time: list[int] = []
    active: set[str] = set()
    n_records = n_act = n_tomb = 0
    t_min = t_max = None
    for r in records:
        n_records += 1
        rank, p, off, ev = r.rank, r.partition, r.offset, r.event
        if ev is None and rank != BUSINESS_RANK:
            raise ValueError(f"activity record without an event at partition {p} offset {off}")
        lists = parts.get(p)
        if lists is None:
            lists = parts[p] = ([], [])
        if rank == ACTIVITY_RANK:
            lists[1].append((ACTIVITY_RANK, ev.event_time, off, ev))  # merge_finished's input format
        else:
            lists[0].append((off, ev, r))
        sp = spans.get((p, rank))
        if sp is None:
            spans[(p, rank)] = [off, off + 1]
        else:
            if off < sp[1]:
                unsorted.add((p, rank))
                sp[0] = min(sp[0], off)
            else:
                sp[1] = off + 1
        if rank == ACTIVITY_RANK:
            n_act += 1
            active.add(ev.business_id)
            et = ev.event_time
            if t_max is None or et > t_max:
                t_max = et
            if t_min is None or et < t_min:
                t_min = et
            if ev.kind in conv_kinds and ev.event_id not in conv_seen:
                conv_seen.add(ev.event_id)
                conv_biz.append(ev.business_id)
                conv_time.append(et)
        elif ev is None:
            n_tomb += 1
    del conv_seen
    stats.records = n_records
    stats.activity_records = n_act
    stats.business_records = n_records - n_act
    stats.tombstones = n_tomb
    stats.conversions = len(conv_time)
    stats.active_businesses = len(active)
    stats.offsets = {
        name: {p: list(spans[(p, rank)]) for p in sorted(parts) if (p, rank) in spans}
        for rank, name in ((BUSINESS_RANK, "business"), (ACTIVITY_RANK, "activity"))
    }
    stats.data_min_ms = t_min
    data_end = int(end_ms) if end_ms is not None else t_max
    stats.data_end_ms = data_end
    stats.seconds_read = time.perf_counter() - t0
    return _Read(parts, unsorted, conv_biz, conv_time, data_end)


def _fold(
    read: _Read,
    spec: FeatureSpec,
    label_cfg: LabelConfig,
    threshold: int,
    seed_crc: int,
    start_ms: int | None,
    stats: BuildStats,
) -> _Examples:
    """Pass 2: fold each partition in merge order; write the sampled scoring moments' features."""
    t1 = time.perf_counter()
    crc32 = zlib.crc32
    n_feat = len(spec.names)
    ex = _Examples(np.empty((_INITIAL_ROWS, n_feat), dtype=np.float32))
    X = ex.X
    rows = 0
    ex_biz, ex_gkey, ex_asof, ex_pop = ex.business, ex.group_key, ex.as_of, ex.popularity
    conv_idx = [spec.layout.kind_index[k] for k in label_cfg.kinds]
    n_moments = n_sampled = n_incomplete = 0
    # A label is final only when no conversion in its horizon can still arrive: activity may come
    # up to the allowed lateness behind the newest event time, so the horizon must end that much
    # before the data's end. Otherwise a label emitted as 0 could later be 1.
    data_end = read.data_end
    last_ok = (data_end - int(label_cfg.horizon_ms) - spec.allowed_lateness_ms) if data_end is not None else None

    parts = read.parts
    for p in sorted(parts):
        merged = merge_finished(_partition_items(p, parts[p], read.unsorted, start_ms, stats))
        for ev, st in scoring_moments(merged, spec, {}):
            n_moments += 1
            if threshold < 2**32 and (crc32(ev.event_id.encode(), seed_crc) * _GOLD) & 0xFFFFFFFF >= threshold:
                continue  # == not sampled(ev.event_id, sample_rate, seed), inlined
            as_of = st.max_event_ms  # features.scoring.as_of(st), inlined
            if start_ms is not None and as_of < start_ms:
                continue  # before the examples' start: its state still counts, as in the worker
            n_sampled += 1
            if last_ok is None or as_of > last_ok:
                n_incomplete += 1
                continue
            if rows == X.shape[0]:
                grown = np.empty((rows * 2, n_feat), dtype=np.float32)
                grown[:rows] = X
                X = grown
            extract_into(st, as_of, X[rows], spec)
            rows += 1
            bid = st.business_id
            ex_biz.append(bid)
            ex_gkey.append(group_key(st))
            ex_asof.append(as_of)
            totals = st.totals
            ex_pop.append(sum(totals[i] for i in conv_idx))
        del parts[p]  # free the partition's records as we go
    ex.X, ex.rows = X, rows
    stats.scoring_moments = n_moments
    stats.sampled = n_sampled
    stats.dropped_incomplete = n_incomplete
    stats.seconds_fold = time.perf_counter() - t1
    if stats.unkeyed_tombstones:
        log.warning("%d tombstones carry no key and were skipped", stats.unkeyed_tombstones)
    return ex


def _partition_items(
    p: int, lists: tuple[list, list], unsorted: set[tuple[int, int]], start_ms: int | None, stats: BuildStats
) -> Iterator[tuple[int, int, int, Any]]:
    """One partition's records as ``merge_finished`` input: ``(rank, event time, offset, event or Tombstone)``."""
    biz_list, act_list = lists
    if (p, BUSINESS_RANK) in unsorted:
        biz_list.sort(key=lambda x: x[0])
    if (p, ACTIVITY_RANK) in unsorted:
        act_list.sort(key=lambda x: x[2])
    # Business stream: tombstones take the time of the record before them, so they stay in
    # place in the merge and fall into the prefix exactly when that record does. Records from
    # the log reader carry that time (``time``, from the worker's order step): it is used, so
    # the trainer cannot queue a tombstone elsewhere than the worker; hand-built ones get it here.
    items: list[tuple[int, int, int, Any]] = []
    prev_t = 0
    for off, ev, r in biz_list:
        if ev is None:
            bid = record_key(r)
            if bid is None:
                stats.unkeyed_tombstones += 1
                continue
            t = getattr(r, "time", None)
            et, item = (prev_t if t is None else t), Tombstone(bid)
        else:
            et = prev_t = ev.event_time
            item = ev
        if start_ms is not None and et < start_ms:
            stats.prefix_business_records += 1  # folded like every record (the worker has them), no example from it
        items.append((BUSINESS_RANK, et, off, item))
    if start_ms is not None:
        stats.activity_before_start += sum(1 for item in act_list if item[1] < start_ms)
    return _interleave_for_merge(items, act_list)


def _label(ex: _Examples, read: _Read, spec: FeatureSpec, label_cfg: LabelConfig, stats: BuildStats) -> TrainingSet:
    """Pass 3: count each example's conversions within the horizon; number groups and businesses."""
    t2 = time.perf_counter()
    rows = ex.rows
    X = ex.X[:rows].copy() if rows != ex.X.shape[0] else ex.X
    as_of_arr = np.asarray(ex.as_of, dtype=np.int64)
    conv_biz = read.conv_biz
    business_table = sorted(set(ex.business) | set(conv_biz))
    code = {b: i for i, b in enumerate(business_table)}
    ex_code = np.fromiter((code[b] for b in ex.business), dtype=np.int64, count=rows)
    cv_code = np.fromiter((code[b] for b in conv_biz), dtype=np.int64, count=len(conv_biz))
    y = conversion_counts(
        ex_code, as_of_arr, cv_code, np.asarray(read.conv_time, dtype=np.int64), int(label_cfg.horizon_ms)
    )
    day = as_of_arr // DAY_MS
    gids: dict[tuple[str, int], int] = {}
    groups = np.fromiter(
        (gids.setdefault((g, d), len(gids)) for g, d in zip(ex.group_key, day.tolist(), strict=True)),
        dtype=np.int64,
        count=rows,
    )
    group_table = list(gids)
    stats.examples = rows
    stats.seconds_label = time.perf_counter() - t2
    return TrainingSet(
        X=X,
        y=y.astype(np.float32),
        groups=groups,
        business=ex_code,
        as_of=as_of_arr,
        popularity=np.asarray(ex.popularity, dtype=np.float64),
        group_table=group_table,
        business_table=business_table,
        feature_names=tuple(spec.names),
        feature_set_version=spec.version,
        label_cfg=label_cfg,
        stats=stats,
    )


def _interleave_for_merge(biz: list, act: list) -> Iterator[tuple[int, int, int, Any]]:
    # merge_finished pushes into per-rank FIFOs; the relative order of the two lists is irrelevant.
    yield from biz
    yield from act


def conversion_counts(
    ex_business: np.ndarray, ex_as_of: np.ndarray, conv_business: np.ndarray, conv_time: np.ndarray, horizon_ms: int
) -> np.ndarray:
    """For each example: conversions of its business with time in ``(as_of, as_of + horizon]``.

    Vectorised: conversions sorted by (business, time) into one int64 key ``business * span + t``,
    then two ``searchsorted`` calls. Inputs: dense business codes and ms times.
    """
    n = len(ex_business)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if len(conv_time) == 0:
        return np.zeros(n, dtype=np.int64)
    lo_t = int(min(conv_time.min(), ex_as_of.min()))
    hi_t = int(max(conv_time.max(), ex_as_of.max() + horizon_ms))
    span = hi_t - lo_t + 2
    n_codes = int(max(conv_business.max(), ex_business.max())) + 1
    if n_codes * span >= 2**62:  # would overflow the combined key: fall back to a per-business loop
        return _conversion_counts_loop(ex_business, ex_as_of, conv_business, conv_time, horizon_ms)
    ck = np.sort(conv_business * span + (conv_time - lo_t))
    base = ex_business * span - lo_t
    lo = np.searchsorted(ck, base + ex_as_of, side="right")
    hi = np.searchsorted(ck, base + ex_as_of + horizon_ms, side="right")
    return hi - lo


def _conversion_counts_loop(ex_business, ex_as_of, conv_business, conv_time, horizon_ms) -> np.ndarray:
    out = np.zeros(len(ex_business), dtype=np.int64)
    order = np.lexsort((conv_time, conv_business))
    cb, ct = conv_business[order], conv_time[order]
    starts = np.searchsorted(cb, np.arange(int(cb.max()) + 2))
    for b in np.unique(ex_business):
        sel = ex_business == b
        if b > cb.max():
            continue
        times = ct[starts[b] : starts[b + 1]]
        a = ex_as_of[sel]
        out[sel] = np.searchsorted(times, a + horizon_ms, "right") - np.searchsorted(times, a, "right")
    return out
