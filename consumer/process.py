"""Process: the broker-free core. Ordered events + state + scorer → predictions.

``process(items, store, scorer)`` folds each event into its business's state with the shared
``features.scoring.apply`` rule, extracts one feature row per scoring moment, makes ONE vectorised
model call for the whole batch, and returns the prediction records, the dead letters, and a tally
of every item's outcome. The Kafka loop in ``worker`` is a thin shell around it; tests, replays
and the parity check call it directly.

Items already reflected in a restored state (offset ≤ the state's applied offset for that topic)
are ``already_applied``: their predictions were acknowledged before the crash that left their
offsets uncommitted, and folding them again would double-count.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from consumer.decode import Decoded, DeadLetter
from consumer.statestore import Entry, PartitionState
from features.extract import extract_into, group_key
from features.scoring import SCORED, apply, as_of
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import new_state

ALREADY_APPLIED = "already_applied"
DEAD_LETTER = "dead_letter"
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


def prediction_id(topic: str, partition: int, offset: int, model_version: str) -> str:
    """Same input record + same model version → same id, in any run, on any worker."""
    return blake2b(f"{topic}\x1f{partition}\x1f{offset}\x1f{model_version}".encode(), digest_size=16).hexdigest()


def feature_hash(row: np.ndarray) -> str:
    return blake2b(np.ascontiguousarray(row, dtype=np.float32).tobytes(), digest_size=8).hexdigest()


@dataclass
class BatchOutput:
    predictions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    features: np.ndarray | None = None  # one float32 row per prediction, same order
    deleted: list[tuple[int, str]] = field(default_factory=list)  # (partition, business_id)
    score_seconds: float = 0.0


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


def process(
    items: Iterable[Decoded | DeadLetter | Tombstone],
    store: dict[int, PartitionState],
    scorer: Scorer,
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
        if type(item) is DeadLetter:
            out.dead_letters.append(item)
            outcomes[DEAD_LETTER] += 1
            continue
        part = store.get(item.partition)
        if part is None:
            part = store[item.partition] = PartitionState(item.partition)
        if type(item) is Tombstone:
            if part.entries.pop(item.business_id, None) is not None:
                part.dirty.add(item.business_id)
                out.deleted.append((item.partition, item.business_id))
            outcomes[BUSINESS_DELETED] += 1
            continue
        event = item.event
        bid = event.business_id
        entry = part.entries.get(bid)
        if entry is None:
            entry = part.entries[bid] = Entry(new_state(bid, spec))
        elif item.offset <= entry.applied[item.rank]:
            outcomes[ALREADY_APPLIED] += 1
            continue
        entry.state, outcome = apply(entry.state, event, spec)
        entry.applied[item.rank] = item.offset
        part.dirty.add(bid)
        outcomes[outcome] += 1
        if outcome is SCORED:
            state = entry.state
            row = buf.ensure(len(pending) + 1)[len(pending)]
            t = as_of(state)
            extract_into(state, t, row, spec)
            pending.append((item, group_key(state), t))
    if not pending:
        return out
    n = len(pending)
    X = buf.rows[:n]
    t0 = time.perf_counter()
    scores = scorer.score(X)
    out.score_seconds = time.perf_counter() - t0
    out.features = X
    scored_at = int(clock() * 1000)
    mv, fsv = scorer.version, scorer.feature_set_version
    preds = out.predictions
    for i, (item, gkey, _t) in enumerate(pending):
        preds.append(
            {
                "prediction_id": prediction_id(item.topic, item.partition, item.offset, mv),
                "business_id": item.event.business_id,
                "score": float(scores[i]),
                "model_version": mv,
                "feature_set_version": fsv,
                "source_topic": item.topic,
                "source_partition": item.partition,
                "source_offset": item.offset,
                "event_time": item.event.event_time,
                "scored_at": scored_at,
                "group_key": gkey,
                "arm": arm,
                "feature_hash": feature_hash(X[i]),
            }
        )
    return out
