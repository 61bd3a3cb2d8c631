"""Columnar decoding of one poll batch of activity records (numba ``njit``, cached on disk).

:func:`decode_activity` reads the Confluent wire format of ``activity_event.avsc`` straight into
arrays, with no Avro library and no Python object per record. It is a shortcut, not a second
decoder: a record is marked ``fast`` only when it is in the plain shape every well-behaved producer
writes (the packaged schema id, canonical varints, ASCII strings, every ``ActivityEvent.validate``
rule met, key equal to business_id), so that :meth:`Decoder.decode` would return a ``Decoded``
with exactly these values. Anything else (an older or newer writer schema, tombstones, bad or odd
bytes, invalid events) is left to the caller's slow path, which decides ``Decoded`` or
``DeadLetter`` as before.

ASCII only: then a string's byte length is its ``str`` length (the ``MAX_ID_LEN`` rule holds on
bytes) and UTF-8 decoding cannot fail. Canonical varints of at most 9 bytes only: every legal
value fits, and no overflow or padding question arises about how fastavro would read them.

``python -m consumer.pipeline.fastdecode`` times it against ``Decoder.decode`` on simulated records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from consumer.pipeline.blake2 import blake2b_into
from consumer.pipeline.codec import HEADER, MAGIC, load_schema_file
from features.events import ACTIVITY_KINDS, MAX_EVENT_TIME_MS, MAX_ID_LEN, MIN_EVENT_TIME_MS
from features.spec import DEFAULT_SPEC, FeatureSpec

# The field layout the kernel parses; checked against the packaged schema at import, so a schema
# change cannot silently desynchronise the two.
_LAYOUT = (
    ("event_id", "string"),
    ("business_id", "string"),
    ("user_id", ("null", "string")),
    ("event_time", "long"),
    ("kind", ("enum", ACTIVITY_KINDS)),
    ("search_id", ("null", "string")),
    ("rating", ("null", "int")),
)
_N_KINDS = len(ACTIVITY_KINDS)
_REVIEW = ACTIVITY_KINDS.index("REVIEW")
_GOLD = np.uint64(0x9E3779B1)  # features.state._GOLD (user_slot's Fibonacci hashing)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _field_shape(t: Any) -> Any:
    if isinstance(t, list):
        return tuple(t)
    if isinstance(t, dict) and t.get("type") == "enum":
        return ("enum", tuple(t["symbols"]))
    return t


def _check_layout() -> None:
    schema = load_schema_file("activity_event.avsc")
    got = tuple((f["name"], _field_shape(f["type"])) for f in schema["fields"])
    if got != _LAYOUT:
        raise ImportError(f"activity_event.avsc no longer has the layout fastdecode parses: {got}")
    # The kernel reads the 5-byte header as magic + big-endian id.
    assert HEADER.size == 5 and MAGIC == 0


_check_layout()


def _crc_table() -> np.ndarray:
    t = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t[i] = c
    return t


_CRC_TABLE = _crc_table()


class ActivityColumns(NamedTuple):
    """One batch, column by column. Values of records that are not ``fast`` are meaningless (0)."""

    fast: np.ndarray  # bool: decoded here; False = the caller must use Decoder.decode
    bid_code: np.ndarray  # int64: index into bids, -1 when not fast
    bids: list[str]  # distinct business ids of the fast records, first-seen order
    event_time: np.ndarray  # int64
    kind: np.ndarray  # int64: index in ACTIVITY_KINDS (= the Avro enum index)
    user_slot: np.ndarray  # int64: features.state.user_slot, -1 for a null or empty user_id (anonymous, as features.columnar.activity_batch)
    event_key: np.ndarray  # uint64: features.state.event_key(event_id)
    rating: np.ndarray  # int64: 0 when null


@njit(cache=True, inline="always")
def _varint(buf, pos, end):
    """Zigzag varint at ``pos``: (value, next pos), next pos -1 when truncated, over 9 bytes or
    not minimal (a trailing 0x00 group). Loops here are ``while`` or free of early returns: numba
    compiles a ``for ... range`` left by ``return`` several times slower."""
    n = 0
    shift = 0
    stop = min(end, pos + 9)
    while pos < stop:
        b = np.int64(buf[pos])
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and shift > 0:
                return 0, -1
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
    return 0, -1


@njit(cache=True, inline="always")
def _id(buf, pos, end):
    """An ASCII string of at most MAX_ID_LEN bytes at ``pos``: (start, length, next pos), next pos -1
    otherwise."""
    n, pos = _varint(buf, pos, end)
    if pos < 0 or n < 0 or n > MAX_ID_LEN or pos + n > end:
        return 0, 0, -1
    bits = 0
    for i in range(pos, pos + n):
        bits |= buf[i]
    if bits >= 0x80:
        return 0, 0, -1
    return pos, n, pos + n


@njit(cache=True, inline="always")
def _branch(buf, pos, end):
    """A ``["null", T]`` union's branch index (0 or 1) and the next pos; -1 for any other index."""
    b, pos = _varint(buf, pos, end)
    if pos < 0 or (b != 0 and b != 1):
        return 0, -1
    return b, pos


@njit(cache=True, inline="always")
def _user_slot(buf, start, n, crc_table, shift):
    c = np.uint32(0xFFFFFFFF)
    for i in range(start, start + n):
        c = crc_table[(c ^ buf[i]) & 0xFF] ^ (c >> np.uint32(8))
    c = c ^ np.uint32(0xFFFFFFFF)
    return np.int64(((np.uint64(c) * _GOLD) & np.uint64(0xFFFFFFFF)) >> np.uint64(shift))


@njit(cache=True, inline="always")
def _fnv(buf, start, n):
    h = _FNV_OFFSET
    for i in range(start, start + n):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return h


@njit(cache=True)
def _event_key(buf, start, n, h, m):
    """features.state.event_key of ``buf[start:start + n]``: the first 8 bytes, little-endian, of its
    unkeyed BLAKE2b with digest_size=8. ``h``, ``m``: scratch (8 and 16 uint64)."""
    blake2b_into(buf, start, n, 8, h, m)
    return h[0]


@njit(cache=True)
def _parse(vbuf, pos, end, sid, ints, spans, i, crc_table, shift):
    """Parse and validate record ``i`` in ``vbuf[pos:end]``. On success fills ``ints[:, i]`` (event
    time, kind, user slot, rating) and ``spans[i]`` (event_id, business_id start and length) and
    returns True."""
    if end - pos < 5 or vbuf[pos] != 0:
        return False
    got = (np.int64(vbuf[pos + 1]) << 24) | (np.int64(vbuf[pos + 2]) << 16)
    got |= (np.int64(vbuf[pos + 3]) << 8) | np.int64(vbuf[pos + 4])
    if got != sid:
        return False
    es, en, pos = _id(vbuf, pos + 5, end)
    if pos < 0 or en == 0:
        return False
    bs, bn, pos = _id(vbuf, pos, end)
    if pos < 0 or bn == 0:
        return False
    has_user, pos = _branch(vbuf, pos, end)
    if pos < 0:
        return False
    slot = -1
    if has_user:
        us, un, pos = _id(vbuf, pos, end)
        if pos < 0:
            return False
        if un > 0:  # an empty user id counts as anonymous (features.columnar.activity_batch)
            slot = _user_slot(vbuf, us, un, crc_table, shift)
    t, pos = _varint(vbuf, pos, end)
    if pos < 0 or t < MIN_EVENT_TIME_MS or t >= MAX_EVENT_TIME_MS:
        return False
    kind, pos = _varint(vbuf, pos, end)
    if pos < 0 or kind < 0 or kind >= _N_KINDS:
        return False
    has_search, pos = _branch(vbuf, pos, end)
    if pos >= 0 and has_search:
        _, _, pos = _id(vbuf, pos, end)
    if pos < 0:
        return False
    has_rating, pos = _branch(vbuf, pos, end)
    rating = 0
    if pos >= 0 and has_rating:
        rating, pos = _varint(vbuf, pos, end)
        if kind != _REVIEW or rating < 1 or rating > 5:
            return False
    if pos != end:  # truncated (-1) or trailing bytes
        return False
    ints[0, i], ints[1, i], ints[2, i], ints[3, i] = t, kind, slot, rating
    spans[i, 0], spans[i, 1], spans[i, 2], spans[i, 3] = es, en, bs, bn
    return True


@njit(cache=True, inline="always")
def _same(buf, a, b, n):
    diff = 0
    for k in range(n):
        diff |= buf[a + k] ^ buf[b + k]
    return diff == 0


@njit(cache=True, inline="always")
def _key_matches(vbuf, bs, bn, kbuf, ks, kn):
    if kn != bn:
        return False
    diff = 0
    for k in range(bn):
        diff |= kbuf[ks + k] ^ vbuf[bs + k]
    return diff == 0


@njit(cache=True)
def _kernel(vbuf, voff, kbuf, koff, sid, crc_table, shift, hash_mask, fast, ints, spans, bid_code, reps, ekeys):
    """Every record of the batch; returns the number of distinct business ids. Record ``i``'s
    value is ``vbuf[voff[i]:voff[i + 1]]`` and its key ``kbuf[koff[i]:koff[i + 1]]``.

    Business ids are grouped by an open-addressing table on their FNV-1a hash; a record joins a
    group only when its bytes equal the group's first record's (the hash only finds candidates).
    ``hash_mask`` keeps all 64 bits except in tests, which force collisions with it."""
    n = fast.shape[0]
    cap = 1
    while cap < 2 * n:
        cap *= 2
    table = np.full(cap, -1, dtype=np.int64)  # group index
    hashes = np.zeros(cap, dtype=np.uint64)
    groups = 0
    h8, m16 = np.empty(8, np.uint64), np.empty(16, np.uint64)
    for i in range(n):
        bid_code[i] = -1
        if not _parse(vbuf, voff[i], voff[i + 1], sid, ints, spans, i, crc_table, shift):
            continue
        bs, bn = spans[i, 2], spans[i, 3]
        if not _key_matches(vbuf, bs, bn, kbuf, koff[i], koff[i + 1] - koff[i]):
            continue
        h = _fnv(vbuf, bs, bn) & hash_mask
        j = np.int64(h & np.uint64(cap - 1))
        while table[j] >= 0:
            r = reps[table[j]]
            if hashes[j] == h and spans[r, 3] == bn and _same(vbuf, spans[r, 2], bs, bn):
                break
            j = (j + 1) & (cap - 1)
        if table[j] < 0:
            table[j] = groups
            hashes[j] = h
            reps[groups] = i
            groups += 1
        bid_code[i] = table[j]
        ekeys[i] = _event_key(vbuf, spans[i, 0], spans[i, 1], h8, m16)
        fast[i] = True
    return groups


def _concat(items: Sequence[bytes | None]) -> tuple[bytes, np.ndarray]:
    """The items joined, and their n + 1 offsets. A None becomes b"": neither an empty value nor an
    empty key can be fast (a value needs a header, a key must equal a non-empty business_id)."""
    present = [b or b"" for b in items]
    off = np.zeros(len(present) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, present), np.int64, len(present)), out=off[1:])
    return b"".join(present), off


def decode_activity(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    schema_id: int,
    spec: FeatureSpec = DEFAULT_SPEC,
    _hash_mask: int = (1 << 64) - 1,
) -> ActivityColumns:
    """Decode a batch of activity records (Kafka values and keys) written with ``schema_id``, the
    packaged ``ActivityEvent`` schema's id. Records not marked ``fast`` need ``Decoder.decode``."""
    n = len(values)
    if len(keys) != n:
        raise ValueError(f"{n} values but {len(keys)} keys")
    vbytes, voff = _concat(values)
    kbytes, koff = _concat(keys)
    vbuf = np.frombuffer(vbytes, dtype=np.uint8)
    kbuf = np.frombuffer(kbytes, dtype=np.uint8)
    fast = np.zeros(n, dtype=np.bool_)
    ints = np.zeros((4, n), dtype=np.int64)  # rows: event_time, kind, user_slot, rating
    spans = np.zeros((n, 4), dtype=np.int64)
    bid_code = np.empty(n, dtype=np.int64)
    reps = np.empty(n, dtype=np.int64)
    ekeys = np.zeros(n, dtype=np.uint64)
    shift = spec.layout.slot_shift
    groups = _kernel(
        vbuf,
        voff,
        kbuf,
        koff,
        schema_id,
        _CRC_TABLE,
        shift,
        np.uint64(_hash_mask),
        fast,
        ints,
        spans,
        bid_code,
        reps,
        ekeys,
    )
    bids = [vbytes[s : s + m].decode("ascii") for s, m in spans[reps[:groups], 2:4].tolist()]
    return ActivityColumns(fast, bid_code, bids, ints[0], ints[1], ints[2], ekeys, ints[3])


def _bench(records: int = 50_000, batch: int = 500) -> None:
    """CPU µs per record of decode_activity (batches of ``batch``) and of Decoder.decode, same
    records. CPU time, not wall time: on a shared host the wall clock measures the neighbours."""
    import time

    from consumer.config import Config
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from consumer.pipeline.decode import Decoder
    from sim.world import WorldConfig, generate_records

    cfg = Config()
    registry = FileSchemaRegistry()
    codec = AvroCodec(registry, "ActivityEvent")
    recs = []
    for kind, rec in generate_records(WorldConfig(businesses=200, days=10, seed=1)):
        if kind == "activity":
            recs.append((rec["business_id"].encode(), codec.encode(rec)))
        if len(recs) == records:
            break
    keys, values = [k for k, _ in recs], [v for _, v in recs]
    decoder = Decoder(cfg, registry)
    decode_activity(values[:10], keys[:10], codec.schema_id)  # load the compiled kernel

    def best(f: Any) -> float:
        times = []
        for _ in range(5):
            t0 = time.process_time()
            f()
            times.append(time.process_time() - t0)
        return min(times) / len(values) * 1e6

    def fast_all() -> None:
        for s in range(0, len(values), batch):
            assert decode_activity(values[s : s + batch], keys[s : s + batch], codec.schema_id).fast.all()

    def slow_all() -> None:
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            decoder.decode(cfg.activity_topic, 0, i, k, v)

    print(f"{len(values)} simulated activity records, CPU time, best of 5")
    print(f"decode_activity, batches of {batch}: {best(fast_all):.3f} µs/record")
    print(
        f"decode_activity, one batch of all: {best(lambda: decode_activity(values, keys, codec.schema_id)):.3f} µs/record"
    )
    print(f"Decoder.decode, one call per record: {best(slow_all):.3f} µs/record")


if __name__ == "__main__":
    _bench()
