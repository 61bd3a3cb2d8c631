"""Predictions: the record a scoring moment becomes, its id and its feature hash.

``prediction_record`` builds the one dict shape every prediction has (the fields of
``schemas/prediction.avsc``, in its order), whether ``process`` scored it with one model, an experiment arm, the
hold-out or the shadow model. ``prediction_id`` makes re-deliveries and replays idempotent: the same
input record scored by the same model version gets the same id, in any run, on any worker.
``feature_hash`` is what the parity check compares between the worker and the trainer instead of the
45-float row itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from hashlib import blake2b
from typing import Any, NamedTuple, overload

import numpy as np

from consumer.pipeline import hashes
from consumer.pipeline.codec import AvroCodec
from consumer.pipeline.predencode import PredictionColumns, encode_predictions


def prediction_id(topic: str, partition: int, offset: int, model_version: str, arm: str = "default") -> str:
    """Same input record + same model version (+ same arm) → same id, in any run, on any worker.

    The arm enters only when it is not ``default``: ids of the classic single-arm worker are
    unchanged, and an A/A test (one model in two arms) or a shadow of the promoted model still
    gets distinct ids."""
    key = f"{topic}\x1f{partition}\x1f{offset}\x1f{model_version}"
    if arm != "default":
        key += f"\x1f{arm}"
    return blake2b(key.encode(), digest_size=16).hexdigest()


def feature_hash(row: np.ndarray) -> str:
    """8-byte blake2b of a feature row as float32: equal rows, equal hashes, in any process."""
    return blake2b(np.ascontiguousarray(row, dtype=np.float32).tobytes(), digest_size=8).hexdigest()


def feature_hashes(X: np.ndarray) -> list[str]:
    """``feature_hash`` of every row of ``X``, from one copy of its bytes (no numpy view per row)."""
    raw = np.ascontiguousarray(X, dtype=np.float32).tobytes()
    width = 4 * X.shape[1]
    return [blake2b(raw[i * width : (i + 1) * width], digest_size=8).hexdigest() for i in range(X.shape[0])]


class Scored(NamedTuple):
    """A batch's scoring moments as columns, in walk order: the input record (topic, partition,
    offset, event time, business) and what its features know (``as_of``, ``group_key``)."""

    topic: str
    partitions: np.ndarray  # int64
    offsets: np.ndarray  # int64
    event_times: np.ndarray  # int64
    as_of: np.ndarray  # int64
    bids: list[str]
    gkeys: list[str]

    def take(self, idx: np.ndarray) -> Scored:
        ix = idx.tolist()
        return Scored(
            self.topic,
            self.partitions[idx],
            self.offsets[idx],
            self.event_times[idx],
            self.as_of[idx],
            [self.bids[i] for i in ix],
            [self.gkeys[i] for i in ix],
        )


def prediction_ids(scored: Scored, model_version: str, arm: str = "default") -> list[str]:
    """``prediction_id`` of every scoring moment, in one compiled call (``consumer.pipeline.hashes``)."""
    return hashes.prediction_ids(scored.topic, scored.partitions, scored.offsets, model_version, arm)


class Predictions(Sequence[dict[str, Any]]):
    """A batch's predictions by one model and arm, held as columns (``PredictionColumns``): encoded
    in bulk by ``encode`` (``consumer.pipeline.predencode``), counted and observed from arrays; the
    records as dicts (``prediction_record``'s shape) are made only when something reads them."""

    __slots__ = ("columns", "_records")

    def __init__(self, columns: PredictionColumns):
        self.columns = columns
        self._records: list[dict[str, Any]] | None = None

    @classmethod
    def of(
        cls,
        scored: Scored,
        scores: np.ndarray,
        model_version: str,
        feature_set_version: str,
        scored_at: int,
        arm: str,
        hashes: list[str],
    ) -> Predictions:
        n = len(scored.bids)
        return cls(
            PredictionColumns(
                prediction_ids(scored, model_version),  # this path's ids never carry the arm
                scored.bids,
                np.asarray(scores, np.float64),
                [model_version] * n,
                [feature_set_version] * n,
                scored.topic,
                scored.partitions,
                scored.offsets,
                scored.event_times,
                scored_at,
                scored.gkeys,
                [arm] * n,
                hashes,
                scored.as_of,
            )
        )

    @property
    def scores(self) -> np.ndarray:
        return self.columns.score

    @property
    def event_times(self) -> np.ndarray:
        return self.columns.event_time

    def encode(self, schema_id: int) -> list[bytes]:
        return encode_predictions(self.columns, schema_id)

    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            c = self.columns
            self._records = [
                prediction_record(c.source_topic, p, o, bid, et, gk, a, sc, mv, fsv, c.scored_at, arm, pid, fh)
                for p, o, bid, et, gk, a, sc, mv, fsv, arm, pid, fh in zip(
                    c.source_partition.tolist(),
                    c.source_offset.tolist(),
                    c.business_id,
                    c.event_time.tolist(),
                    c.group_key,
                    c.as_of.tolist(),
                    c.score.tolist(),
                    c.model_version,
                    c.feature_set_version,
                    c.arm,
                    c.prediction_id,
                    c.feature_hash,
                    strict=True,
                )
            ]
        return self._records

    def __len__(self) -> int:
        return len(self.columns.business_id)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.records()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Predictions | list):
            return self.records() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-by-content like the list it stands for

    def __add__(self, other: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.records() + list(other)

    def __radd__(self, other: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(other) + self.records()

    def __repr__(self) -> str:
        return f"Predictions({len(self)} rows)"


def encoded(preds: Sequence[dict[str, Any]], codec: AvroCodec) -> tuple[list[bytes], list[bytes], list[int]]:
    """The records of ``preds`` as Kafka keys, values (``codec``: the Prediction codec) and source
    partitions; a ``Predictions`` batch is encoded in one call."""
    if isinstance(preds, Predictions):
        c = preds.columns
        keys = [b.encode() for b in c.business_id]
        return keys, preds.encode(codec.schema_id), c.source_partition.tolist()
    encode = codec.encode
    return (
        [p["business_id"].encode() for p in preds],
        [encode(p) for p in preds],
        [p["source_partition"] for p in preds],
    )


def prediction_record(
    topic: str,
    partition: int,
    offset: int,
    business_id: str,
    event_time: int,
    group_key: str,
    as_of: int,
    score: float,
    model_version: str,
    feature_set_version: str,
    scored_at: int,
    arm: str,
    pid: str,
    fhash: str,
) -> dict[str, Any]:
    """The prediction of one scored input record (``pid``: its ``prediction_id``; ``fhash``: its ``feature_hash``)."""
    return {
        "prediction_id": pid,
        "business_id": business_id,
        "score": score,
        "model_version": model_version,
        "feature_set_version": feature_set_version,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "event_time": event_time,
        "scored_at": scored_at,
        "group_key": group_key,
        "arm": arm,
        "feature_hash": fhash,
        "as_of": as_of,
    }
