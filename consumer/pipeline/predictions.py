"""Predictions: the record a scoring moment becomes, its id and its feature hash.

``prediction_record`` builds the one dict shape every prediction has (the fields of
``schemas/prediction.avsc``, in its order), whether ``process`` scored it with one model, an experiment arm, the
hold-out or the shadow model. ``prediction_id`` makes re-deliveries and replays idempotent: the same
input record scored by the same model version gets the same id, in any run, on any worker.
``feature_hash`` is what the parity check compares between the worker and the trainer instead of the
45-float row itself.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import numpy as np

from consumer.pipeline.decode import Decoded


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


def prediction_record(
    item: Decoded,
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
    event = item.event
    return {
        "prediction_id": pid,
        "business_id": event.business_id,
        "score": score,
        "model_version": model_version,
        "feature_set_version": feature_set_version,
        "source_topic": item.topic,
        "source_partition": item.partition,
        "source_offset": item.offset,
        "event_time": event.event_time,
        "scored_at": scored_at,
        "group_key": group_key,
        "arm": arm,
        "feature_hash": fhash,
        "as_of": as_of,
    }
