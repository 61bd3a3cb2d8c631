"""BLAKE2b (RFC 7693) for numba kernels: the unkeyed hash of a byte range of a uint8 array.

``hashlib`` cannot be called from a kernel; the bulk decoder (``fastdecode``: the event-id key of
``features.state.event_key``) and the bulk prediction ids (``hashes``) hash inside theirs. Tests
compare both with ``hashlib`` value for value. numba's disk cache does not notice a change here
in the kernels that call it (it keys a kernel on its own file): clear ``__pycache__`` after
editing this module.
"""

from __future__ import annotations

import numpy as np
from numba import njit

IV = np.array(
    [
        0x6A09E667F3BCC908,
        0xBB67AE8584CAA73B,
        0x3C6EF372FE94F82B,
        0xA54FF53A5F1D36F1,
        0x510E527FADE682D1,
        0x9B05688C2B3E6C1F,
        0x1F83D9ABFB41BD6B,
        0x5BE0CD19137E2179,
    ],
    dtype=np.uint64,
)
SIGMA = np.array(
    [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    ],
    dtype=np.int64,
)


@njit(cache=True, inline="always")
def _rotr(x, n):
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@njit(cache=True, inline="always")
def _g(a, b, c, d, x, y):
    a = a + b + x
    d = _rotr(d ^ a, 32)
    c = c + d
    b = _rotr(b ^ c, 24)
    a = a + b + y
    d = _rotr(d ^ a, 16)
    c = c + d
    b = _rotr(b ^ c, 63)
    return a, b, c, d


@njit(cache=True)
def compress(buf, pos, end, h, m, t, last):
    """One BLAKE2b compression of the block ``buf[pos:pos + 128]`` (zero-padded past ``end``) into
    ``h``; ``t`` is the byte count so far, including this block. The working vector lives in
    locals, not an array, so that it stays in registers."""
    m[:] = 0
    for p in range(pos, min(end, pos + 128)):
        k = p - pos
        m[k >> 3] |= np.uint64(buf[p]) << np.uint64(8 * (k & 7))
    v0, v1, v2, v3, v4, v5, v6, v7 = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
    v8, v9, v10, v11 = IV[0], IV[1], IV[2], IV[3]
    v12, v13, v14, v15 = IV[4] ^ np.uint64(t), IV[5], IV[6], IV[7]
    if last:
        v14 = ~v14
    for r in range(12):
        s = SIGMA[r % 10]
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s[0]], m[s[1]])
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s[2]], m[s[3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s[4]], m[s[5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s[6]], m[s[7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s[8]], m[s[9]])
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s[10]], m[s[11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s[12]], m[s[13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s[14]], m[s[15]])
    h[0] ^= v0 ^ v8
    h[1] ^= v1 ^ v9
    h[2] ^= v2 ^ v10
    h[3] ^= v3 ^ v11
    h[4] ^= v4 ^ v12
    h[5] ^= v5 ^ v13
    h[6] ^= v6 ^ v14
    h[7] ^= v7 ^ v15


@njit(cache=True)
def blake2b_into(buf, start, n, digest, h, m):
    """Unkeyed BLAKE2b of ``buf[start:start + n]`` with a ``digest``-byte output, into ``h`` (the
    digest is ``h``'s first ``digest`` bytes, little-endian); ``m``: scratch of 16 uint64."""
    for w in range(8):
        h[w] = IV[w]
    h[0] ^= np.uint64(0x01010000 | digest)  # parameter block: digest length, no key, fanout 1, depth 1
    pos = start
    end = start + n
    while end - pos > 128:
        compress(buf, pos, end, h, m, pos + 128 - start, False)
        pos += 128
    compress(buf, pos, end, h, m, n, True)
