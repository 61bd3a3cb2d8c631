"""Bulk Avro encoding of prediction records: a batch of predictions as columns, encoded in one compiled call.

``encode_predictions`` gives, for each row, exactly the bytes ``AvroCodec(registry, "Prediction").encode``
gives for the same record (``schemas/prediction.avsc``, Confluent wire format), without a fastavro call
per record. Strings are encoded to UTF-8 in Python, one ``str.encode`` per column: a column's values are
joined with NUL separators (the compiled scan then finds where each value ends), and a column that
holds one value for every row is encoded once. A column in which some value itself contains NUL falls
back to one ``encode`` per value. The numba kernel writes every record into one buffer; each record
is then read out of it as its own ``bytes``.

Why numba: writing varints and copying string bytes is a sequential byte loop per record that numpy
cannot vectorise, and fastavro's writer pays a Python-level call, a dict walk and a BytesIO per record.

``python -m consumer.pipeline.predencode`` measures both paths on realistic records.
"""

from __future__ import annotations

import io
import operator
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numba import njit

from consumer.pipeline.codec import HEADER, MAGIC, AvroCodec, FileSchemaRegistry

_SEP = "\x00"

# Worst case per record beside the string bytes: header, double, union branch, five longs and eight
# string lengths as 10-byte varints.
_FIXED_BOUND = HEADER.size + 8 + 1 + 5 * 10 + 8 * 10


class PredictionColumns(NamedTuple):
    """``n`` predictions as columns, in the field order of ``schemas/prediction.avsc``."""

    prediction_id: list[str]
    business_id: list[str]
    score: np.ndarray  # float64[n]
    model_version: list[str]  # per row (arms can differ); the same str n times is encoded once
    feature_set_version: list[str]
    source_topic: str  # one topic for the whole batch
    source_partition: np.ndarray  # int64[n]
    source_offset: np.ndarray  # int64[n]
    event_time: np.ndarray  # int64[n]
    scored_at: int
    group_key: list[str]
    arm: list[str]
    feature_hash: list[str]
    as_of: np.ndarray  # int64[n], never null


class _Strings(NamedTuple):
    """UTF-8 values of one string column: value ``k`` is ``blob[bounds[k] : bounds[k + 1] - 1]``.

    One value serves every row; otherwise there is one value per row."""

    blob: np.ndarray  # uint8
    bounds: np.ndarray  # int64[values + 1]


@njit(cache=True)
def _separator_bounds(blob: np.ndarray, values: int) -> np.ndarray:
    """Bounds of ``values`` NUL-separated values; ``bounds[0] == -1`` when the NUL count disagrees
    (a value contained NUL)."""
    bounds = np.empty(values + 1, np.int64)
    bounds[0] = 0
    k = 1
    for p in range(blob.size):
        if blob[p] == 0:
            if k == values:
                bounds[0] = -1
                return bounds
            bounds[k] = p + 1
            k += 1
    if k != values:
        bounds[0] = -1
    bounds[values] = blob.size + 1
    return bounds


@njit(cache=True, inline="always")
def _put_long(out: np.ndarray, pos: int, v: np.int64) -> int:
    u = np.uint64((v << 1) ^ (v >> 63))  # zigzag
    while u >= np.uint64(0x80):
        out[pos] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        u >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(u)
    return pos + 1


@njit(cache=True, inline="always")
def _put_str(out: np.ndarray, pos: int, col: tuple[np.ndarray, np.ndarray], row: int) -> int:
    blob, bounds = col
    k = row if bounds.size > 2 else 0
    start = bounds[k]
    length = bounds[k + 1] - 1 - start
    pos = _put_long(out, pos, np.int64(length))
    return _put_bytes(out, pos, blob, start, length)


@njit(cache=True, inline="always")
def _put_bytes(out: np.ndarray, pos: int, src: np.ndarray, start: int, length: int) -> int:
    # An explicit loop: numba's slice assignment costs ~40 ns a call in view and shape checks.
    for j in range(length):
        out[pos + j] = src[start + j]
    return pos + length


@njit(cache=True)
def _encode_kernel(header, strs, score_bytes, partition, offset, event_time, scored_at, as_of, out):
    """Every record into ``out``, back to back; returns each record's end offset.

    ``strs``: prediction_id, business_id, model_version, feature_set_version, source_topic, group_key,
    arm, feature_hash (as ``_Strings``); ``score_bytes``: the scores as little-endian float64 bytes."""
    n = partition.size
    ends = np.empty(n, np.int64)
    pos = 0
    for i in range(n):
        pos = _put_bytes(out, pos, header, 0, header.size)
        pos = _put_str(out, pos, strs[0], i)
        pos = _put_str(out, pos, strs[1], i)
        pos = _put_bytes(out, pos, score_bytes, 8 * i, 8)
        pos = _put_str(out, pos, strs[2], i)
        pos = _put_str(out, pos, strs[3], i)
        pos = _put_str(out, pos, strs[4], i)
        pos = _put_long(out, pos, partition[i])
        pos = _put_long(out, pos, offset[i])
        pos = _put_long(out, pos, event_time[i])
        pos = _put_long(out, pos, scored_at)
        pos = _put_str(out, pos, strs[5], i)
        pos = _put_str(out, pos, strs[6], i)
        pos = _put_str(out, pos, strs[7], i)
        out[pos] = 2  # as_of union: branch 1 (long), zigzag
        pos = _put_long(out, pos + 1, as_of[i])
        ends[i] = pos
    return ends


def _one(value: str) -> _Strings:
    raw = value.encode()
    return _Strings(np.frombuffer(raw, np.uint8), np.array([0, len(raw) + 1], np.int64))


def _per_row(values: list[str]) -> _Strings:
    blob = np.frombuffer(_SEP.join(values).encode(), np.uint8)
    bounds = _separator_bounds(blob, len(values))
    if bounds[0] == 0:
        return _Strings(blob, bounds)
    encoded = [v.encode() for v in values]  # some value holds NUL: its bytes cannot be found by scanning
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    bounds = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(lengths + 1, out=bounds[1:])
    return _Strings(np.frombuffer(_SEP.encode().join(encoded), np.uint8), bounds)


def _maybe_repeated(values: list[str]) -> _Strings:
    # list.count compares by identity first: the same str object n times costs well under 1 ns a row.
    # Several values (arms) are joined per row: a dict factorization measured 25-35 ns a row, the join 8.
    return _one(values[0]) if values.count(values[0]) == len(values) else _per_row(values)


def _string_bytes(col: _Strings, n: int) -> int:
    return col.blob.size if col.bounds.size > 2 else n * col.blob.size


def _ints(values: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":  # a float would be truncated silently, where fastavro refuses it
        raise TypeError(f"{name}: dtype {arr.dtype}, expected integers")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: shape {arr.shape}, expected ({n},)")
    return arr


def encode_predictions(cols: PredictionColumns, schema_id: int) -> list[bytes]:
    """Each row of ``cols`` as ``AvroCodec.encode`` writes its record with ``schema_id`` (a list of ``n`` bytes)."""
    n = len(cols.prediction_id)
    if n == 0:
        return []
    for name in ("business_id", "model_version", "feature_set_version", "group_key", "arm", "feature_hash"):
        if len(getattr(cols, name)) != n:
            raise ValueError(f"{name}: {len(getattr(cols, name))} values, expected {n}")
    strs = (
        _per_row(cols.prediction_id),
        _per_row(cols.business_id),
        _maybe_repeated(cols.model_version),
        _maybe_repeated(cols.feature_set_version),
        _one(cols.source_topic),
        _per_row(cols.group_key),
        _maybe_repeated(cols.arm),
        _per_row(cols.feature_hash),
    )
    score = np.ascontiguousarray(cols.score, dtype="<f8")
    if score.shape != (n,):
        raise ValueError(f"score: shape {score.shape}, expected ({n},)")
    header = np.frombuffer(HEADER.pack(MAGIC, schema_id), np.uint8)
    out = np.empty(n * _FIXED_BOUND + sum(_string_bytes(s, n) for s in strs), np.uint8)
    ends = _encode_kernel(
        header,
        strs,
        score.view(np.uint8),
        _ints(cols.source_partition, n, "source_partition"),
        _ints(cols.source_offset, n, "source_offset"),
        _ints(cols.event_time, n, "event_time"),
        np.int64(operator.index(cols.scored_at)),
        _ints(cols.as_of, n, "as_of"),
        out,
    )
    return _split(out, ends)


def _split(out: np.ndarray, ends: np.ndarray) -> list[bytes]:
    """The records of ``out`` (ending at ``ends``) as ``bytes`` each.

    ``BytesIO.read`` driven by ``map``: one C call per record, no slice object or bytecode per record
    (measured against ``bytes(memoryview)`` and ``bytes`` slices by the module's benchmark)."""
    return list(map(io.BytesIO(out.data[: ends[-1]]).read, np.diff(ends, prepend=0).tolist()))


def _realistic(n: int, arms: tuple[str, ...], seed: int = 7) -> tuple[PredictionColumns, list[dict]]:
    """``n`` predictions as the worker makes them (real ids and feature hashes), as columns and records."""
    from consumer.pipeline.predictions import feature_hashes, prediction_id  # predictions imports this module

    rng = np.random.default_rng(seed)
    markets = ["Phoenix, AZ|Restaurants", "Tempe, AZ|Bars", "Montréal, QC|Cafés", "Zürich|Bäckerei", "unknown|unknown"]
    versions = {arm: f"20261130T0815{i:02d}-3f2a9c1b" for i, arm in enumerate(arms)}
    bids = [f"b{i:06d}" for i in rng.integers(0, 200_000, n).tolist()]
    parts, offs = rng.integers(0, 12, n), rng.integers(0, 50_000_000, n)
    arm = [arms[a] for a in rng.integers(0, len(arms), n).tolist()]
    mv = [versions[a] for a in arm]
    topic = "activity"
    cols = PredictionColumns(
        prediction_id=[
            prediction_id(topic, p, o, v, a) for p, o, v, a in zip(parts.tolist(), offs.tolist(), mv, arm, strict=True)
        ],
        business_id=bids,
        score=rng.random(n),
        model_version=mv,
        feature_set_version=["9c41d0e2b7aa5f13"] * n,
        source_topic=topic,
        source_partition=parts,
        source_offset=offs,
        event_time=1_796_000_000_000 + rng.integers(0, 86_400_000, n),
        scored_at=1_796_086_400_123,
        group_key=[markets[m] for m in rng.integers(0, len(markets), n).tolist()],
        arm=arm,
        feature_hash=feature_hashes(rng.random((n, 45))),
        as_of=1_796_000_000_000 + rng.integers(0, 86_400_000, n),
    )
    return cols, records(cols)


def records(cols: PredictionColumns) -> list[dict]:
    """The rows of ``cols`` as the dicts ``prediction_record`` makes (what ``AvroCodec.encode`` takes)."""
    batch = {"source_topic": cols.source_topic, "scored_at": cols.scored_at}
    rows = {f: v.tolist() if isinstance(v, np.ndarray) else v for f, v in cols._asdict().items() if f not in batch}
    return [
        {f: batch[f] if f in batch else rows[f][i] for f in PredictionColumns._fields}
        for i in range(len(cols.prediction_id))
    ]


def _split_memoryview(out: np.ndarray, ends: np.ndarray) -> list[bytes]:
    view, e = out.data, ends.tolist()
    return [bytes(view[a:b]) for a, b in zip([0, *e], e, strict=False)]


def _split_bytes(out: np.ndarray, ends: np.ndarray) -> list[bytes]:
    data, e = out[: ends[-1]].tobytes(), ends.tolist()
    return [data[a:b] for a, b in zip([0, *e], e, strict=False)]


def _best_ns(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best of ``repeat`` runs, in ns per record; results are kept alive so their freeing is not timed."""
    best, keep = float("inf"), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        keep.append(fn())
        best = min(best, time.perf_counter() - t0)
        keep = keep[-1:]
    return best / n * 1e9


def main(n: int = 50_000, repeat: int = 7) -> None:
    codec = AvroCodec(FileSchemaRegistry(), "Prediction")
    for label, arms in (("one arm", ("default",)), ("three arms", ("control", "treatment", "holdout"))):
        cols, recs = _realistic(n, arms)
        assert encode_predictions(cols, codec.schema_id) == [codec.encode(r) for r in recs]
        per_record = _best_ns(lambda: [codec.encode(r) for r in recs], n, repeat)  # noqa: B023
        bulk = _best_ns(lambda: encode_predictions(cols, codec.schema_id), n, repeat)  # noqa: B023
        print(
            f"{label}, {n} records: fastavro per record {per_record / 1000:.3f} us/record, "
            f"bulk {bulk / 1000:.3f} us/record ({per_record / bulk:.1f}x)"
        )
    out = np.frombuffer(b"".join(encode_predictions(cols, codec.schema_id)), np.uint8)
    ends = np.cumsum([len(b) for b in encode_predictions(cols, codec.schema_id)])
    for name, split in (
        ("BytesIO.read map", _split),
        ("bytes(memoryview) slices", _split_memoryview),
        ("bytes slices", _split_bytes),
    ):
        print(f"read-out {name}: {_best_ns(lambda: split(out, ends), n, repeat):.0f} ns/record")  # noqa: B023


if __name__ == "__main__":
    main()
