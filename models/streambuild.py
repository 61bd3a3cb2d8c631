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
event, a tombstone, a snapshot time passed), then walked in order for the rest.

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
import heapq
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from features import columnar_kernels as ck
from features.columnar import (
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
from features.order import ACTIVITY_RANK, BUSINESS_RANK, HeadMerger
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import BusinessState
from models.dataset import _GOLD, DAY_MS, LabelConfig, Tombstone, _sample_threshold, _seed_crc, record_key
from models.errors import CheckpointMismatch
from models.shards import EVENT, SNAPSHOT, RowBuffer, Rows
from models.snapshots import DEFAULT_HALF_LIFE_MS, _add_decayed

# Activity folded per call of the compiled fold: large enough to amortise the call, small enough
# that a batch's feature rows (BATCH x features x 4 bytes) stay a few hundred kB.
BATCH = 1024
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
    """One partition's fold, pending rows and label memory; :meth:`run` feeds it a run's records."""

    partition: int
    cfg: BuildConfig
    table: ColumnarTable = field(init=False)  # the businesses' states (features.columnar)
    scored: set[str] = field(default_factory=set)
    decayed: dict[str, list[float]] = field(default_factory=dict)  # business -> [value, at time]
    active: set[str] = field(default_factory=set)  # businesses with activity
    conv: dict[str, dict[str, int]] = field(default_factory=dict)  # business -> {event id: time}
    pending: list[tuple[int, int, int]] = field(default_factory=list)  # heap of (T, seq, slot)
    slots: dict[int, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    next_t: int | None = None  # the next snapshot time (None once there is none)
    snapshots_started: bool = False  # next_t was set by the partition's first item
    max_time: int | None = None  # newest activity time folded
    min_time: int | None = None
    prev_business_time: int = 0  # a keyless-time tombstone takes the time of the record before it
    offsets: list[int] = field(default_factory=lambda: [0, 0])  # next offset to read, per rank
    first_offsets: list[int | None] = field(default_factory=lambda: [None, None])
    shard_seq: int = 0
    pruned_step: int | None = None  # the grid step of the last forgetting of conversions
    counts: PartitionCounts = field(default_factory=PartitionCounts)
    _seq: int = 0
    _batch: list[ActivityEvent] = field(default_factory=list)  # activity not folded yet

    def __post_init__(self) -> None:
        self.table = ColumnarTable(self.cfg.spec)

    def states(self) -> Iterator[BusinessState]:
        """Every business's state (for the checkpoint)."""
        return (to_state(self.table, r) for r in range(len(self.table)))

    def restore(self, state: BusinessState) -> None:
        from_state(self.table, state)

    # ------------------------------------------------------------------------------ a run
    def run(self, business: Iterable[Any], activity: Iterable[Any], out: RowBuffer) -> None:
        """Fold a run's records (business records first, then the activity stream), writing
        labelled rows into ``out`` as they become final."""
        for item in self._merged(business, activity):
            self._step(item, out)
        self._flush(out)

    def _merged(self, business: Iterable[Any], activity: Iterable[Any]) -> Iterator[Any]:
        merger: HeadMerger[Any] = HeadMerger()
        for r in business:
            entry = self._business_entry(r)
            if entry is not None:
                merger.push(BUSINESS_RANK, *entry)
        for r in activity:
            if r.event is None:
                raise ValueError(f"activity record without an event at partition {r.partition} offset {r.offset}")
            self._observe(ACTIVITY_RANK, r.offset)
            merger.push(ACTIVITY_RANK, r.event.event_time, r.offset, r.event)
            yield from merger.pop_ready(True, False)
        yield from merger.pop_ready(True, True)

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
        """Fold the batch (features.columnar), then walk it in order for what the build keeps:
        label memory, scoring moments, the clock that labels rows."""
        events, self._batch = self._batch, []
        if not events:
            return
        X = np.empty((len(events), len(self.cfg.spec.names)), dtype=np.float32)
        folded = fold_batch(self.table, activity_batch(self.table, events), X)
        k = 0
        for i, ev in enumerate(events):
            scored = folded.outcomes[i] == ck.SCORED
            self._activity(ev, scored, X[k] if scored else None, int(folded.clocks[i]), out)
            k += scored

    def _activity(self, ev: ActivityEvent, scored: bool, x: np.ndarray | None, clock: int, out: RowBuffer) -> None:
        c = self.counts
        c.activity_records += 1
        bid, et = ev.business_id, ev.event_time
        self.active.add(bid)
        self.min_time = et if self.min_time is None else min(self.min_time, et)
        is_conv = ev.kind in self.cfg.label_cfg.kinds
        if is_conv:
            self._remember_conversion(bid, ev.event_id, et)
        if scored:
            self.scored.add(bid)
            if is_conv:
                _add_decayed(self.decayed, bid, et, self.cfg.constants[2])
            self._moment(ev, x, clock)  # type: ignore[arg-type]  # a scored event has its row
        if self.max_time is None or et > self.max_time:
            self.max_time = et
            self._settle(out)

    # --------------------------------------------------------------------------- rows
    def _moment(self, ev: ActivityEvent, x: np.ndarray, as_of: int) -> None:
        self.counts.scoring_moments += 1
        if not self.cfg.event_rows:
            return
        threshold, seed_crc, _, _ = self.cfg.constants
        u = (zlib.crc32(ev.event_id.encode(), seed_crc) * _GOLD) & 0xFFFFFFFF
        if u >= threshold:
            return
        self.counts.sampled += 1
        row = self.table.rows[ev.business_id]
        # popularity: the lifetime conversion counts, which are features of the row (exact in float32)
        popularity = float(sum(x[i] for i in self.cfg.lifetime_conversion_features))
        values = self._values(as_of, row, EVENT, as_of, popularity, offset=self.counts.scoring_moments, u=u)
        self._park(x.copy(), values)

    def _snapshots_before(self, t: int) -> None:
        if not self.snapshots_started:
            self.snapshots_started = True
            self.next_t = self.cfg.first_snapshot(t)
        while self.next_t is not None and self.next_t < t:
            for x, values in self._snapshot_rows(self.next_t):
                self._park(x, values)
            self.next_t = self.cfg.snapshot_after(self.next_t)

    def _snapshot_rows(self, t: int) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """One row per scored, scorable business as of its own clock (features.columnar)."""
        table = self.table
        ints = table.S[0]
        rows = np.array([table.rows[b] for b in sorted(self.scored)], dtype=np.int64)
        if not len(rows):
            return
        rows = rows[(ints[rows, ck.C_KNOWN] != 0) & (ints[rows, ck.C_LIFE] != ck.CLOSED)]  # is_scorable
        as_of = ints[rows, ck.C_MAX]
        X = np.empty((len(rows), len(self.cfg.spec.names)), dtype=np.float32)
        extract_rows(table, rows, as_of, X)
        conv_idx = list(self.cfg.constants[3])
        popularity = table.S[4][rows][:, conv_idx].sum(axis=1)
        for j, r in enumerate(rows.tolist()):
            yield X[j], self._values(t, r, SNAPSHOT, int(as_of[j]), float(popularity[j]), offset=-1, u=0)

    def _values(
        self, t: int, row: int, kind: int, as_of: int, popularity: float, offset: int, u: int
    ) -> dict[str, Any]:
        bid = self.table.ids[row]
        recent = 0.0
        d = self.decayed.get(bid)
        if d and kind == SNAPSHOT:
            recent = d[0] * float(np.exp(-self.cfg.constants[2] * (t - d[1])))
        return {
            "kind": kind,
            "time": t,
            "as_of": as_of,
            "business": bid,
            "market": columnar_group_key(self.table, row),
            "popularity": popularity,
            "recent": recent,
            "partition": self.partition,
            "offset": offset,
            "u": u,
        }

    def _park(self, x: np.ndarray, values: dict[str, Any]) -> None:
        self._seq += 1
        self.slots[self._seq] = (x, values)
        heapq.heappush(self.pending, (int(values["time"]), self._seq, self._seq))

    # ------------------------------------------------------------------------- labels
    def _remember_conversion(self, bid: str, event_id: str, t: int) -> None:
        seen = self.conv.get(bid)
        if seen is not None and event_id in seen:
            return  # a re-delivery
        self.counts.conversions += 1  # distinct as far as the label memory reaches
        if t > self._forget_before():  # else no window still open, nor one still to come, can count it
            self.conv.setdefault(bid, {})[event_id] = t

    def _due(self) -> int:
        """Rows with T at or before this are labelled: the newest activity is past T + H by the lateness."""
        if self.max_time is None:
            return -(2**62)
        return self.max_time - int(self.cfg.label_cfg.horizon_ms) - int(self.cfg.spec.allowed_lateness_ms)

    def _forget_before(self) -> int:
        """Conversions at or before this can count in no window: every pending row's and every
        future snapshot's window starts later."""
        cut = self._due()
        if self.pending:
            cut = min(cut, self.pending[0][0])
        if self.next_t is not None:
            cut = min(cut, self.next_t)
        return cut

    def _settle(self, out: RowBuffer) -> None:
        """Label the rows whose window no accepted conversion can still reach; now and then (once
        per grid step) forget the conversions no window can count."""
        due = self._due()
        while self.pending and self.pending[0][0] <= due:
            _, _, slot = heapq.heappop(self.pending)
            x, values = self.slots.pop(slot)
            out.add(x, y=self._label(values), **values)
            self.counts.rows_written += 1
        step = due // self.cfg.every_ms
        if step != self.pruned_step:
            self.pruned_step = step
            self._forget(self._forget_before())

    def _forget(self, cut: int) -> None:
        for bid in list(self.conv):
            kept = {k: t for k, t in self.conv[bid].items() if t > cut}
            if kept:
                self.conv[bid] = kept
            else:
                del self.conv[bid]

    def _label(self, values: dict[str, Any]) -> float:
        seen = self.conv.get(values["business"])
        if not seen:
            return 0.0
        t = int(values["time"])
        end = t + int(self.cfg.label_cfg.horizon_ms)
        return float(sum(1 for c in seen.values() if t < c <= end))

    # --------------------------------------------------------------------------- finish
    def _wait_ms(self) -> int:
        return int(self.cfg.label_cfg.horizon_ms) + int(self.cfg.spec.allowed_lateness_ms)

    def finish(self, data_end: int) -> Rows:
        """The run's tail: the rows due by ``data_end`` (the global data end) that the partition
        has not labelled yet, and its grid snapshots up to it, labelled from what was read. The
        build itself is not changed: the next run starts from the same pending rows."""
        last_ok = data_end - self._wait_ms()
        tail = RowBuffer(len(self.cfg.spec.names))
        for due, _, slot in sorted(self.pending):
            if due > last_ok:
                break
            x, values = self.slots[slot]
            tail.add(x, y=self._label(values), **values)
        t = self.next_t if self.snapshots_started else None
        while t is not None and t <= last_ok:
            for x, values in self._snapshot_rows(t):
                tail.add(x, y=self._label(values), **values)
            t = self.cfg.snapshot_after(t)
        return tail.rows()

    def waiting(self, data_end: int) -> int:
        """Rows still waiting for a label after :meth:`finish` at ``data_end``."""
        last_ok = data_end - self._wait_ms()
        return sum(1 for t, _, _ in self.pending if t > last_ok)
