"""The compiled inner loops of :mod:`features.columnar` (numba ``njit``, cached on disk).

Each function is a line-for-line transcription of its Python original in ``features.state`` or
``features.extract`` over one row of the table's arrays; the docstrings name the original. Integer
fields may be computed in any order, but every float operation (decayed sums, feature values) is
done in the original's order with the same operands, and ``x ** n`` is ``math.pow`` (libm ``pow``,
as Python's float power), so results are equal bit for bit, not just close.

Argument bundles (tuples, so one dispatch unpacks them; indices below):

* ``S`` per-row state: ``ints`` (int64, columns ``C_*``), ``ties`` (uint64: profile, lifecycle),
  ``last``, ``first``, ``totals`` (int64 per kind), ``fine``, ``ftot``, ``fsums``, ``coarse``,
  ``ctot``, ``csums`` (int64 rings), ``slots`` (uint16), ``decay`` (float64);
* ``D`` dedup memory: ``index`` (open addressing, entry or -1), entries ``erow``, ``ebf``, ``ekey``,
  ``enext`` (per-row chain), ``meta[0]`` = entries used. An entry whose bucket is below its row's
  ``C_FLOOR`` is dead (``state`` deletes those buckets; here they are dropped at compaction);
* ``G`` geometry: ``geo`` (int64, ``G_*``), fine and coarse windows (``n, offset`` rows), the linear
  counting table, decay factors, steps and power tables, the priors.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Outcome codes: indices into features.scoring.OUTCOMES (checked by columnar at import).
SCORED, BUSINESS_UPDATE, NOT_SCORABLE, DUPLICATE, LATE = 0, 1, 2, 3, 4
CLOSED = 2  # lifecycle code of "CLOSED" in state._LIFECYCLE (checked by columnar)

# Columns of S[0], the int64 scalars of a row (BusinessState field in comments where renamed).
C_MAX = 0  # max_event_ms
C_LATE = 1  # late_dropped
C_FHEAD = 2
C_CHEAD = 3
C_FLOOR = 4  # seen_floor
C_SBASE = 5  # slot_base
C_DEPOCH = 6  # decay_epoch
C_RSUM = 7
C_RN = 8
C_FSEEN = 9  # first_seen_ms
C_KNOWN = 10
C_LIFE = 11  # lifecycle code
C_CREATED = 12
C_PROF_MS = 13
C_LIFE_MS = 14
C_OPEN = 15
C_PRICE = 16  # 0 = None
C_CITYB = 17
C_CATB = 18
C_DHEAD = 19  # first dedup entry of the row's chain, -1 = none
N_INTS = 20

# Entries of G[0].
G_GF, G_GC, G_RATIO, G_LATENESS, G_RF, G_RC, G_K, G_U, G_NK, G_NH = range(10)
G_PV, G_BIZ, G_CALL, G_REVIEW, G_SLOT_PERIOD, G_EPOCH = range(10, 16)
N_GEO = 16

_HOUR = 3_600_000.0
_DAY = 86_400_000.0
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_S32 = np.uint64(32)


# -- the fold ------------------------------------------------------------------------------------


@njit(cache=True)
def fold_kernel(S, D, G, rows, kinds, times, slots, keys, ratings, outcomes, clocks, out, n_out):  # noqa: PLR0913
    """Apply activity events in array order; write a feature row into ``out[n_out:]`` at each
    scoring moment (as of the row's clock, ``scoring.as_of``), and each event's row clock after it
    into ``clocks``. Returns the new ``n_out``."""
    W = np.zeros(G[1].shape[0] * G[0][G_K] + G[2].shape[0] * G[0][G_K], np.int64)
    vals = np.zeros(G[0][G_NK], np.float64)
    for i in range(rows.shape[0]):
        r = rows[i]
        o = fold_one(S, D, G, r, kinds[i], times[i], slots[i], keys[i], ratings[i])
        outcomes[i] = o
        clocks[i] = S[0][r, C_MAX]
        if o == SCORED and out.shape[0]:
            extract_row(S, G, r, S[0][r, C_MAX], out[n_out], W, vals)
            n_out += 1
    return n_out


@njit(cache=True, inline="always")
def fold_one(S, D, G, r, k, t, j, key, rating):
    """``state._fold_activity`` + the outcome of ``scoring.apply`` for one event of row ``r``."""
    ints, geo = S[0], G[0]
    lateness, gf, gc = geo[G_LATENESS], geo[G_GF], geo[G_GC]
    bf = t // gf
    mx = ints[r, C_MAX]
    if t > mx:
        if mx and geo[G_NH]:
            f0 = (mx - lateness) // gc
            f1 = (t - lateness) // gc
            if f1 > f0:
                _settle(S, G, r, f0, f1)
        ints[r, C_MAX] = t
        if bf > ints[r, C_FHEAD]:
            _advance_clock(S, G, r, bf, t // gc)
        floor = (t - lateness) // gf
        if floor > ints[r, C_FLOOR]:  # entries below it die here; compaction reclaims them
            ints[r, C_FLOOR] = floor
    elif t < mx - lateness:
        ints[r, C_LATE] += 1
        return LATE
    if not _remember(ints, D, r, bf, key):
        return DUPLICATE
    _count(S, G, r, k, t, j, bf, rating)
    if ints[r, C_KNOWN] and ints[r, C_LIFE] != CLOSED:
        return SCORED
    return NOT_SCORABLE


@njit(cache=True, inline="always")
def _count(S, G, r, k, t, j, bf, rating):
    """The accepted part of ``_fold_activity``: visitor slot, both rings, lifetime aggregates."""
    ints, geo = S[0], G[0]
    moved = False
    old = 0
    if j >= 0:
        base = ints[r, C_SBASE]
        rel = bf - base
        prev = np.int64(S[11][r, j])
        if rel > prev:
            S[11][r, j] = rel
            moved = True
            if prev:
                old = prev + base
    K, U = geo[G_K], geo[G_U]
    _fold_ring(S[5][r], S[6][r], S[7][r], G[1], geo[G_RF], K, U, ints[r, C_FHEAD], bf, k, moved, old)
    ratio = geo[G_RATIO]
    b = bf // ratio
    oc = old // ratio
    _fold_ring(S[8][r], S[9][r], S[10][r], G[2], geo[G_RC], K, U, ints[r, C_CHEAD], b, k, moved and oc != b, oc)
    last, first = S[2][r], S[3][r]
    if t > last[k]:
        last[k] = t
    S[4][r, k] += 1
    if t < first[k] or not first[k]:
        first[k] = t
    if t < ints[r, C_FSEEN] or not ints[r, C_FSEEN]:
        ints[r, C_FSEEN] = t
    if rating and k == geo[G_REVIEW]:  # the caller passes 0 for no rating
        ints[r, C_RSUM] += rating
        ints[r, C_RN] += 1


@njit(cache=True, inline="always")
def _fold_ring(ring, tot, sums, windows, R, K, U, h, b, k, moved, old):
    """``state._fold_ring``."""
    if R == 0 or b <= h - R:
        return
    s = b % R
    i = s * K
    ring[i + k] += 1
    tot[s] += 1
    if moved:
        ring[i + U] += 1
        if old > h - R:
            ring[(old % R) * K + U] -= 1
    for w in range(windows.shape[0]):
        n, off = windows[w, 0], windows[w, 1]
        if b > h - n:
            sums[off + k] += 1
            if moved and old <= h - n:
                sums[off + U] += 1


@njit(cache=True, inline="always")
def _remember(ints, D, r, bf, key):
    """The dedup step: False if ``(bucket, key)`` is held for row ``r``, else hold it.

    Lookups are by exact bucket, always at or after the row's floor, so dead entries never match.
    """
    index, erow, ebf, ekey, enext, meta = D
    mask = index.shape[0] - 1
    x = key ^ (np.uint64(bf) * _M1) ^ (np.uint64(r) * _M2)
    h = np.int64((x ^ (x >> _S32)) & np.uint64(mask))
    while index[h] >= 0:
        e = index[h]
        if ekey[e] == key and ebf[e] == bf and erow[e] == r:
            return False
        h = (h + 1) & mask
    e = meta[0]
    meta[0] = e + 1
    erow[e], ebf[e], ekey[e], enext[e] = r, bf, key, ints[r, C_DHEAD]
    ints[r, C_DHEAD] = e
    index[h] = e
    return True


@njit(cache=True)
def _settle(S, G, r, f0, f1):
    """``state._settle``: coarse buckets f0 .. f1 - 1 became final."""
    geo = G[0]
    R, K = geo[G_RC], geo[G_K]
    tot = S[9][r]
    for b in range(f0, min(f1, S[0][r, C_CHEAD] + 1)):
        s = b % R
        if tot[s]:
            _add_final_row(S, G, r, b, s * K)


@njit(cache=True)
def _add_final_row(S, G, r, b, base):
    """``state._add_final_row``, float operations in its order."""
    geo = G[0]
    acc, ring = S[12][r], S[8][r]
    nk, nh, epoch = geo[G_NK], geo[G_NH], geo[G_EPOCH]
    steps, pw = G[5], G[6]
    e = S[0][r, C_DEPOCH]
    if b >= e:
        if np.any(acc != 0.0):
            while e <= b:
                e += epoch
                for i in range(nh):
                    for j in range(i * nk, i * nk + nk):
                        acc[j] *= steps[i]
        else:
            e = (b // epoch + 1) * epoch
        S[0][r, C_DEPOCH] = e
    d = e - b
    for i in range(nh):
        w = pw[i, d]
        o = i * nk
        for k in range(nk):
            x = ring[base + k]
            if x:
                acc[o + k] += x * w


@njit(cache=True)
def _advance_clock(S, G, r, bf, bc):
    """``state._advance_clock``."""
    ints, geo = S[0], G[0]
    K = geo[G_K]
    _advance(S[5][r], S[6][r], S[7][r], G[1], geo[G_RF], K, ints[r, C_FHEAD], bf)
    ints[r, C_FHEAD] = bf
    if bc > ints[r, C_CHEAD]:
        _advance(S[8][r], S[9][r], S[10][r], G[2], geo[G_RC], K, ints[r, C_CHEAD], bc)
        ints[r, C_CHEAD] = bc
    period = geo[G_SLOT_PERIOD]
    if bf - ints[r, C_SBASE] >= 2 * period:
        base = (bf // period - 1) * period
        shift = base - ints[r, C_SBASE]
        sl = S[11][r]
        for j in range(sl.shape[0]):
            v = np.int64(sl[j])
            sl[j] = v - shift if v > shift else 0
        ints[r, C_SBASE] = base


@njit(cache=True)
def _advance(ring, tot, sums, windows, R, K, h, h2):
    """``state._advance``: windows shorter than the ring are its ``part``, the others its ``full``."""
    if R == 0:
        return
    d = h2 - h
    if d >= R:
        ring[:] = 0
        tot[:] = 0
        sums[:] = 0
        return
    for w in range(windows.shape[0]):
        n, off = windows[w, 0], windows[w, 1]
        if n == R:
            continue
        if d >= n:
            sums[off : off + K] = 0
            continue
        _subtract_rows(ring, tot, sums, R, K, off, h - n + 1, h2 - n + 1)
    for b in range(h + 1, h2 + 1):
        s = b % R
        if tot[s]:
            base = s * K
            for w in range(windows.shape[0]):
                if windows[w, 0] == R:
                    off = windows[w, 1]
                    for c in range(K):
                        sums[off + c] -= ring[base + c]
            ring[base : base + K] = 0
            tot[s] = 0


@njit(cache=True)
def _subtract_rows(ring, tot, sums, R, K, off, b0, b1):
    for b in range(b0, b1):
        s = b % R
        if tot[s]:
            base = s * K
            for c in range(K):
                sums[off + c] -= ring[base + c]


# -- dedup memory upkeep -------------------------------------------------------------------------


@njit(cache=True)
def compact(ints, D, index, erow, ebf, ekey, enext):
    """Copy the live entries of ``D`` into the new (empty, ``index`` all -1) arrays, rebuilding
    the index and the per-row chains. Returns the number of live entries."""
    old_index, orow, obf, okey, _onext, meta = D
    ints[:, C_DHEAD] = -1
    mask = index.shape[0] - 1
    n = 0
    for e in range(meta[0]):
        r = orow[e]
        if r < 0 or obf[e] < ints[r, C_FLOOR]:
            continue
        key, bf = okey[e], obf[e]
        x = key ^ (np.uint64(bf) * _M1) ^ (np.uint64(r) * _M2)
        h = np.int64((x ^ (x >> _S32)) & np.uint64(mask))
        while index[h] >= 0:
            h = (h + 1) & mask
        index[h] = n
        erow[n], ebf[n], ekey[n], enext[n] = r, bf, key, ints[r, C_DHEAD]
        ints[r, C_DHEAD] = n
        n += 1
    return n


@njit(cache=True)
def count_live(ints, D):
    """Dedup entries still live (row not forgotten, bucket at or after the row's floor)."""
    erow, ebf, meta = D[1], D[2], D[5]
    n = 0
    for e in range(meta[0]):
        r = erow[e]
        if r >= 0 and ebf[e] >= ints[r, C_FLOOR]:
            n += 1
    return n


@njit(cache=True)
def row_entries(ints, D, r):
    """The live dedup entries of row ``r``: (buckets, keys)."""
    _index, erow, ebf, ekey, enext, _meta = D
    n = 0
    e = ints[r, C_DHEAD]
    while e >= 0:
        n += 1
        e = enext[e]
    bs = np.empty(n, np.int64)
    ks = np.empty(n, np.uint64)
    m = 0
    e = ints[r, C_DHEAD]
    while e >= 0:
        if erow[e] == r and ebf[e] >= ints[r, C_FLOOR]:
            bs[m], ks[m] = ebf[e], ekey[e]
            m += 1
        e = enext[e]
    return bs[:m], ks[:m]


@njit(cache=True)
def forget_row(ints, D, r):
    """Kill every dedup entry of row ``r`` (before the row is overwritten)."""
    erow, enext = D[1], D[4]
    e = ints[r, C_DHEAD]
    while e >= 0:
        erow[e] = -1
        e = enext[e]
    ints[r, C_DHEAD] = -1


@njit(cache=True)
def hold_keys(ints, D, r, bs, ks):
    """Hold the given (bucket, key) entries for row ``r`` (a restored state's dedup memory)."""
    for i in range(bs.shape[0]):
        _remember(ints, D, r, bs[i], ks[i])


# -- extraction ----------------------------------------------------------------------------------


@njit(cache=True)
def extract_kernel(S, G, rows, as_of, out):
    """``extract_into`` for each ``rows[i]`` as of ``as_of[i]`` into ``out[i]``."""
    W = np.zeros(G[1].shape[0] * G[0][G_K] + G[2].shape[0] * G[0][G_K], np.int64)
    vals = np.zeros(G[0][G_NK], np.float64)
    for i in range(rows.shape[0]):
        extract_row(S, G, rows[i], as_of[i], out[i], W, vals)


@njit(cache=True, inline="always")
def extract_row(S, G, r, as_of, v, W, vals):
    """``extract._values`` for row ``r`` into the float32 row ``v`` (float64 values, rounded on store
    as numpy rounds ``extract_into``'s list). ``W``, ``vals``: scratch."""
    ints, geo = S[0], G[0]
    mx = ints[r, C_MAX]
    t = as_of if as_of > mx else mx
    _window_sums(S, G, r, t, W)
    K, U, nk = geo[G_K], geo[G_U], geo[G_NK]
    nw = G[1].shape[0] + G[2].shape[0]
    a, ab = G[7][0], G[7][1]
    lc = G[3]
    p = 0
    for k in range(nk):
        for w in range(nw):
            v[p] = W[w * K + k] + 0.0
            p += 1
    for w in range(nw):
        v[p] = lc[W[w * K + U]]
        p += 1
    for c in (geo[G_BIZ], geo[G_CALL]):
        for w in range(nw):
            v[p] = (W[w * K + c] + a) / (W[w * K + geo[G_PV]] + ab)
            p += 1
    p = _times(S[2][r], t, v, p)
    p = _times(S[3][r], t, v, p)
    for k in range(nk):
        v[p] = S[4][r, k] + 0.0
        p += 1
    p = _decayed(S, G, r, t, v, p, vals)
    _tail(S, G, r, t, v, p)


@njit(cache=True, inline="always")
def _times(ms, t, v, p):
    for k in range(ms.shape[0]):
        x = ms[k]
        v[p] = (t - x) / _HOUR if x else np.nan
        p += 1
    return p


@njit(cache=True, inline="always")
def _tail(S, G, r, t, v, p):
    """The lifetime and profile features after the decayed counts."""
    ints, geo = S[0], G[0]
    pv = geo[G_PV]
    n_pv = S[4][r, pv]
    v[p] = (S[2][r, pv] - S[3][r, pv]) / _HOUR / (n_pv - 1) if n_pv > 1 else np.nan
    v[p + 1] = S[4][r, geo[G_REVIEW]] + 0.0
    v[p + 2] = ints[r, C_RSUM] / ints[r, C_RN] if ints[r, C_RN] else np.nan
    if ints[r, C_KNOWN]:
        v[p + 3] = 1.0 if ints[r, C_OPEN] else 0.0
        v[p + 4] = ints[r, C_PRICE] + 0.0 if ints[r, C_PRICE] else np.nan
        v[p + 5] = ints[r, C_CITYB] + 0.0 if ints[r, C_CITYB] >= 0 else np.nan
        v[p + 6] = ints[r, C_CATB] + 0.0 if ints[r, C_CATB] >= 0 else np.nan
    else:
        v[p + 3 : p + 7] = np.nan
    born = ints[r, C_CREATED] if ints[r, C_CREATED] else ints[r, C_FSEEN]
    if born:
        v[p + 7] = (t - born) / _DAY if t > born else 0.0
    else:
        v[p + 7] = np.nan


@njit(cache=True, inline="always")
def _window_sums(S, G, r, t, W):
    """The window sums as of ``t``, fine then coarse (``fs + cs`` in ``_values``)."""
    ints, geo = S[0], G[0]
    K = geo[G_K]
    nf = G[1].shape[0] * K
    if not ints[r, C_MAX]:
        W[:] = 0
        return
    W[:nf] = S[7][r]
    cf = t // geo[G_GF]
    if cf != ints[r, C_FHEAD]:
        _shifted(S[5][r], S[6][r], W[:nf], G[1], geo[G_RF], K, ints[r, C_FHEAD], cf)
    W[nf:] = S[10][r]
    cc = t // geo[G_GC]
    if cc != ints[r, C_CHEAD]:
        _shifted(S[8][r], S[9][r], W[nf:], G[2], geo[G_RC], K, ints[r, C_CHEAD], cc)


@njit(cache=True)
def _shifted(ring, tot, out, windows, R, K, h, c):
    """``extract._shifted``, in place on ``out`` (a copy of the head's sums)."""
    d = c - h
    for w in range(windows.shape[0]):
        n, off = windows[w, 0], windows[w, 1]
        if d >= n:
            out[off : off + K] = 0
            continue
        _subtract_rows(ring, tot, out, R, K, off, h - n + 1, c - n + 1)


@njit(cache=True, inline="always")
def _decayed(S, G, r, t, v, p, vals):
    """``extract._decayed``: per half-life, scaled sums, then each pending row in bucket order."""
    geo = G[0]
    nk, nh = geo[G_NK], geo[G_NH]
    mx = S[0][r, C_MAX]
    if not mx:
        v[p : p + nk * nh] = 0.0
        return p + nk * nh
    c = t // geo[G_GC]
    lo = (mx - geo[G_LATENESS]) // geo[G_GC]
    _decayed_rows(
        S[12][r],
        S[8][r],
        S[9][r],
        G[4],
        geo[G_RC],
        geo[G_K],
        nk,
        c,
        lo,
        S[0][r, C_CHEAD],
        S[0][r, C_DEPOCH],
        v,
        p,
        vals,
    )
    return p + nk * nh


@njit(cache=True, inline="always")
def _decayed_rows(acc, ring, tot, fs, R, K, nk, c, lo, head, epoch, v, p, vals):
    for i in range(fs.shape[0]):
        f = fs[i]
        scale = math.pow(f, np.float64(c - epoch))
        for k in range(nk):
            vals[k] = acc[i * nk + k] * scale
        for b in range(lo, head + 1):
            s = b % R
            if tot[s]:
                w = math.pow(f, np.float64(c - b))
                for k in range(nk):
                    vals[k] = vals[k] + ring[s * K + k] * w
        for k in range(nk):
            v[p] = vals[k]
            p += 1
