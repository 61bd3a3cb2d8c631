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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from consumer.errors import ProcessingHalted, StaleState
from consumer.pipeline.arms import HOLDOUT, SHADOW, Routing, score_rows
from consumer.pipeline.decode import DeadLetter, Decoded
from consumer.pipeline.predictions import feature_hashes, prediction_id, prediction_record
from consumer.pipeline.store import PartitionState
from features import columnar_kernels as ck
from features.columnar import activity_batch, fold_batch, fold_business, group_key
from features.events import BusinessEvent
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
    predictions: list[dict[str, Any]] = field(default_factory=list)
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


class _Fold:
    """One walk over ordered items: the per-item checks (restore, deletions, applied offsets) in
    Python, activity events queued per partition and folded by the compiled kernel
    (``features.columnar.fold_batch``) in one call per partition and run.

    A partition's queue is folded before anything that must see its states as of that point: a
    business event of a business with queued activity (folded on its row's profile,
    ``fold_business``), a tombstone (the deleted row is reset when the business comes back), and
    the end of the walk. Rows are independent, so the order of the partitions' runs does not
    matter; within a partition the kernel keeps the merge order. With ``buf``, the kernel writes
    the feature row of each scoring moment into it, and ``scored`` holds (item, group key, as of,
    position in the walk) per row."""

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
        # partition -> (items queued for the kernel, their positions, businesses with queued activity)
        self.queues: dict[int, tuple[list[Decoded], list[int], set[str]]] = {}
        self.scored: list[tuple[Decoded, str, int, int]] = []
        self.n = 0  # feature rows written into buf

    def part(self, partition: int) -> PartitionState:
        part = self.store.get(partition)
        if part is None:
            part = self.store[partition] = PartitionState(partition, spec=self.spec)
        return part

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
            if queue is not None and bid in queue[2]:
                self.flush(item.partition)
            fold_business(part.table, event)
            outcomes[BUSINESS_UPDATE] += 1
        else:
            queue = self.queues.get(item.partition)
            if queue is None:
                queue = self.queues[item.partition] = ([], [], set())
            queue[0].append(item)
            queue[1].append(pos)
            queue[2].add(bid)
            if len(queue[0]) >= MAX_RUN:
                self.flush(item.partition)
        entry.applied[item.rank] = item.offset
        part.dirty.add(bid)

    def flush(self, partition: int) -> None:
        """Fold a partition's queued activity, in order, with the kernel."""
        items, positions, _ = self.queues.pop(partition)
        table = self.store[partition].table
        batch = activity_batch(table, [it.event for it in items])  # type: ignore[misc]  # queued: activity only
        buf = self.buf
        if buf is None:
            folded = fold_batch(table, batch)
        else:
            folded = fold_batch(table, batch, buf.ensure(self.n + len(items)), self.n)
        counts = np.bincount(folded.outcomes, minlength=len(OUTCOMES)).tolist()
        outcomes = self.outcomes
        for name, c in zip(OUTCOMES, counts, strict=True):
            if c:
                outcomes[name] += c
        if buf is None or folded.n == self.n:  # folded.n: the end of the rows written, from self.n
            return
        idx = np.flatnonzero(folded.outcomes == ck.SCORED)
        keys: dict[int, str] = {}  # row -> group key: no profile changes inside a run
        scored = self.scored
        for i, row, t in zip(idx.tolist(), batch.rows[idx].tolist(), folded.clocks[idx].tolist(), strict=True):
            gkey = keys.get(row)
            if gkey is None:
                gkey = keys[row] = group_key(table, row)
            scored.append((items[i], gkey, t, positions[i]))
        self.n = folded.n

    def finish(self) -> None:
        for partition in list(self.queues):
            self.flush(partition)


def fold_items(
    items: Iterable[Decoded | Tombstone],
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
        fold.item(item, n)
    fold.finish()
    return n


def process(
    items: Iterable[Decoded | DeadLetter | Tombstone],
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
    for pos, item in enumerate(items):
        if isinstance(item, DeadLetter):
            out.dead_letters.append(item)
            outcomes[DEAD_LETTER] += 1
            continue
        fold.item(item, pos)
    fold.finish()
    if not fold.scored:
        return out
    n = fold.n
    X = buf.rows[:n]
    scored = fold.scored
    positions = [s[3] for s in scored]
    if any(a > b for a, b in zip(positions, positions[1:], strict=False)):  # runs of several partitions
        order = np.argsort(positions, kind="stable")
        X = X[order]
        scored = [scored[i] for i in order.tolist()]
    pending = [(item, gkey, t) for item, gkey, t, _ in scored]
    if isinstance(scorer, Routing):  # experiment arms: one call per distinct model
        _score_routed(out, pending, X, scorer, clock)
        return out
    t0 = time.perf_counter()
    scores = scorer.score(X)
    out.score_seconds = time.perf_counter() - t0
    out.features = X
    scored_at = int(clock() * 1000)
    mv, fsv = scorer.version, scorer.feature_set_version
    preds = out.predictions
    hashes = feature_hashes(X)
    for (item, gkey, t), score, fhash in zip(pending, scores.tolist(), hashes, strict=True):
        pid = prediction_id(item.topic, item.partition, item.offset, mv)  # this path's ids never carry the arm
        preds.append(prediction_record(item, gkey, t, score, mv, fsv, scored_at, arm, pid, fhash))
    return out


def _score_routed(
    out: BatchOutput, pending: list[tuple[Decoded, str, int]], X: np.ndarray, routing: Any, clock: Callable[[], float]
) -> None:
    bids = [item.event.business_id for item, _, _ in pending]
    arms = [routing.assign(b) for b in bids]
    by_model: dict[int, tuple[Any, list[int]]] = {}  # id(scorer) -> rows: A/A arms share one call
    for i, arm in enumerate(arms):
        sc = routing.scorers[arm]
        by_model.setdefault(id(sc), (sc, []))[1].append(i)
    scores = np.empty(len(pending))
    t0 = time.perf_counter()
    for sc, idx in by_model.values():
        ix = np.asarray(idx)
        scores[ix] = score_rows(sc, X[ix], [bids[i] for i in idx])
    shadow_scores = score_rows(routing.shadow, X, bids) if routing.shadow is not None else None
    out.score_seconds = time.perf_counter() - t0
    out.features = X
    scored_at = int(clock() * 1000)
    hashes = feature_hashes(X)

    def record(i: int, arm: str, sc: Any, score: float) -> dict[str, Any]:
        item, gkey, t = pending[i]
        mv = sc.version
        pid = prediction_id(item.topic, item.partition, item.offset, mv, arm)
        return prediction_record(item, gkey, t, score, mv, sc.feature_set_version, scored_at, arm, pid, hashes[i])

    for i, arm in enumerate(arms):
        rec = record(i, arm, routing.scorers[arm], float(scores[i]))
        (out.holdout if arm == HOLDOUT else out.predictions).append(rec)
    if shadow_scores is not None:
        out.shadow.extend(record(i, SHADOW, routing.shadow, float(shadow_scores[i])) for i in range(len(pending)))


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
    for item in items:
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
