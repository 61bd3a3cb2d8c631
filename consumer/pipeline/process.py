"""Process: the broker-free core. Ordered events + state + scorer → predictions.

``process(items, store, scorer)`` folds each event into its business's state with the shared
``features.scoring.apply`` rule, extracts one feature row per scoring moment, makes ONE vectorised
model call for the whole batch, and returns the prediction records, the dead letters, and a tally
of every item's outcome. The Kafka loop in ``worker`` is a thin shell around it; tests, replays
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
from consumer.pipeline.store import Entry, PartitionState
from features.extract import extract_into, group_key
from features.scoring import SCORED, apply, as_of
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import from_bytes, new_state, to_bytes

ALREADY_APPLIED = "already_applied"
DEAD_LETTER = "dead_letter"
UNPROCESSABLE = "unprocessable"  # dead-letter reason: our code raised on a decodable record
# More consecutive unprocessable records than this is a bug hitting everything, not bad input.
MAX_CONSECUTIVE_UNPROCESSABLE = 50
BUSINESS_DELETED = "business_deleted"


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


def fold_item(
    item: Decoded | Tombstone,
    store: dict[int, PartitionState],
    spec: FeatureSpec,
    outcomes: Counter,
    deleted: list[tuple[int, str]] | None = None,
) -> tuple[Entry | None, str]:
    """Apply one event or tombstone to its partition's state and count its outcome.

    The one state transition of the worker, shared by ``process`` and the replay's fold-only
    prefix. Returns the entry it changed (None for a tombstone or an already-applied record).
    """
    part = store.get(item.partition)
    if part is None:
        part = store[item.partition] = PartitionState(item.partition, spec=spec)
    if isinstance(item, Tombstone):
        dropped = part.delete(item.business_id, item.offset)
        if dropped is None:
            outcomes[ALREADY_APPLIED] += 1
            return None, ALREADY_APPLIED
        if dropped and deleted is not None:
            deleted.append((item.partition, item.business_id))
        outcomes[BUSINESS_DELETED] += 1
        return None, BUSINESS_DELETED
    event = item.event
    bid = event.business_id
    entry = part.entries.get(bid)
    if entry is None:
        entry = part.restored(bid) if part.encoded else None
        if entry is None:
            if part.deleted and part.deleted_after(bid, item.rank, item.offset):
                outcomes[ALREADY_APPLIED] += 1  # folded into a state that a later tombstone dropped
                return None, ALREADY_APPLIED
            entry = part.new_entry(bid, new_state(bid, spec))
    if item.offset <= entry.applied[item.rank]:  # a new entry's applied offsets are -1
        outcomes[ALREADY_APPLIED] += 1
        return None, ALREADY_APPLIED
    entry.state, outcome = apply(entry.state, event, spec)
    entry.applied[item.rank] = item.offset
    part.dirty.add(bid)
    outcomes[outcome] += 1
    return entry, outcome


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
    pending: list[tuple[Decoded, str, int]] = []  # (item, group key, as_of)
    outcomes = out.outcomes
    for item in items:
        if isinstance(item, DeadLetter):
            out.dead_letters.append(item)
            outcomes[DEAD_LETTER] += 1
            continue
        entry, outcome = fold_item(item, store, spec, outcomes, out.deleted)
        if outcome is SCORED:
            state = entry.state  # type: ignore[union-attr]  # a scored item always has its entry
            row = buf.ensure(len(pending) + 1)[len(pending)]
            t = as_of(state)
            extract_into(state, t, row, spec)
            pending.append((item, group_key(state), t))  # type: ignore[arg-type]  # only events are scored
    if not pending:
        return out
    n = len(pending)
    X = buf.rows[:n]
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
    entry = None if part is None else part.entries.get(item.event.business_id)
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
