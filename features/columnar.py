"""Columnar per-partition state and the batch fold/extract hot path.

A :class:`ColumnarTable` holds the :class:`~features.state.BusinessState` of many businesses as
arrays, one row per business (``table.row(business_id)``): the scalars in one int64 matrix, each
ring, sum, slot and decay list as a 2-d array, and the dedup memory of all rows in one hash table.
Activity events are folded in batches by compiled kernels (:mod:`features.columnar_kernels`) that
transcribe ``features.state`` and ``features.extract`` operation for operation, so the table holds
exactly the states the Python fold would, and the feature rows are the same float32 bits:

* :func:`activity_batch` turns activity events into arrays (row, kind, time, user slot, event-id
  key, rating) in arrival order;
* :func:`fold_batch` applies them in that order, returns each event's outcome (an index into
  ``features.scoring.OUTCOMES``) and its business's clock after it (:class:`Folded`), and writes the feature row of every scoring moment into a
  caller's matrix, as of the business's clock right after that event (``scoring.as_of``);
* :func:`fold_events` does both for a mixed stream; business events (rare) take the Python path,
  :func:`fold_business`, which runs ``features.state.update`` on the row's profile fields;
* :func:`extract_rows` is ``extract_into`` for any rows as of any times;
* :func:`to_state` / :func:`from_state` convert a row to and from a ``BusinessState``, so the
  changelog encoding (``state.to_bytes``) and its version are unchanged.

Why numba: the fold is a sequential, branchy walk per event (clock, lateness, dedup, ring slides)
that numpy cannot vectorise across a batch without changing its semantics; numba compiles the same
loop (manylinux wheels, no compiler needed at install; compiled code cached under ``__pycache__``).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from features import columnar_kernels as ck
from features.errors import FeatureError, InvalidEvent
from features.events import ActivityEvent, BusinessEvent
from features.scoring import OUTCOMES
from features.spec import DECAY_EPOCH, DEFAULT_SPEC, FeatureSpec
from features.state import (
    _LIFECYCLE,
    _LIFECYCLE_CODE,
    SLOT_PERIOD,
    BusinessState,
    _slot_base,
    event_key,
    update,
    user_slot,
)

assert OUTCOMES.index("scored") == ck.SCORED and OUTCOMES.index("late") == ck.LATE
assert OUTCOMES.index("duplicate") == ck.DUPLICATE and OUTCOMES.index("not_scorable") == ck.NOT_SCORABLE
assert OUTCOMES.index("business_update") == ck.BUSINESS_UPDATE and _LIFECYCLE_CODE["CLOSED"] == ck.CLOSED

_MIN_ENTRIES = 1024


class ActivityBatch(NamedTuple):
    """Activity events as arrays, in arrival order. ``slots``: -1 for no (or an empty) user id;
    ``ratings``: 0 unless a rated REVIEW."""

    rows: np.ndarray  # int64
    kinds: np.ndarray  # int64, index in ACTIVITY_KINDS
    times: np.ndarray  # int64
    slots: np.ndarray  # int64
    keys: np.ndarray  # uint64, features.state.event_key
    ratings: np.ndarray  # int64


class Folded(NamedTuple):
    """What a fold returns: per event its outcome code (int8, index into ``scoring.OUTCOMES``) and
    its business's clock right after it (int64: ``scoring.as_of`` of a SCORED event), and ``n``, the
    feature rows now written into ``out`` (those of the SCORED events, in order, from ``start``)."""

    outcomes: np.ndarray
    clocks: np.ndarray
    n: int


class ColumnarTable:
    """The states of one partition's businesses, one row each (see the module doc)."""

    def __init__(self, spec: FeatureSpec = DEFAULT_SPEC, capacity: int = 256):
        self.spec = spec
        self.layout = lay = spec.layout
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        # the profile strings: read by to_state and group keys only, never by the kernels
        self.city: list[str] = []
        self.state_code: list[str] = []
        self.category: list[str] = []
        self.G = _geometry(spec)
        self._shapes = (
            (ck.N_INTS, np.int64),
            (2, np.uint64),  # profile_tie, lifecycle_tie
            (lay.n_kinds, np.int64),  # last_ms
            (lay.n_kinds, np.int64),  # first_ms
            (lay.n_kinds, np.int64),  # totals
            (lay.Rf * lay.K, np.int64),
            (lay.Rf, np.int64),
            (lay.n_fine * lay.K, np.int64),
            (lay.Rc * lay.K, np.int64),
            (lay.Rc, np.int64),
            (lay.n_coarse * lay.K, np.int64),
            (lay.slots, np.uint16),
            (lay.n_kinds * len(lay.decay_f), np.float64),
        )
        self.S = tuple(np.zeros((max(capacity, 1), w), dt) for w, dt in self._shapes)
        self.D = _dedup_arrays(_MIN_ENTRIES)

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, business_id: str) -> int:
        """The row of ``business_id``, a new empty state's row the first time."""
        r = self.rows.get(business_id)
        if r is None:
            r = self.rows[business_id] = len(self.ids)
            if r == self.S[0].shape[0]:
                self._grow(2 * r)
            self.ids.append(business_id)
            self.city.append("")
            self.state_code.append("")
            self.category.append("")
            _clear(self.S, r)
        return r

    def _grow(self, capacity: int) -> None:
        old = self.S
        self.S = tuple(np.zeros((capacity, w), dt) for w, dt in self._shapes)
        for a, b in zip(self.S, old, strict=True):
            a[: b.shape[0]] = b

    def reserve_entries(self, n: int) -> None:
        """Room for ``n`` more dedup entries: when full, copy the live ones into arrays with room
        for twice (live + n), so compaction is amortised and the index stays at most half full."""
        used = int(self.D[5][0])
        if used + n <= self.D[1].shape[0]:
            return
        live = ck.count_live(self.S[0], self.D)
        size = _MIN_ENTRIES
        while size < 2 * (live + n):
            size *= 2
        new = _dedup_arrays(size)
        new[5][0] = ck.compact(self.S[0], self.D, *new[:5])
        self.D = new


def _dedup_arrays(entries: int) -> tuple:
    """(index, erow, ebf, ekey, enext, meta): see ``columnar_kernels``; entries of size ``entries``."""
    index = np.full(2 * entries, -1, np.int64)
    erow = np.full(entries, -1, np.int64)
    ebf, ekey, enext = np.zeros(entries, np.int64), np.zeros(entries, np.uint64), np.zeros(entries, np.int64)
    return index, erow, ebf, ekey, enext, np.zeros(1, np.int64)


def _clear(S: tuple, r: int) -> None:
    """Row ``r`` := the empty state (``BusinessState.__init__``)."""
    for a in S:
        a[r] = 0
    ints = S[0][r]
    ints[ck.C_SBASE] = _slot_base(0)
    ints[ck.C_CITYB] = ints[ck.C_CATB] = ints[ck.C_DHEAD] = -1


def _geometry(spec: FeatureSpec) -> tuple:
    lay = spec.layout
    geo = np.zeros(ck.N_GEO, np.int64)
    for i, v in (
        (ck.G_GF, lay.gf),
        (ck.G_GC, lay.gc),
        (ck.G_RATIO, lay.ratio),
        (ck.G_LATENESS, lay.lateness),
        (ck.G_RF, lay.Rf),
        (ck.G_RC, lay.Rc),
        (ck.G_K, lay.K),
        (ck.G_U, lay.U),
        (ck.G_NK, lay.n_kinds),
        (ck.G_NH, len(lay.decay_f)),
        (ck.G_PV, lay.PV),
        (ck.G_BIZ, lay.BIZ),
        (ck.G_CALL, lay.CALL),
        (ck.G_REVIEW, lay.REVIEW),
        (ck.G_SLOT_PERIOD, SLOT_PERIOD),
        (ck.G_EPOCH, DECAY_EPOCH),
    ):
        geo[i] = v
    nh = len(lay.decay_f)
    return (
        geo,
        np.array(lay.fine_windows, np.int64).reshape(-1, 2),
        np.array(lay.coarse_windows, np.int64).reshape(-1, 2),
        np.array(lay.lc_table, np.float64),
        np.array(lay.decay_f, np.float64),
        np.array(lay.decay_step, np.float64),
        np.array(lay.decay_pow, np.float64).reshape(nh, DECAY_EPOCH + 1),
        np.array([lay.prior_a, lay.prior_ab], np.float64),
    )


# -- events in --------------------------------------------------------------------------------------


def activity_batch(table: ColumnarTable, events: Sequence[ActivityEvent]) -> ActivityBatch:
    """Arrays of ``events`` (activity only), rows created for new businesses."""
    lay, spec = table.layout, table.spec
    kind_index, review = lay.kind_index, lay.REVIEW
    try:
        kinds = [kind_index[ev.kind] for ev in events]
    except KeyError:
        bad = next(ev for ev in events if ev.kind not in kind_index)
        raise InvalidEvent(f"activity event {bad.event_id}: unknown kind {bad.kind!r}") from None
    # per-column comprehensions, then one array each: far cheaper than numpy item assignment
    return ActivityBatch(
        np.array([table.row(ev.business_id) for ev in events], np.int64),
        np.array(kinds, np.int64),
        np.array([ev.event_time for ev in events], np.int64),
        np.array([user_slot(ev.user_id, spec) if ev.user_id else -1 for ev in events], np.int64),
        np.array([event_key(ev.event_id) for ev in events], np.uint64),
        np.array([ev.rating or 0 if k == review else 0 for ev, k in zip(events, kinds, strict=True)], np.int64),
    )


def fold_batch(table: ColumnarTable, batch: ActivityBatch, out: np.ndarray | None = None, start: int = 0) -> Folded:
    """Fold ``batch`` in order (see :class:`Folded`), writing the rows of its scoring moments into
    ``out[start:]``. ``out``: float32 ``(rows, n_features)`` with room for every event of the
    batch; None to fold only."""
    n_ev = len(batch.rows)
    if out is None:
        out = np.empty((0, table.layout.n_features), np.float32)
    elif out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != table.layout.n_features:
        raise ValueError(f"out must be float32 (rows, {table.layout.n_features}), got {out.dtype} {out.shape}")
    elif out.shape[0] < start + n_ev:
        raise ValueError(f"out has {out.shape[0]} rows; {start} + {n_ev} events may score")
    if n_ev:
        _check_batch(table, batch)
    outcomes = np.empty(n_ev, np.int8)
    clocks = np.empty(n_ev, np.int64)
    table.reserve_entries(n_ev)
    n = ck.fold_kernel(table.S, table.D, table.G, *batch, outcomes, clocks, out, start)
    return Folded(outcomes, clocks, int(n))


def _check_batch(table: ColumnarTable, b: ActivityBatch) -> None:
    """The kernels index without bounds checks: refuse arrays that would reach outside the table."""
    lay = table.layout
    if len({len(a) for a in b}) != 1:
        raise FeatureError("batch arrays differ in length")
    for name, a, lo, hi in (
        ("rows", b.rows, 0, len(table) - 1),
        ("kinds", b.kinds, 0, lay.n_kinds - 1),
        ("slots", b.slots, -1, lay.slots - 1),
        ("ratings", b.ratings, 0, 5),
    ):
        if a.min() < lo or a.max() > hi:
            raise FeatureError(f"batch {name} outside {lo}..{hi}")


def fold_business(table: ColumnarTable, event: BusinessEvent) -> int:
    """``features.state.update`` for a business event, on its row's profile fields. Returns the
    BUSINESS_UPDATE code."""
    r = table.row(event.business_id)
    st = BusinessState(event.business_id, table.spec)
    _load_profile(table, r, st)
    update(st, event, table.spec)
    _store_profile(table, r, st)
    return ck.BUSINESS_UPDATE


def fold_events(table: ColumnarTable, events: Sequence, out: np.ndarray | None = None) -> Folded:
    """Fold a mixed stream in order: runs of activity events through :func:`fold_batch`, business
    events through :func:`fold_business` (their clock: the row's, unchanged)."""
    outcomes = np.empty(len(events), np.int8)
    clocks = np.empty(len(events), np.int64)
    n = i = 0
    while i < len(events):
        if type(events[i]) is BusinessEvent:
            outcomes[i] = fold_business(table, events[i])
            clocks[i] = table.S[0][table.rows[events[i].business_id], ck.C_MAX]
            i += 1
            continue
        j = i
        while j < len(events) and type(events[j]) is not BusinessEvent:
            j += 1
        outcomes[i:j], clocks[i:j], n = fold_batch(table, activity_batch(table, events[i:j]), out, n)
        i = j
    return Folded(outcomes, clocks, n)


def extract_rows(table: ColumnarTable, rows: np.ndarray, as_of: np.ndarray, out: np.ndarray) -> None:
    """``extract_into`` for ``rows[i]`` as of ``as_of[i]`` into ``out[i]`` (float32 matrix)."""
    rows = np.ascontiguousarray(rows, np.int64)
    as_of = np.ascontiguousarray(as_of, np.int64)
    if out.dtype != np.float32 or out.shape[0] < len(rows) or out.shape[1:] != (table.layout.n_features,):
        raise ValueError(f"out must be float32 (>= {len(rows)}, {table.layout.n_features}), got {out.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(table)):
        raise FeatureError("rows outside the table")
    ck.extract_kernel(table.S, table.G, rows, as_of, out)


# -- conversions ----------------------------------------------------------------------------------

# (BusinessState attribute, ints column) of the integer scalars; the rest are converted by hand.
_INT_FIELDS = (
    ("max_event_ms", ck.C_MAX),
    ("late_dropped", ck.C_LATE),
    ("fine_head", ck.C_FHEAD),
    ("coarse_head", ck.C_CHEAD),
    ("seen_floor", ck.C_FLOOR),
    ("slot_base", ck.C_SBASE),
    ("decay_epoch", ck.C_DEPOCH),
    ("rating_sum", ck.C_RSUM),
    ("rating_n", ck.C_RN),
)
_PROFILE_INTS = (
    ("first_seen_ms", ck.C_FSEEN),
    ("created_ms", ck.C_CREATED),
    ("profile_ms", ck.C_PROF_MS),
    ("lifecycle_ms", ck.C_LIFE_MS),
    ("city_bucket", ck.C_CITYB),
    ("category_bucket", ck.C_CATB),
)
# BusinessState list fields and their index in table.S
_LIST_FIELDS = (
    ("last_ms", 2),
    ("first_ms", 3),
    ("totals", 4),
    ("fine", 5),
    ("fine_tot", 6),
    ("fine_sums", 7),
    ("coarse", 8),
    ("coarse_tot", 9),
    ("coarse_sums", 10),
)


def to_state(table: ColumnarTable, row: int) -> BusinessState:
    """The ``BusinessState`` row ``row`` holds (a new object; the table is not changed)."""
    S = table.S
    ints = S[0][row].tolist()
    st = BusinessState.__new__(BusinessState)
    st.business_id = table.ids[row]
    st.layout = table.layout
    for name, c in _INT_FIELDS:
        setattr(st, name, ints[c])
    for name, i in _LIST_FIELDS:
        setattr(st, name, S[i][row].tolist())
    st.slots = array("H", S[11][row].tobytes())
    st.decay = array("d", S[12][row].tobytes())
    bs, ks = ck.row_entries(S[0], table.D, row)
    seen: dict[int, set[int]] = {}
    for b, key in zip(bs.tolist(), ks.tolist(), strict=True):
        seen.setdefault(b, set()).add(key)
    st.seen = seen
    _load_profile(table, row, st)
    return st


def from_state(table: ColumnarTable, state: BusinessState) -> int:
    """Write ``state`` into its business's row (created if new); returns the row."""
    if state.layout is not table.layout and state.layout.state_tag != table.layout.state_tag:
        raise FeatureError(f"state built with feature spec {state.layout.version}, table uses {table.layout.version}")
    r = table.row(state.business_id)
    S = table.S
    ck.forget_row(S[0], table.D, r)
    for name, c in _INT_FIELDS:
        S[0][r, c] = getattr(state, name)
    for name, i in _LIST_FIELDS:
        S[i][r] = getattr(state, name)
    S[11][r] = np.frombuffer(state.slots, np.uint16)
    S[12][r] = np.frombuffer(state.decay, np.float64)
    _store_profile(table, r, state)
    pairs = [(b, k) for b, keys in state.seen.items() for k in keys]
    table.reserve_entries(len(pairs))
    bs = np.array([b for b, _ in pairs], np.int64)
    ks = np.array([k for _, k in pairs], np.uint64)
    ck.hold_keys(S[0], table.D, r, bs, ks)
    return r


def _load_profile(table: ColumnarTable, r: int, st: BusinessState) -> None:
    """Copy the fields ``state._fold_business`` reads and writes from row ``r`` into ``st``."""
    ints = table.S[0][r].tolist()
    for name, c in _PROFILE_INTS:
        setattr(st, name, ints[c])
    st.known = bool(ints[ck.C_KNOWN])
    st.lifecycle = _LIFECYCLE[ints[ck.C_LIFE]]
    st.is_open = bool(ints[ck.C_OPEN])
    st.price_range = ints[ck.C_PRICE] or None
    st.profile_tie, st.lifecycle_tie = table.S[1][r].tolist()
    st.city, st.state_code, st.category = table.city[r], table.state_code[r], table.category[r]


def _store_profile(table: ColumnarTable, r: int, st: BusinessState) -> None:
    ints = table.S[0][r]
    for name, c in _PROFILE_INTS:
        ints[c] = getattr(st, name)
    ints[ck.C_KNOWN] = st.known
    ints[ck.C_LIFE] = _LIFECYCLE_CODE[st.lifecycle]
    ints[ck.C_OPEN] = st.is_open
    ints[ck.C_PRICE] = st.price_range or 0
    table.S[1][r] = (st.profile_tie, st.lifecycle_tie)
    table.city[r], table.state_code[r], table.category[r] = st.city, st.state_code, st.category


def group_key(table: ColumnarTable, row: int) -> str:
    """``features.extract.group_key`` of a row."""
    if not table.S[0][row, ck.C_KNOWN]:
        return "unknown|unknown"
    city = table.city[row] or "unknown"
    if table.city[row] and table.state_code[row]:
        city = f"{table.city[row]}, {table.state_code[row]}"
    return f"{city}|{table.category[row] or 'unknown'}"
