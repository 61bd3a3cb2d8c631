"""The prediction ids of a batch, computed in one compiled call.

``prediction_id`` (16-byte BLAKE2b of ``topic|partition|offset|model_version[|arm]``, hex) is defined
in ``consumer.pipeline.predictions`` with ``hashlib``: per row a formatted string, its encoding, a
hash object, a digest and a hex string. Here the same BLAKE2b (``consumer.pipeline.blake2``, RFC 7693) runs over all rows in a numba kernel that also formats
the key and writes the hex digits; Python only cuts one ASCII string into the ids. The results
are the same strings (the tests compare them with ``hashlib`` row by row). Measured with 100,000
rows (a loaded 2-core host): 0.8 µs/row here against 2.4 µs/row with ``hashlib``. The feature
hash stays with ``hashlib``: its C BLAKE2b beats this kernel (2.7 vs 3.5 µs per 320-byte row).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from consumer.pipeline.blake2 import blake2b_into

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@njit(cache=True, inline="always")
def _hex(h, digest, out, at, hexd):
    for k in range(digest):
        byte = (h[k >> 3] >> np.uint64(8 * (k & 7))) & np.uint64(0xFF)
        out[at + 2 * k] = hexd[byte >> np.uint64(4)]
        out[at + 2 * k + 1] = hexd[byte & np.uint64(0xF)]


@njit(cache=True, inline="always")
def _put_int(buf, at, v):
    """``str(v)`` in ASCII at ``buf[at:]``; returns the end."""
    if v < 0:
        buf[at] = 45  # "-"
        at += 1
        v = -v
    digits = 1
    x = v
    while x >= 10:
        x //= 10
        digits += 1
    for k in range(digits - 1, -1, -1):
        buf[at + k] = 48 + v % 10
        v //= 10
    return at + digits


@njit(cache=True)
def _id_hashes(head, partitions, offsets, tail, digest, hexd):
    n = len(offsets)
    out = np.empty(n * 2 * digest, np.uint8)
    key = np.empty(len(head) + len(tail) + 48, np.uint8)
    key[: len(head)] = head
    h = np.empty(8, np.uint64)
    m = np.empty(16, np.uint64)
    for i in range(n):
        at = _put_int(key, len(head), partitions[i])
        key[at] = 0x1F
        at = _put_int(key, at + 1, offsets[i])
        key[at : at + len(tail)] = tail
        blake2b_into(key, 0, at + len(tail), digest, h, m)
        _hex(h, digest, out, i * 2 * digest, hexd)
    return out


def _split(hexdigits: np.ndarray, width: int) -> list[str]:
    s = hexdigits.tobytes().decode("ascii")
    return [s[i : i + width] for i in range(0, len(s), width)]


def prediction_ids(topic: str, partitions: np.ndarray, offsets: np.ndarray, model_version: str, arm: str) -> list[str]:
    """``predictions.prediction_id`` of every (partition, offset) of ``topic`` for one model and arm."""
    if len(offsets) == 0:
        return []
    head = np.frombuffer(f"{topic}\x1f".encode(), np.uint8)
    tail = np.frombuffer((f"\x1f{model_version}" + (f"\x1f{arm}" if arm != "default" else "")).encode(), np.uint8)
    got = _id_hashes(head, np.asarray(partitions, np.int64), np.asarray(offsets, np.int64), tail, 16, _HEX)
    return _split(got, 32)
