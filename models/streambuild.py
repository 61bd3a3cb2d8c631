"""The streaming build: examples from the log one partition at a time, in bounded memory.

``models.dataset`` and ``models.snapshots`` read a whole log into memory and fold it twice. This
module folds each partition once, in log order, as it is read, and writes every example out as
soon as its label is known (``models.shards``). Memory holds the partition's business states,
the examples still waiting for their label and the conversions those labels can still count - not
the log. Everything it keeps is saved (``models.buildstore``) so the next run reads only the
records after it: incremental retraining.

The fold is the compiled columnar one (``features.columnar``: the states of a partition as arrays,
activity folded in batches, bit-identical to ``features.state.update`` and ``extract_into``); a
batch is folded before anything that must see the states at its point of the merge (a business
event, a tombstone, a snapshot time passed), then walked in order for the rest - by a compiled
walk too (``models.streamkernels``: the rules below over arrays of pending rows and remembered
conversions), so a build's Python work per event is its conversion to arrays and the merge.

Per partition, :class:`PartitionBuild` applies the rules of the in-memory build, item by item in
the worker's merge order (``features.order``; the business records of a run are read first - a
compacted topic, small - and the activity stream is merged against them as it arrives, which gives
``merge_finished``'s order while holding at most one activity record):

* **Scoring moments** (``features.scoring.apply``): each one the sampling hash keeps
  (``sample_rate``, fixed for a build) becomes an *event row* as of the state's clock.
* **Snapshot rows** on a fixed grid (UTC midnights by default): at each grid time T, just before
  the first item stamped after T, one row per business that has been scored and is scorable
  (the ``models.snapshots`` cut rule). The trainer chooses its training and validation snapshot
  times from this grid when it trains.
* **Labels by a streaming look-ahead**: a row waits with its window ``(T, T + H]``; conversions
  (distinct event ids) of its business are remembered while some window can still count them.
  A row is labelled once the partition's newest activity time has passed ``T + H`` by the allowed
  lateness (``FeatureSpec.allowed_lateness_ms``): no conversion the worker would still accept can
  land in its window. A conversion that arrives later than that is late for the worker too and is
  not counted (the in-memory build counted any conversion of the whole log).
* **End of a run** (:meth:`PartitionBuild.finish`): rows due by the *global* data end (the
  in-memory build's completeness rule) and the grid times up to it that the partition's stream has
  not passed are labelled from what was read and written as the partition's *tail* - used by this
  run, replaced by the next: the checkpoint keeps them pending, so the same log gives the same
  rows whether it was built in one run or in ten.

Increments are cut where a run stops reading (the high-water marks at its start). The merge treats
each run's log as finished, as a live worker treats a caught-up stream: a business record stamped
earlier than activity already applied in an earlier run is applied after it, which is also what
the worker did. A one-run build equals an incremental one whenever no business record crosses a
cut that way (business events published in time order).
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from hashlib import blake2b
from typing import Any

import numpy as np

from features import columnar_kernels as ck
from features.columnar import (
    ActivityBatch,
    ColumnarTable,
    activity_batch,
    extract_rows,
    fold_batch,
    fold_business,
    from_state,
    to_state,
)
from features.columnar import group_key as columnar_group_key
from features.events import ActivityEvent
from features.order import ACTIVITY_RANK, BUSINESS_RANK
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState
from models import streamkernels as sk
from models.dataset import _GOLD, DAY_MS, LabelConfig, Tombstone, _sample_threshold, _seed_crc, record_key
from models.errors import CheckpointMismatch
from models.shards import SNAPSHOT, RowBuffer, Rows
from models.snapshots import DEFAULT_HALF_LIFE_MS, _add_decayed

# Activity folded per call of the compiled fold: large enough to amortise the call, small enough
# that a batch's feature rows (BATCH x features x 4 bytes) stay a few hundred kB.
BATCH = 1024
_NEVER = 2**63 - 1  # a time no event reaches
BUILD_FORMAT = 1  # bump when the checkpoint or shard layout changes: old work directories are rebuilt


@dataclass(frozen=True)
class BuildConfig:
    """What a build's rows depend on; a checkpoint made under another one is rebuilt."""

    spec: FeatureSpec = DEFAULT_SPEC
    label_cfg: LabelConfig = LabelConfig()
    sample_rate: float = 1.0  # share of scoring moments kept as event rows (by event id hash)
    seed: int = 0
    every_ms: int = DAY_MS  # the snapshot grid
    half_life_ms: int = DEFAULT_HALF_LIFE_MS  # recent popularity's decay (models.snapshots)
    # Snapshot times instead of the grid (ascending; empty: no snapshot rows). For a one-off build
    # of chosen times (models.rowsets.build_snapshot_frame); the trainer's builds use the grid.
    times: tuple[int, ...] | None = None
    event_rows: bool = True  # False: snapshot rows only (a one-off snapshot frame)

    def __post_init__(self) -> None:
        _sample_threshold(self.sample_rate)
        if self.every_ms <= 0 or self.half_life_ms <= 0:
            raise ValueError("every_ms and half_life_ms must be > 0")
        if self.times is not None:
            object.__setattr__(self, "times", tuple(sorted({int(t) for t in self.times})))

    def first_snapshot(self, t: int) -> int | None:
        """The first snapshot time of a partition whose first item is stamped ``t``."""
        if self.times is not None:
            return self.times[0] if self.times else None
        return (t // self.every_ms) * self.every_ms

    def snapshot_after(self, t: int) -> int | None:
        """The snapshot time after ``t`` (None: no more)."""
        if self.times is None:
            return t + self.every_ms
        i = bisect.bisect_right(self.times, t)
        return self.times[i] if i < len(self.times) else None

    @cached_property
    def lifetime_conversion_features(self) -> tuple[int, ...]:
        """Columns of the conversion kinds' lifetime counts (``count_<kind>_all``) in a feature row."""
        names = self.spec.names
        return tuple(names.index(f"count_{k.lower()}_all") for k in self.label_cfg.kinds)

    @cached_property
    def constants(self) -> tuple[int, int, float, tuple[int, ...]]:
        """What the per-event steps read: (sampling threshold, seed CRC, decay rate, conversion
        kinds' channel indices), computed once."""
        conv_idx = tuple(self.spec.layout.kind_index[k] for k in self.label_cfg.kinds)
        rate = float(np.log(2.0)) / float(self.half_life_ms)
        return _sample_threshold(self.sample_rate), _seed_crc(self.seed), rate, conv_idx

    def identity(self) -> dict[str, Any]:
        return {
            "format": BUILD_FORMAT,
            "feature_set_version": self.spec.version,
            "state_tag": self.spec.layout.state_tag,
            "label": self.label_cfg.to_dict(),
            "sample_rate": float(self.sample_rate),
            "seed": int(self.seed),
            "every_ms": int(self.every_ms),
            "half_life_ms": int(self.half_life_ms),
            "times": None if self.times is None else list(self.times),
            "event_rows": self.event_rows,
        }


@dataclass
class PartitionCounts:
    """What one partition's build has seen, summed over its runs (kept in its checkpoint)."""

    records: int = 0
    business_records: int = 0
    activity_records: int = 0
    tombstones: int = 0
    unkeyed_tombstones: int = 0
    conversions: int = 0  # conversion events (re-deliveries within the label memory not counted again)
    scoring_moments: int = 0
    sampled: int = 0
    rows_written: int = 0

    def add(self, other: PartitionCounts) -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class PartitionBuild:
    """One partition's fold, pending rows and label memory; :meth:`run` feeds it a run's records.

    The pending rows and the label memory are arrays walked by ``models.streamkernels`` (see there);
    :attr:`pending` and :meth:`pending_rows` / :meth:`conversions` show them as the checkpoint keeps them."""

    partition: int
    cfg: BuildConfig
    table: ColumnarTable = field(init=False)  # the businesses' states (features.columnar)
    scored: set[str] = field(default_factory=set)
    decayed: dict[str, list[float]] = field(default_factory=dict)  # business -> [value, at time]
    active: set[str] = field(default_factory=set)  # businesses with activity
    next_t: int | None = None  # the next snapshot time (None once there is none)
    snapshots_started: bool = False  # next_t was set by the partition's first item
    min_time: int | None = None
    prev_business_time: int = 0  # a keyless-time tombstone takes the time of the record before it
    offsets: list[int] = field(default_factory=lambda: [0, 0])  # next offset to read, per rank
    first_offsets: list[int | None] = field(default_factory=lambda: [None, None])
    shard_seq: int = 0
    counts: PartitionCounts = field(default_factory=PartitionCounts)
    _batch: list[ActivityEvent] = field(default_factory=list)  # activity not folded yet
    _on_flush: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.table = ColumnarTable(self.cfg.spec)
        self.st = np.zeros(sk.N_ST, np.int64)
        self.P: tuple[np.ndarray, ...] = tuple(np.zeros(0, np.int64) for _ in range(10))
        self.pX = np.zeros((0, len(self.cfg.spec.names)), np.float32)
        self.p_kind = np.zeros(0, np.int8)
        self.p_pop = np.zeros(0, np.float64)
        self.p_recent = np.zeros(0, np.float64)
        self.C: tuple[np.ndarray, ...] = tuple(np.zeros(0, np.int64) for _ in range(6))
        self.pairs: dict[tuple[int, str], int] = {}  # (business row, event id) -> pair id
        self.markets: dict[str, int] = {}  # market -> code
        self._grow_pending(256)
        self._grow_entries(256)
        self._mcode_row = np.zeros(0, np.int64)

    # ----------------------------------------------------------------- scalars kept in st
    def _scalar(self, has: int, value: int) -> int | None:
        return int(self.st[value]) if self.st[has] else None

    @property
    def max_time(self) -> int | None:  # newest activity time folded
        return self._scalar(sk.ST_HAS_MAX, sk.ST_MAX)

    @max_time.setter
    def max_time(self, v: int | None) -> None:
        self.st[sk.ST_HAS_MAX], self.st[sk.ST_MAX] = (0, 0) if v is None else (1, v)

    @property
    def pruned_step(self) -> int | None:  # the grid step of the last forgetting of conversions
        return self._scalar(sk.ST_HAS_PRUNED, sk.ST_PRUNED)

    @pruned_step.setter
    def pruned_step(self, v: int | None) -> None:
        self.st[sk.ST_HAS_PRUNED], self.st[sk.ST_PRUNED] = (0, 0) if v is None else (1, v)

    def _sync_counts(self) -> None:
        c, st = self.counts, self.st
        c.scoring_moments, c.sampled = int(st[sk.ST_MOMENTS]), int(st[sk.ST_SAMPLED])
        c.conversions, c.rows_written = int(st[sk.ST_CONVS]), int(st[sk.ST_WRITTEN])

    def set_counts(self, counts: PartitionCounts) -> None:
        """A checkpoint's counters."""
        self.counts = counts
        c, st = counts, self.st
        st[sk.ST_MOMENTS], st[sk.ST_SAMPLED] = c.scoring_moments, c.sampled
        st[sk.ST_CONVS], st[sk.ST_WRITTEN] = c.conversions, c.rows_written

    # --------------------------------------------------------------- array capacity
    def _grow_pending(self, need: int) -> None:
        """Room to park ``need`` more rows."""
        free, cap = int(self.st[sk.ST_NFREE]), len(self.p_kind)
        if free >= need:
            return
        new = max(2 * cap, cap + need - free, 256)
        self.P = tuple(_grown(a, new) for a in self.P)
        self.pX, self.p_kind = _grown(self.pX, new), _grown(self.p_kind, new)
        self.p_pop, self.p_recent = _grown(self.p_pop, new), _grown(self.p_recent, new)
        added = np.arange(new - 1, cap - 1, -1, dtype=np.int64)
        self.P[sk.P_FREE][free : free + len(added)] = added
        self.st[sk.ST_NFREE] = free + len(added)

    def _grow_entries(self, need: int) -> None:
        """Room for ``need`` more remembered conversions, the table's rows and every pair id."""
        C, free = self.C, int(self.st[sk.ST_ENFREE])
        cap = len(C[sk.C_TIME])
        if free < need:
            new = max(2 * cap, cap + need - free, 256)
            C = tuple(_grown(a, new) if i < sk.C_HEAD else a for i, a in enumerate(C))
            added = np.arange(new - 1, cap - 1, -1, dtype=np.int64)
            C[sk.C_FREE][free : free + len(added)] = added
            self.st[sk.ST_ENFREE] = free + len(added)
        for i, n in ((sk.C_HEAD, len(self.table)), (sk.C_PAIR, len(self.pairs))):
            if len(C[i]) < n:
                C = C[:i] + (_grown(C[i], max(2 * len(C[i]), n, 256), fill=-1),) + C[i + 1 :]
        self.C = C

    def _compact_pairs(self) -> None:
        """Renumber the pairs still in memory (the pair table would otherwise hold every
        conversion ever seen)."""
        live = np.flatnonzero(self.C[sk.C_PAIR][: len(self.pairs)] >= 0)
        if len(self.pairs) < 4096 or len(self.pairs) < 4 * len(live):
            return
        keys = list(self.pairs)
        entries = self.C[sk.C_PAIR][live]
        self.pairs = {keys[p]: i for i, p in enumerate(live.tolist())}
        self.C[sk.C_PAIR][:] = -1
        self.C[sk.C_PAIR][: len(live)] = entries
        self.C[sk.C_PID][entries] = np.arange(len(live), dtype=np.int64)

    # ------------------------------------------------------------------------------ a run
    def states(self) -> Iterator[BusinessState]:
        """Every business's state (for the checkpoint)."""
        return (to_state(self.table, r) for r in range(len(self.table)))

    def restore(self, state: BusinessState) -> None:
        from_state(self.table, state)

    def run(
        self,
        business: Iterable[Any],
        activity: Iterable[Any],
        out: RowBuffer,
        on_flush: Callable[[], None] | None = None,
    ) -> None:
        """Fold a run's records (business records first, then the activity stream), writing
        labelled rows into ``out`` as they become final; ``on_flush()`` after each batch (the
        caller may write ``out`` away)."""
        self._on_flush = on_flush
        biz = [e for e in (self._business_entry(r) for r in business) if e is not None]
        biz.append((_NEVER, -1, None))  # a sentinel: no activity time reaches it
        bi = 0
        next_b = biz[0][0]
        lim = self._step_limit()
        batch, nxt, n, first = self._batch, self.offsets[ACTIVITY_RANK], 0, None
        # The worker's merge (features.order.HeadMerger) of the business records (a finished
        # FIFO) against the activity stream, inlined: a business head goes first iff its key
        # (time, BUSINESS_RANK, offset) is below the activity record's, i.e. its time is not later.
        for r in activity:
            ev, off = r.event, r.offset
            if ev is None:
                raise ValueError(f"activity record without an event at partition {r.partition} offset {off}")
            if off < nxt:
                self.offsets[ACTIVITY_RANK] = nxt
                self._observe(ACTIVITY_RANK, off)  # raises
            if n == 0:
                first = off
            nxt = off + 1
            n += 1
            t = ev.event_time
            if t >= next_b:
                while next_b <= t:
                    self._step(biz[bi][2], out)  # folds the batch first: a new list
                    bi += 1
                    next_b = biz[bi][0]
                batch, lim = self._batch, self._step_limit()
            if t > lim or type(ev) is not ActivityEvent:
                self._step(ev, out)
                batch, lim = self._batch, self._step_limit()
                continue
            batch.append(ev)
            if len(batch) >= BATCH:
                self._flush(out)
                batch = self._batch
        self.offsets[ACTIVITY_RANK] = nxt
        if first is not None and self.first_offsets[ACTIVITY_RANK] is None:
            self.first_offsets[ACTIVITY_RANK] = first
        self.counts.records += n
        for _, _, item in biz[bi:-1]:
            self._step(item, out)
        self._flush(out)
        self._sync_counts()

    def _step_limit(self) -> int:
        """Activity stamped after this must go through :meth:`_step` (it passes a snapshot time,
        or starts the snapshots); at or before it, it only joins the batch."""
        if not self.snapshots_started:
            return -_NEVER
        return _NEVER if self.next_t is None else self.next_t

    def _business_entry(self, r: Any) -> tuple[int, int, Any] | None:
        self._observe(BUSINESS_RANK, r.offset)
        self.counts.business_records += 1
        ev = r.event
        if ev is not None:
            self.prev_business_time = ev.event_time
            return ev.event_time, r.offset, ev
        self.counts.tombstones += 1
        bid = record_key(r)
        if bid is None:
            self.counts.unkeyed_tombstones += 1
            return None
        t = getattr(r, "time", None)
        return (self.prev_business_time if t is None else t), r.offset, Tombstone(bid)

    def _observe(self, rank: int, offset: int) -> None:
        if offset < self.offsets[rank]:
            # A reader seeks to the checkpoint's offset; an earlier one means the log restarted
            # (recreated or truncated topic): folding it into this state would count it twice.
            raise CheckpointMismatch(
                f"{('business', 'activity')[rank]}[{self.partition}]@{offset}: the build's checkpoint had read up to "
                f"offset {self.offsets[rank]}; was the topic recreated? delete the trainer's working directory to rebuild"
            )
        self.counts.records += 1
        if self.first_offsets[rank] is None:
            self.first_offsets[rank] = offset
        self.offsets[rank] = max(self.offsets[rank], offset + 1)

    def _step(self, item: Any, out: RowBuffer) -> None:
        """Activity waits in a batch for the compiled fold; anything that must see the states as
        they are at this point in the merge (a business event, a tombstone, a snapshot time
        passed, a full batch) folds the batch first."""
        if type(item) is ActivityEvent:
            t = item.event_time
            if not self.snapshots_started or (self.next_t is not None and t > self.next_t):
                self._flush(out)
                self._snapshots_before(t)
            self._batch.append(item)
            if len(self._batch) >= BATCH:
                self._flush(out)
            return
        self._flush(out)
        if type(item) is Tombstone:
            bid: str = item.business_id  # type: ignore[assignment]  # keyless tombstones never reach the merge
            self.scored.discard(bid)
            self.decayed.pop(bid, None)
            from_state(self.table, BusinessState(bid, self.cfg.spec))  # forgotten: a new state
            return
        self._snapshots_before(item.event_time)
        fold_business(self.table, item)

    def _flush(self, out: RowBuffer) -> None:
        """Fold the batch (features.columnar), then walk it in order (models.streamkernels) for
        what the build keeps: label memory, scoring moments, the clock that labels rows."""
        events = self._batch
        if not events:
            return
        self._batch = []
        X = np.empty((len(events), len(self.cfg.spec.names)), dtype=np.float32)
        batch, hashes = activity_arrays(self.table, events, self.cfg.constants[1])
        folded = fold_batch(self.table, batch, X)
        self._bookkeep(events, batch, folded.outcomes)
        pids = self._pair_ids(events, batch)
        self._grow_pending(len(events))
        self._grow_entries(len(events))
        self._market_codes(np.unique(batch.rows))
        cap = int(self.st[sk.ST_HN]) + len(events)
        out_slot, out_label = np.empty(cap, np.int64), np.empty(cap, np.float64)
        n = sk.walk_kernel(
            self.st, self.P, self.C, self.pX, self.p_kind, self.p_pop, self.p_recent,
            batch.rows, batch.times, pids, folded.outcomes, folded.clocks, hashes,
            X, self._mcode_row, self._lcf, self._params(), out_slot, out_label,
        )  # fmt: skip
        self._emit(out_slot[:n], out_label[:n], out)
        if len(self.pairs) >= 4096:
            self._compact_pairs()
        if self._on_flush is not None:
            self._on_flush()

    @cached_property
    def _lcf(self) -> np.ndarray:
        return np.array(self.cfg.lifetime_conversion_features, np.int64)

    @cached_property
    def _conv_kinds(self) -> np.ndarray:
        return np.array(self.cfg.constants[3], np.int64)

    def _params(self) -> np.ndarray:
        threshold = self.cfg.constants[0]
        nt = self.next_t
        return np.array(
            [
                self._wait_ms(),
                int(self.cfg.label_cfg.horizon_ms),
                self.cfg.every_ms,
                threshold,
                int(self.cfg.event_rows),
                0 if nt is None else nt,
                int(nt is not None),
                len(self.table),
                ck.SCORED,
            ],
            np.int64,
        )

    def _bookkeep(self, events: list[ActivityEvent], batch: Any, outcomes: np.ndarray) -> None:
        """What the walk needs no order for: counters, active and scored businesses, the decayed
        conversion counts (per business, in order)."""
        self.counts.activity_records += len(events)
        ids = self.table.ids
        self.active.update(ids[r] for r in np.unique(batch.rows).tolist())
        tmin = int(batch.times.min())
        self.min_time = tmin if self.min_time is None else min(self.min_time, tmin)
        scored = outcomes == ck.SCORED
        self.scored.update(ids[r] for r in np.unique(batch.rows[scored]).tolist())
        rate = self.cfg.constants[2]
        for i in np.flatnonzero(scored & np.isin(batch.kinds, self._conv_kinds)).tolist():
            _add_decayed(self.decayed, events[i].business_id, events[i].event_time, rate)

    def _pair_ids(self, events: list[ActivityEvent], batch: Any) -> np.ndarray:
        """Per event: its (business row, event id) pair's number when a conversion, else -1."""
        pids = np.full(len(events), -1, np.int64)
        pairs, rows = self.pairs, batch.rows
        for i in np.flatnonzero(np.isin(batch.kinds, self._conv_kinds)).tolist():
            pids[i] = pairs.setdefault((int(rows[i]), events[i].event_id), len(pairs))
        return pids

    def _market_codes(self, rows: np.ndarray) -> None:
        """Market codes of ``rows`` as their profiles stand (no business event inside a batch)."""
        if len(self._mcode_row) < len(self.table):
            self._mcode_row = _grown(self._mcode_row, max(2 * len(self._mcode_row), len(self.table), 256))
        for r in rows.tolist():
            self._mcode_row[r] = self._market(columnar_group_key(self.table, r))

    def _market(self, m: str) -> int:
        return self.markets.setdefault(m, len(self.markets))

    def _emit(self, slots: np.ndarray, labels: np.ndarray, out: RowBuffer) -> None:
        """Labelled rows from their slots into ``out``; the slots are free again."""
        if not len(slots):
            return
        out.add_rows(self._slot_rows(slots, labels))
        nf = int(self.st[sk.ST_NFREE])
        self.P[sk.P_FREE][nf : nf + len(slots)] = slots
        self.st[sk.ST_NFREE] = nf + len(slots)

    def _slot_rows(self, slots: np.ndarray, labels: np.ndarray) -> Rows:
        P = self.P
        ids = np.array(self.table.ids, dtype=str)
        markets = np.array(list(self.markets), dtype=str)
        return Rows(
            {
                "X": self.pX[slots],
                "kind": self.p_kind[slots],
                "time": P[sk.P_TIME][slots],
                "as_of": P[sk.P_ASOF][slots],
                "y": labels.astype(np.float32),
                "business": ids[P[sk.P_BROW][slots]],
                "market": markets[P[sk.P_MCODE][slots]],
                "popularity": self.p_pop[slots],
                "recent": self.p_recent[slots],
                "partition": np.full(len(slots), self.partition, np.int32),
                "offset": P[sk.P_OFFSET][slots],
                "u": P[sk.P_U][slots].astype(np.uint32),
            }
        )

    # --------------------------------------------------------------------------- rows
    def _snapshots_before(self, t: int) -> None:
        if not self.snapshots_started:
            self.snapshots_started = True
            self.next_t = self.cfg.first_snapshot(t)
        while self.next_t is not None and self.next_t < t:
            self._park(self._snapshot_rows(self.next_t))
            self.next_t = self.cfg.snapshot_after(self.next_t)

    def _snapshot_rows(self, t: int) -> Rows:
        """One row per scored, scorable business as of its own clock (features.columnar); labels unset."""
        table = self.table
        ints = table.S[0]
        rows = np.array([table.rows[b] for b in sorted(self.scored)], dtype=np.int64)
        if len(rows):
            rows = rows[(ints[rows, ck.C_KNOWN] != 0) & (ints[rows, ck.C_LIFE] != ck.CLOSED)]  # is_scorable
        n = len(rows)
        as_of = ints[rows, ck.C_MAX]
        X = np.empty((n, len(self.cfg.spec.names)), dtype=np.float32)
        extract_rows(table, rows, as_of, X)
        popularity = table.S[4][rows][:, list(self.cfg.constants[3])].sum(axis=1)
        return Rows(
            {
                "X": X,
                "kind": np.full(n, SNAPSHOT, np.int8),
                "time": np.full(n, t, np.int64),
                "as_of": as_of.astype(np.int64),
                "y": np.full(n, np.nan, np.float32),
                "business": np.array([table.ids[r] for r in rows.tolist()], dtype=str).reshape(n),
                "market": np.array([columnar_group_key(table, r) for r in rows.tolist()], dtype=str).reshape(n),
                "popularity": popularity.astype(np.float64),
                "recent": np.array([self._recent(table.ids[r], t) for r in rows.tolist()], np.float64),
                "partition": np.full(n, self.partition, np.int32),
                "offset": np.full(n, -1, np.int64),
                "u": np.zeros(n, np.uint32),
            }
        )

    def _recent(self, bid: str, t: int) -> float:
        d = self.decayed.get(bid)
        return d[0] * float(np.exp(-self.cfg.constants[2] * (t - d[1]))) if d else 0.0

    def _park(self, rows: Rows) -> None:
        """Park ``rows`` (in order) to wait for their labels."""
        n = len(rows)
        if not n:
            return
        self._grow_pending(n)
        slots = sk.park_rows(self.st, self.P, np.ascontiguousarray(rows["time"], np.int64))
        P = self.P
        self.pX[slots] = rows["X"]
        self.p_kind[slots] = rows["kind"]
        P[sk.P_ASOF][slots] = rows["as_of"]
        rix = self.table.rows
        P[sk.P_BROW][slots] = [rix[b] for b in rows["business"].tolist()]
        P[sk.P_MCODE][slots] = [self._market(m) for m in rows["market"].tolist()]
        self.p_pop[slots], self.p_recent[slots] = rows["popularity"], rows["recent"]
        P[sk.P_OFFSET][slots], P[sk.P_U][slots] = rows["offset"], rows["u"]

    # ------------------------------------------------------------------------- labels
    @property
    def pending(self) -> list[tuple[int, int, int]]:
        """The rows waiting for their label, as (T, seq, slot), in no order."""
        n = int(self.st[sk.ST_HN])
        return list(zip(*(self.P[i][:n].tolist() for i in (sk.P_HT, sk.P_HSEQ, sk.P_HSLOT)), strict=True))

    def _pending_slots(self) -> np.ndarray:
        """The pending slots in label order: by (T, seq)."""
        n = int(self.st[sk.ST_HN])
        order = np.lexsort((self.P[sk.P_HSEQ][:n], self.P[sk.P_HT][:n]))
        return self.P[sk.P_HSLOT][:n][order]

    def pending_rows(self) -> Rows:
        """The rows waiting for their label (label NaN), in label order: the checkpoint's."""
        slots = self._pending_slots()
        return self._slot_rows(slots, np.full(len(slots), np.nan))

    def restore_pending(self, rows: Rows) -> None:
        """Park a checkpoint's pending rows again (after its states are restored)."""
        self._park(rows)

    def conversions(self) -> tuple[list[str], list[str], list[int]]:
        """The label memory as (business, event id, time) lists: the checkpoint's."""
        keys = list(self.pairs)
        ent = self.C[sk.C_PAIR][: len(keys)]
        live = np.flatnonzero(ent >= 0)
        times = self.C[sk.C_TIME][ent[live]].tolist()
        ids = self.table.ids
        pairs = [keys[p] for p in live.tolist()]
        return [ids[r] for r, _ in pairs], [e for _, e in pairs], times

    def restore_conversions(self, bids: list[str], eids: list[str], times: list[int]) -> None:
        """Put a checkpoint's label memory back (after its states are restored)."""
        self._grow_entries(len(bids))
        for b, e, t in zip(bids, eids, times, strict=True):
            r = self.table.row(b)
            pid = self.pairs.setdefault((r, e), len(self.pairs))
            self._grow_entries(0)
            sk.add_entry(self.st, self.C, r, pid, t)

    def _due(self) -> int:
        """Rows with T at or before this are labelled: the newest activity is past T + H by the lateness."""
        if self.max_time is None:
            return -(2**62)
        return self.max_time - self._wait_ms()

    def _labels(self, rows: Rows) -> np.ndarray:
        brows = np.array([self.table.rows[b] for b in rows["business"].tolist()], np.int64)
        self._grow_entries(0)
        return sk.labels_of(
            self.C, brows, np.ascontiguousarray(rows["time"], np.int64), int(self.cfg.label_cfg.horizon_ms)
        )

    # --------------------------------------------------------------------------- finish
    def _wait_ms(self) -> int:
        return int(self.cfg.label_cfg.horizon_ms) + int(self.cfg.spec.allowed_lateness_ms)

    def finish(self, data_end: int) -> Rows:
        """The run's tail: the rows due by ``data_end`` (the global data end) that the partition
        has not labelled yet, and its grid snapshots up to it, labelled from what was read. The
        build itself is not changed: the next run starts from the same pending rows."""
        last_ok = data_end - self._wait_ms()
        slots = self._pending_slots()
        slots = slots[self.P[sk.P_TIME][slots] <= last_ok]
        brows = self.P[sk.P_BROW][slots]
        self._grow_entries(0)
        H = int(self.cfg.label_cfg.horizon_ms)
        parts = [self._slot_rows(slots, sk.labels_of(self.C, brows, self.P[sk.P_TIME][slots], H))]
        t = self.next_t if self.snapshots_started else None
        while t is not None and t <= last_ok:
            snap = self._snapshot_rows(t)
            snap.cols["y"] = self._labels(snap).astype(np.float32)
            parts.append(snap)
            t = self.cfg.snapshot_after(t)
        return Rows.concat(parts, len(self.cfg.spec.names))

    def waiting(self, data_end: int) -> int:
        """Rows still waiting for a label after :meth:`finish` at ``data_end``."""
        last_ok = data_end - self._wait_ms()
        n = int(self.st[sk.ST_HN])
        return int((self.P[sk.P_HT][:n] > last_ok).sum())


def _grown(a: np.ndarray, n: int, fill: int = 0) -> np.ndarray:
    """``a`` with room for ``n`` rows (new ones ``fill``)."""
    new = np.full((n, *a.shape[1:]), fill, a.dtype)
    new[: len(a)] = a
    return new


def activity_arrays(
    table: ColumnarTable, events: list[ActivityEvent], seed_crc: int
) -> tuple[ActivityBatch, np.ndarray]:
    """``features.columnar.activity_batch(table, events)`` and every event id's sampling hash
    (``models.dataset.sampled``'s), each id encoded once: the same arrays (a test compares them),
    made in fewer passes over the events - this conversion cost the build more than its fold."""
    lay = table.layout
    kind_index, review, shift = lay.kind_index, lay.REVIEW, lay.slot_shift
    try:
        kinds = [kind_index[ev.kind] for ev in events]
    except KeyError:
        return activity_batch(table, events), np.zeros(0, np.int64)  # raises InvalidEvent
    rows = table.rows
    bids = [ev.business_id for ev in events]
    for b in bids:
        if b not in rows:
            table.row(b)  # new businesses get rows in order of first appearance, as activity_batch's
    ids = [ev.event_id.encode() for ev in events]
    crc32, gold, digest, from_bytes = zlib.crc32, _GOLD, blake2b, int.from_bytes
    batch = ActivityBatch(
        np.array([rows[b] for b in bids], np.int64),
        np.array(kinds, np.int64),
        np.array([ev.event_time for ev in events], np.int64),
        np.array(
            [(crc32(ev.user_id.encode()) * gold & 0xFFFFFFFF) >> shift if ev.user_id else -1 for ev in events],
            np.int64,
        ),
        np.array([from_bytes(digest(e, digest_size=8).digest(), "little") for e in ids], np.uint64),
        np.array([ev.rating or 0 if k == review else 0 for ev, k in zip(events, kinds, strict=True)], np.int64),
    )
    hashes = np.array([(crc32(e, seed_crc) * gold) & 0xFFFFFFFF for e in ids], np.int64)
    return batch, hashes
