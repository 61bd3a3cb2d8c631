"""Process: the broker-free core. Ordered events + state + scorer → predictions.

``process(items, store, scorer)`` folds each event into its business's state by the shared
``features.scoring.apply`` rule, writes one feature row per scoring moment, makes ONE vectorised
model call for the whole batch, and returns the prediction records, the dead letters, and a tally
of every item's outcome. The fold and the feature rows are the compiled columnar kernel's
(``features.columnar``: the same states and the same float32 bits as ``scoring.apply`` +
``extract.extract_into``) on each partition's ``ColumnarTable`` (``store.PartitionState.table``):
activity is folded per partition in runs (``_Fold``); the per-item checks (lazy restore,
deletions, applied offsets) stay in Python. The Kafka loop in ``worker`` is a thin shell around it; tests, replays
and the parity check call it directly.

``scorer`` may instead be a ``consumer.pipeline.arms.Routing`` (experiment arms): rows are grouped by their
business's arm and scored with one call per distinct model; hold-out rows land in
``BatchOutput.holdout``, the shadow model's scores of every row in ``BatchOutput.shadow``.

Items already reflected in a restored state (offset ≤ the state's applied offset for that topic)
are ``already_applied``: their predictions were acknowledged before the crash that left their
offsets uncommitted, and folding them again would double-count.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from consumer.errors import ProcessingHalted, StaleState
from consumer.pipeline.arms import HOLDOUT, SHADOW, Routing, score_rows
from consumer.pipeline.decode import ActivityRun, DeadLetter, Decoded
from consumer.pipeline.predictions import Predictions, Scored, feature_hashes, prediction_id, prediction_record
from consumer.pipeline.store import PartitionState
from features import columnar_kernels as ck
from features.columnar import ActivityBatch, ColumnarTable, activity_batch, fold_batch, fold_business, group_key
from features.events import BusinessEvent
from features.order import ACTIVITY_RANK
from features.scoring import BUSINESS_UPDATE, OUTCOMES
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import from_bytes, to_bytes

ALREADY_APPLIED = "already_applied"
DEAD_LETTER = "dead_letter"
UNPROCESSABLE = "unprocessable"  # dead-letter reason: our code raised on a decodable record
# More consecutive unprocessable records than this is a bug hitting everything, not bad input.
MAX_CONSECUTIVE_UNPROCESSABLE = 50
BUSINESS_DELETED = "business_deleted"
MAX_RUN = 4096  # activity events folded in one kernel call at most (a rebuild's fold is one long walk)


class Scorer(Protocol):
    version: str
    feature_set_version: str

    def score(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null value on the business topic: the business is deleted (compaction tombstone)."""

    topic: str
    partition: int
    offset: int
    business_id: str


@dataclass
class BatchOutput:
    # ``Predictions`` (columns) from one model; a list of records with experiment arms or when summed
    predictions: Predictions | list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    features: np.ndarray | None = None  # one float32 row per prediction, same order
    deleted: list[tuple[int, str]] = field(default_factory=list)  # (partition, business_id)
    score_seconds: float = 0.0
    # With experiment arms (consumer.pipeline.arms): predictions of hold-out businesses and of the shadow model.
    holdout: list[dict[str, Any]] = field(default_factory=list)
    shadow: list[dict[str, Any]] = field(default_factory=list)
    failed_in_a_row: int = 0  # process_isolated: unprocessable records at the end of this batch, in a row


class RowBuffer:
    """A reusable float32 matrix: no per-event allocation in the hot path."""

    def __init__(self, n_features: int, capacity: int = 1024):
        self.n_features = n_features
        self.rows = np.empty((capacity, n_features), dtype=np.float32)

    def ensure(self, n: int) -> np.ndarray:
        if n > len(self.rows):
            grown = np.empty((max(n, 2 * len(self.rows)), self.n_features), dtype=np.float32)
            grown[: len(self.rows)] = self.rows  # rows already written belong to this batch
            self.rows = grown
        return self.rows


class _Queue:
    """A partition's activity waiting for the kernel, in merge order: segments of decoded items
    (``list``) and of bulk-decoded runs (``_RunSeg``), with their walk positions."""

    __slots__ = ("segments", "bids", "n")

    def __init__(self) -> None:
        self.segments: list[Any] = []
        self.bids: set[str] = set()  # businesses with queued activity
        self.n = 0  # events queued

    def add_item(self, item: Decoded, pos: int) -> None:
        segs = self.segments
        if not segs or type(segs[-1]) is not list:
            segs.append([])
        segs[-1].append((item, pos))
        self.n += 1


class _RunSeg(NamedTuple):
    """The records of an ``ActivityRun`` still to fold: ``keep`` (indices into the run; None: all)
    and the table row of each business code."""

    run: ActivityRun
    keep: np.ndarray | None
    rows_of_code: np.ndarray
    pos: int  # walk position of the run's first record


class _Scored(NamedTuple):
    """The scoring moments of one kernel call, row for row with the feature rows it wrote."""

    topic: str
    partition: int
    offsets: np.ndarray
    event_times: np.ndarray
    as_of: np.ndarray
    pos: np.ndarray
    bids: list[str]
    gkeys: list[str]


class _Fold:
    """One walk over ordered items: the per-item checks (restore, deletions, applied offsets) in
    Python, activity events queued per partition and folded by the compiled kernel
    (``features.columnar.fold_batch``) in one call per partition and run.

    Bulk-decoded runs (``ActivityRun``) are checked per business, not per record: a run holds
    only activity, so its records' entries and applied offsets are settled business by business.

    A partition's queue is folded before anything that must see its states as of that point: a
    business event of a business with queued activity (folded on its row's profile,
    ``fold_business``), a tombstone (the deleted row is reset when the business comes back), and
    the end of the walk. Rows are independent, so the order of the partitions' runs does not
    matter; within a partition the kernel keeps the merge order. With ``buf``, the kernel writes
    the feature row of each scoring moment into it, and ``scored`` describes those rows."""

    __slots__ = ("store", "spec", "outcomes", "deleted", "buf", "queues", "scored", "n")

    def __init__(
        self,
        store: dict[int, PartitionState],
        spec: FeatureSpec,
        outcomes: Counter,
        deleted: list[tuple[int, str]] | None,
        buf: RowBuffer | None,
    ):
        self.store = store
        self.spec = spec
        self.outcomes = outcomes
        self.deleted = deleted
        self.buf = buf
        self.queues: dict[int, _Queue] = {}
        self.scored: list[_Scored] = []
        self.n = 0  # feature rows written into buf

    def part(self, partition: int) -> PartitionState:
        part = self.store.get(partition)
        if part is None:
            part = self.store[partition] = PartitionState(partition, spec=self.spec)
        return part

    def queue(self, partition: int) -> _Queue:
        queue = self.queues.get(partition)
        if queue is None:
            queue = self.queues[partition] = _Queue()
        return queue

    def item(self, item: Decoded | Tombstone, pos: int) -> None:
        """Apply one event or tombstone (activity: queued) and count its outcome."""
        outcomes = self.outcomes
        part = self.part(item.partition)
        if isinstance(item, Tombstone):
            if item.partition in self.queues:
                self.flush(item.partition)
            dropped = part.delete(item.business_id, item.offset)
            if dropped is None:
                outcomes[ALREADY_APPLIED] += 1
                return
            if dropped and self.deleted is not None:
                self.deleted.append((item.partition, item.business_id))
            outcomes[BUSINESS_DELETED] += 1
            return
        event = item.event
        bid = event.business_id
        entry = part.entries.get(bid)
        if entry is None:
            entry = part.restored(bid) if part.encoded else None
            if entry is None:
                if part.deleted and part.deleted_after(bid, item.rank, item.offset):
                    outcomes[ALREADY_APPLIED] += 1  # folded into a state that a later tombstone dropped
                    return
                entry = part.new_entry(bid)
        if item.offset <= entry.applied[item.rank]:  # a new entry's applied offsets are -1
            outcomes[ALREADY_APPLIED] += 1
            return
        if type(event) is BusinessEvent:
            queue = self.queues.get(item.partition)
            if queue is not None and bid in queue.bids:
                self.flush(item.partition)
            fold_business(part.table, event)
            outcomes[BUSINESS_UPDATE] += 1
        else:
            queue = self.queue(item.partition)
            queue.add_item(item, pos)
            queue.bids.add(bid)
            if queue.n >= MAX_RUN:
                self.flush(item.partition)
        entry.applied[item.rank] = item.offset
        part.dirty.add(bid)

    def run(self, run: ActivityRun, pos: int) -> None:
        """Queue a bulk-decoded run: the checks of ``item``, one business at a time."""
        part = self.part(run.partition)
        cols, lo, hi = run.block.cols, run.lo, run.hi
        codes = cols.bid_code[lo:hi]
        offsets = run.block.offsets[lo:hi]
        uniq, last = _last_of_each(codes)
        rows_of_code = np.zeros(len(cols.bids), np.int64)
        keep: np.ndarray | None = None
        queue = self.queue(run.partition)
        entries, first = part.entries, int(offsets[0])
        for code, last_i in zip(uniq.tolist(), last.tolist(), strict=True):
            bid = cols.bids[code]
            entry = entries.get(bid)
            if entry is None:
                entry = part.restored(bid) if part.encoded else None
                if entry is None:
                    marker = part.deleted.get(bid) if part.deleted else None
                    if marker is not None and offsets[last_i] <= marker[ACTIVITY_RANK]:
                        keep = _drop(keep, codes == code, len(codes))  # folded into a state since deleted
                        continue
                    entry = part.new_entry(bid)  # after a deletion it keeps the marker's offsets
            applied = entry.applied
            if first <= applied[ACTIVITY_RANK]:  # re-read after a restore: skip what the state reflects
                keep = _drop(keep, (codes == code) & (offsets <= applied[ACTIVITY_RANK]), len(codes))
            applied[ACTIVITY_RANK] = max(applied[ACTIVITY_RANK], int(offsets[last_i]))
            rows_of_code[code] = entry.row
            queue.bids.add(bid)
            part.dirty.add(bid)
        n = len(codes) if keep is None else len(keep)
        if n < len(codes):
            self.outcomes[ALREADY_APPLIED] += len(codes) - n
        if n:
            queue.segments.append(_RunSeg(run, keep, rows_of_code, pos))
            queue.n += n
            if queue.n >= MAX_RUN:
                self.flush(run.partition)

    def flush(self, partition: int) -> None:
        """Fold a partition's queued activity, in order, with the kernel."""
        queue = self.queues.pop(partition)
        if not queue.n:  # a run whose records were all applied already
            return
        table = self.store[partition].table
        batch, meta = _batch_of(table, queue.segments)
        buf = self.buf
        if buf is None:
            folded = fold_batch(table, batch)
        else:
            folded = fold_batch(table, batch, buf.ensure(self.n + queue.n), self.n)
        counts = np.bincount(folded.outcomes, minlength=len(OUTCOMES)).tolist()
        outcomes = self.outcomes
        for name, c in zip(OUTCOMES, counts, strict=True):
            if c:
                outcomes[name] += c
        if buf is None or folded.n == self.n:  # folded.n: the end of the rows written, from self.n
            return
        idx = np.flatnonzero(folded.outcomes == ck.SCORED)
        topic, offsets, pos, bids = meta
        keys: dict[int, str] = {}  # row -> group key: no profile changes inside a run
        gkeys = []
        for row in batch.rows[idx].tolist():
            gkey = keys.get(row)
            if gkey is None:
                gkey = keys[row] = group_key(table, row)
            gkeys.append(gkey)
        ix = idx.tolist()
        self.scored.append(
            _Scored(
                topic,
                partition,
                offsets[idx],
                batch.times[idx],
                folded.clocks[idx],
                pos[idx],
                [bids[i] for i in ix],
                gkeys,
            )
        )
        self.n = folded.n

    def finish(self) -> None:
        for partition in list(self.queues):
            self.flush(partition)


def _last_of_each(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct codes and the index of each one's last occurrence."""
    uniq, rev = np.unique(codes[::-1], return_index=True)
    return uniq, len(codes) - 1 - rev


def _drop(keep: np.ndarray | None, drop: np.ndarray, n: int) -> np.ndarray:
    """``keep`` (indices kept, None: all of ``n``) without those where ``drop`` is true."""
    if keep is None:
        return np.flatnonzero(~drop)
    return keep[~drop[keep]]


def _batch_of(
    table: ColumnarTable, segments: list[Any]
) -> tuple[ActivityBatch, tuple[str, np.ndarray, np.ndarray, list[str]]]:
    """The kernel's input for a queue's segments, and per event: (topic, offsets, walk
    positions, business ids)."""
    parts: list[ActivityBatch] = []
    offsets: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    bids: list[str] = []
    topic = ""
    for seg in segments:
        if type(seg) is list:
            items = [it for it, _ in seg]
            parts.append(activity_batch(table, [it.event for it in items]))
            offsets.append(np.fromiter((it.offset for it in items), np.int64, len(items)))
            positions.append(np.fromiter((p for _, p in seg), np.int64, len(seg)))
            bids.extend(it.event.business_id for it in items)
            topic = items[0].topic
            continue
        run, keep = seg.run, seg.keep
        cols, lo, hi = run.block.cols, run.lo, run.hi
        sel = slice(lo, hi) if keep is None else keep + lo
        codes = cols.bid_code[sel]
        parts.append(
            ActivityBatch(
                seg.rows_of_code[codes],
                cols.kind[sel],
                cols.event_time[sel],
                cols.user_slot[sel],
                cols.event_key[sel],
                cols.rating[sel],
            )
        )
        offsets.append(run.block.offsets[sel])
        positions.append(seg.pos + (np.arange(hi - lo) if keep is None else keep))
        names = cols.bids
        bids.extend(names[c] for c in codes.tolist())
        topic = run.topic
    if len(parts) == 1:
        return parts[0], (topic, offsets[0], positions[0], bids)
    batch = ActivityBatch(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))
    return batch, (topic, np.concatenate(offsets), np.concatenate(positions), bids)


def fold_items(
    items: Iterable[Decoded | Tombstone | ActivityRun],
    store: dict[int, PartitionState],
    spec: FeatureSpec,
    outcomes: Counter,
    deleted: list[tuple[int, str]] | None = None,
) -> int:
    """Apply events and tombstones (no dead letters) to their partitions' states in order and count
    their outcomes: ``process`` without feature rows or scoring (the rebuild and the replay's
    fold-only prefix). Returns how many items it took."""
    fold = _Fold(store, spec, outcomes, deleted, None)
    n = 0
    for n, item in enumerate(items, 1):
        if isinstance(item, ActivityRun):
            fold.run(item, n)
        else:
            fold.item(item, n)
    fold.finish()
    return n


def process(
    items: Iterable[Decoded | DeadLetter | Tombstone | ActivityRun],
    store: dict[int, PartitionState],
    scorer: Scorer | Routing,
    *,
    spec: FeatureSpec = DEFAULT_SPEC,
    rows: RowBuffer | None = None,
    clock: Callable[[], float] = time.time,
    arm: str = "default",
) -> BatchOutput:
    out = BatchOutput()
    buf = rows if rows is not None else RowBuffer(len(spec.names))
    outcomes = out.outcomes
    fold = _Fold(store, spec, outcomes, out.deleted, buf)
    pos = 0  # records walked: a run takes one position per record
    for item in items:
        if isinstance(item, ActivityRun):
            fold.run(item, pos)
            pos += len(item)
            continue
        if isinstance(item, DeadLetter):
            out.dead_letters.append(item)
            outcomes[DEAD_LETTER] += 1
        else:
            fold.item(item, pos)
        pos += 1
    fold.finish()
    if not fold.scored:
        return out
    X, scored = _in_walk_order(buf.rows[: fold.n], fold.scored)
    if isinstance(scorer, Routing):  # experiment arms: one call per distinct model
        _score_routed(out, scored, X, scorer, clock)
        return out
    t0 = time.perf_counter()
    scores = scorer.score(X)
    out.score_seconds = time.perf_counter() - t0
    out.features = X
    out.predictions = Predictions.of(
        scored, scores, scorer.version, scorer.feature_set_version, int(clock() * 1000), arm, feature_hashes(X)
    )
    return out


def _in_walk_order(X: np.ndarray, chunks: list[_Scored]) -> tuple[np.ndarray, Scored]:
    """The scored rows of every kernel call as one set of columns, in walk order (the calls of
    several partitions interleave)."""
    if len(chunks) == 1:
        c = chunks[0]
        parts = np.full(len(c.offsets), c.partition, np.int64)
        return X, Scored(c.topic, parts, c.offsets, c.event_times, c.as_of, c.bids, c.gkeys)
    pos = np.concatenate([c.pos for c in chunks])
    parts = np.concatenate([np.full(len(c.offsets), c.partition, np.int64) for c in chunks])
    topics = {c.topic for c in chunks}
    if len(topics) != 1:
        raise ValueError(f"one activity topic per batch, got {sorted(topics)}")
    scored = Scored(
        topics.pop(),
        parts,
        np.concatenate([c.offsets for c in chunks]),
        np.concatenate([c.event_times for c in chunks]),
        np.concatenate([c.as_of for c in chunks]),
        [b for c in chunks for b in c.bids],
        [g for c in chunks for g in c.gkeys],
    )
    if bool((pos[1:] >= pos[:-1]).all()):
        return X, scored
    order = np.argsort(pos, kind="stable")
    return X[order], scored.take(order)


def _score_routed(out: BatchOutput, scored: Scored, X: np.ndarray, routing: Any, clock: Callable[[], float]) -> None:
    bids = scored.bids
    arms = [routing.assign(b) for b in bids]
    by_model: dict[int, tuple[Any, list[int]]] = {}  # id(scorer) -> rows: A/A arms share one call
    for i, arm in enumerate(arms):
        sc = routing.scorers[arm]
        by_model.setdefault(id(sc), (sc, []))[1].append(i)
    scores = np.empty(len(bids))
    t0 = time.perf_counter()
    for sc, idx in by_model.values():
        ix = np.asarray(idx)
        scores[ix] = score_rows(sc, X[ix], [bids[i] for i in idx])
    shadow_scores = score_rows(routing.shadow, X, bids) if routing.shadow is not None else None
    out.score_seconds = time.perf_counter() - t0
    out.features = X
    scored_at = int(clock() * 1000)
    hashes = feature_hashes(X)
    parts, offsets = scored.partitions.tolist(), scored.offsets.tolist()
    times, as_of = scored.event_times.tolist(), scored.as_of.tolist()

    def record(i: int, arm: str, sc: Any, score: float) -> dict[str, Any]:
        mv = sc.version
        pid = prediction_id(scored.topic, parts[i], offsets[i], mv, arm)
        return prediction_record(
            scored.topic, parts[i], offsets[i], bids[i], times[i], scored.gkeys[i], as_of[i],
            score, mv, sc.feature_set_version, scored_at, arm, pid, hashes[i],
        )  # fmt: skip

    for i, arm in enumerate(arms):
        rec = record(i, arm, routing.scorers[arm], float(scores[i]))
        (out.holdout if arm == HOLDOUT else out.predictions).append(rec)  # type: ignore[union-attr]
    if shadow_scores is not None:
        out.shadow.extend(record(i, SHADOW, routing.shadow, float(shadow_scores[i])) for i in range(len(bids)))


def process_isolated(
    items: list[Decoded | DeadLetter | Tombstone],
    store: dict[int, PartitionState],
    scorer: Scorer | Routing,
    *,
    spec: FeatureSpec = DEFAULT_SPEC,
    rows: RowBuffer | None = None,
    clock: Callable[[], float] = time.time,
    failed_before: int = 0,
) -> BatchOutput:
    """``process`` one record at a time: the error policy for records.

    A record on which our own code raises (a decodable, valid event that hits a bug) is
    dead-lettered with reason ``unprocessable`` and the exception, and its business's state is put
    back as it was before the record; every other record is processed as ``process`` would.
    The worker takes this path only to re-run a batch whose ``process`` raised, so the price of
    one model call per record is paid rarely. More than ``MAX_CONSECUTIVE_UNPROCESSABLE`` failures
    in a row raise ``ProcessingHalted``: that is a bug hitting everything, and the worker stops.
    ``failed_before``: failures in a row at the end of the previous call, so the count spans
    batches; the result carries it on (``BatchOutput.failed_in_a_row``).
    """
    total = BatchOutput()
    failed_in_a_row = failed_before
    for item in _one_by_one(items):
        saved = _saved_state(item, store)
        try:
            out = process([item], store, scorer, spec=spec, rows=rows, clock=clock)
            failed_in_a_row = 0
        except StaleState:
            raise  # not the record's fault: the worker rebuilds the partition
        except Exception as exc:  # noqa: BLE001 - the policy: any other error is this record's
            failed_in_a_row += 1
            if failed_in_a_row > MAX_CONSECUTIVE_UNPROCESSABLE:
                raise ProcessingHalted(
                    f"{failed_in_a_row} consecutive records failed, the last "
                    f"{item.topic}[{item.partition}]@{item.offset}: {type(exc).__name__}: {exc}"
                ) from exc
            _put_back(item, store, saved, spec)
            out = BatchOutput(dead_letters=[_unprocessable(item, exc)], outcomes=Counter({DEAD_LETTER: 1}))
        _add(total, out)
    total.failed_in_a_row = failed_in_a_row
    return total


def _one_by_one(items: list[Any]) -> Iterator[Any]:
    """The items with bulk-decoded runs taken apart into their records."""
    for item in items:
        if type(item) is ActivityRun:
            yield from item.expand()
        else:
            yield item


def _saved_state(item: Any, store: dict[int, PartitionState]) -> tuple[Any, bytes | None] | None:
    if type(item) is not Decoded:
        return None
    part = store.get(item.partition)
    bid = item.event.business_id
    entry = None if part is None else part.entries.get(bid)
    if entry is None and part is not None and bid in part.encoded:
        entry = part.restored(bid)  # decoded now, so that putting it back keeps it
    if entry is None:
        return (None, None)
    return (tuple(entry.applied), to_bytes(entry.state))


def _put_back(
    item: Any, store: dict[int, PartitionState], saved: tuple[Any, bytes | None] | None, spec: FeatureSpec
) -> None:
    if saved is None:
        return
    part = store[item.partition]
    bid = item.event.business_id
    applied, raw = saved
    if raw is None:
        part.entries.pop(bid, None)  # the failed record created it
        part.dirty.discard(bid)
        return
    entry = part.entries[bid]
    entry.state = from_bytes(raw, spec)
    entry.applied[:] = list(applied)


def _unprocessable(item: Any, exc: Exception) -> DeadLetter:
    where = f"{item.topic}[{item.partition}]@{item.offset}"
    key = item.event.business_id.encode() if type(item) is Decoded else item.business_id.encode()
    return DeadLetter(
        item.topic,
        item.partition,
        item.offset,
        key,
        None,
        getattr(getattr(item, "event", None), "event_time", -1),
        UNPROCESSABLE,
        f"{where}: {type(exc).__name__}: {exc}",
    )


def _add(total: BatchOutput, out: BatchOutput) -> None:
    total.predictions += out.predictions
    total.holdout += out.holdout
    total.shadow += out.shadow
    total.dead_letters += out.dead_letters
    total.deleted += out.deleted
    total.outcomes.update(out.outcomes)
    total.score_seconds += out.score_seconds
    if out.features is not None and len(out.predictions):
        rows = np.array(out.features[: len(out.predictions)], dtype=np.float32)
        total.features = rows if total.features is None else np.vstack([total.features, rows])
