"""Compiled steps of the streaming build's walk (``models.streambuild``): labels and pending rows.

After the fold (``features.columnar``) a batch of activity is walked in order for what the build
keeps: the conversions a label may count, the sampled scoring moments parked as rows, and the rows
whose label window has closed. :func:`walk_kernel` is that walk, the Python rules of
``PartitionBuild`` transcribed step for step over arrays, because it is sequential (each event's
conversion is kept or dropped by what is pending at that moment) and per event in Python it cost
ten times the fold.

State lives in arrays the caller owns and grows (the kernels never allocate it):

* ``st`` - scalars, indexed by the ``ST_*`` constants;
* ``P`` - the pending rows: a binary heap on (T, seq) (``hT``, ``hseq``, ``hslot``), a stack of
  free slots, and the slots' integer columns (time, as_of, business row, market code, offset, u);
* ``C`` - the label memory: conversion entries (time, pair id, next entry of the same business),
  a stack of free entries, the first entry per business row, and the live entry per pair id (a
  pair is a (business row, event id) the caller numbers: the memory's duplicate check).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# st
ST_MAX, ST_HAS_MAX, ST_PRUNED, ST_HAS_PRUNED, ST_SEQ = 0, 1, 2, 3, 4
ST_MOMENTS, ST_SAMPLED, ST_CONVS, ST_WRITTEN, ST_HN, ST_NFREE, ST_ENFREE = 5, 6, 7, 8, 9, 10, 11
N_ST = 12
# P
P_HT, P_HSEQ, P_HSLOT, P_FREE, P_TIME, P_ASOF, P_BROW, P_MCODE, P_OFFSET, P_U = range(10)
# C
C_TIME, C_PID, C_NEXT, C_FREE, C_HEAD, C_PAIR = range(6)

NO_TIME = -(2**62)  # PartitionBuild._due with nothing folded yet


# The kernels below take the arrays they touch one by one: a call that passed the P or C tuple
# paid a reference count update per array in it, which made a heap pop four times its work.
@njit(cache=True, inline="always")
def _less(hT, hseq, i, j):
    return hT[i] < hT[j] or (hT[i] == hT[j] and hseq[i] < hseq[j])


@njit(cache=True, inline="always")
def _swap(hT, hseq, hslot, i, j):
    hT[i], hT[j] = hT[j], hT[i]
    hseq[i], hseq[j] = hseq[j], hseq[i]
    hslot[i], hslot[j] = hslot[j], hslot[i]


@njit(cache=True)
def heap_push(st, hT, hseq, hslot, T, slot):
    """Park ``slot`` with window start ``T`` (the next sequence number breaks ties, as heapq's tuples did)."""
    st[ST_SEQ] += 1
    i = st[ST_HN]
    st[ST_HN] += 1
    hT[i], hseq[i], hslot[i] = T, st[ST_SEQ], slot
    while i > 0:
        parent = (i - 1) >> 1
        if not _less(hT, hseq, i, parent):
            break
        _swap(hT, hseq, hslot, i, parent)
        i = parent


@njit(cache=True)
def heap_pop(st, hT, hseq, hslot):
    """The slot with the smallest (T, seq), removed from the heap (its slot is not freed)."""
    top = hslot[0]
    n = st[ST_HN] - 1
    st[ST_HN] = n
    if n > 0:
        hT[0], hseq[0], hslot[0] = hT[n], hseq[n], hslot[n]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and _less(hT, hseq, c + 1, c):
                c += 1
            if not _less(hT, hseq, c, i):
                break
            _swap(hT, hseq, hslot, i, c)
            i = c
    return top


@njit(cache=True)
def park_rows(st, P, times):
    """Park one row per time (in order): returns the slots the caller fills."""
    hT, hseq, hslot, free, ptime = P[P_HT], P[P_HSEQ], P[P_HSLOT], P[P_FREE], P[P_TIME]
    slots = np.empty(times.shape[0], np.int64)
    for j in range(times.shape[0]):
        st[ST_NFREE] -= 1
        slots[j] = free[st[ST_NFREE]]
        ptime[slots[j]] = times[j]
        heap_push(st, hT, hseq, hslot, times[j], slots[j])
    return slots


@njit(cache=True)
def label_of(head, etime, enext, brow, T, H):
    """Conversions of business row ``brow`` in memory stamped in ``(T, T + H]`` (PartitionBuild._label)."""
    n = 0
    e = head[brow]
    while e >= 0:
        c = etime[e]
        if T < c <= T + H:
            n += 1
        e = enext[e]
    return float(n)


@njit(cache=True)
def labels_of(C, brows, times, H):
    head, etime, enext = C[C_HEAD], C[C_TIME], C[C_NEXT]
    out = np.empty(brows.shape[0], np.float64)
    for j in range(brows.shape[0]):
        out[j] = label_of(head, etime, enext, brows[j], times[j], H)
    return out


@njit(cache=True, inline="always")
def _due(st, W):
    return st[ST_MAX] - W if st[ST_HAS_MAX] else NO_TIME


@njit(cache=True, inline="always")
def _forget_before(st, hT, W, next_t, has_next):
    cut = _due(st, W)
    if st[ST_HN] > 0 and hT[0] < cut:
        cut = hT[0]
    if has_next and next_t < cut:
        cut = next_t
    return cut


@njit(cache=True)
def add_entry(st, C, brow, pid, t):
    _add_entry(st, C[C_TIME], C[C_PID], C[C_NEXT], C[C_FREE], C[C_HEAD], C[C_PAIR], brow, pid, t)


@njit(cache=True, inline="always")
def _add_entry(st, etime, epid, enext, efree, head, pair, brow, pid, t):
    st[ST_ENFREE] -= 1
    e = efree[st[ST_ENFREE]]
    etime[e], epid[e] = t, pid
    enext[e] = head[brow]
    head[brow] = e
    pair[pid] = e


@njit(cache=True)
def forget(st, etime, epid, enext, efree, head, pair, n_rows, cut):
    """Drop the conversions stamped at or before ``cut`` (PartitionBuild._forget)."""
    for r in range(n_rows):
        prev = -1
        e = head[r]
        while e >= 0:
            nxt = enext[e]
            if etime[e] <= cut:
                if prev < 0:
                    head[r] = nxt
                else:
                    enext[prev] = nxt
                pair[epid[e]] = -1
                efree[st[ST_ENFREE]] = e
                st[ST_ENFREE] += 1
            else:
                prev = e
            e = nxt


@njit(cache=True)
def walk_kernel(  # noqa: PLR0913
    st,
    P,
    C,
    pX,
    p_kind,
    p_pop,
    p_recent,
    brows,
    times,
    pids,
    outcomes,
    clocks,
    us,
    X,
    mcode_row,
    lcf,
    prm,
    out_slot,
    out_label,
):
    """Walk a folded batch in order (PartitionBuild._activity): remember conversions (``pids`` >= 0),
    park the sampled scoring moments (feature rows ``X`` in scoring order), and label the rows due
    whenever the newest activity time moves on, writing their slots and labels to ``out_*``.
    ``prm``: W (horizon + lateness), H, grid step, sampling threshold, event rows?, next_t, has
    next_t?, rows in the table, scored code. Returns how many rows were labelled."""
    W, H, every, threshold, event_rows = prm[0], prm[1], prm[2], prm[3], prm[4]
    next_t, has_next, n_rows, scored_code = prm[5], prm[6], prm[7], prm[8]
    hT, hseq, hslot, free = P[P_HT], P[P_HSEQ], P[P_HSLOT], P[P_FREE]
    ptime, pasof, pbrow, pmcode, poffset, pu = P[P_TIME], P[P_ASOF], P[P_BROW], P[P_MCODE], P[P_OFFSET], P[P_U]
    etime, epid, enext, efree, head, pair = C[C_TIME], C[C_PID], C[C_NEXT], C[C_FREE], C[C_HEAD], C[C_PAIR]
    n_out = 0
    k = 0
    for i in range(brows.shape[0]):
        t = times[i]
        pid = pids[i]
        # PartitionBuild._remember_conversion: a pair already in memory is a re-delivery; a new
        # one is counted, and kept if some window can still count it
        if pid >= 0 and pair[pid] < 0:
            st[ST_CONVS] += 1
            if t > _forget_before(st, hT, W, next_t, has_next):
                _add_entry(st, etime, epid, enext, efree, head, pair, brows[i], pid, t)
        if outcomes[i] == scored_code:
            st[ST_MOMENTS] += 1
            if event_rows and us[i] < threshold:
                st[ST_SAMPLED] += 1
                st[ST_NFREE] -= 1
                s = free[st[ST_NFREE]]
                x = X[k]
                pX[s] = x
                p_kind[s] = 0  # shards.EVENT
                pop = np.float32(0.0)  # the Python sum of float32 features: float32 arithmetic
                for j in lcf:
                    pop += x[j]
                p_pop[s], p_recent[s] = pop, 0.0
                c, b = clocks[i], brows[i]
                ptime[s], pasof[s], pbrow[s], pmcode[s], poffset[s], pu[s] = (
                    c,
                    c,
                    b,
                    mcode_row[b],
                    st[ST_MOMENTS],
                    us[i],
                )
                heap_push(st, hT, hseq, hslot, c, s)
            k += 1
        if not st[ST_HAS_MAX] or t > st[ST_MAX]:
            st[ST_MAX], st[ST_HAS_MAX] = t, 1
            # PartitionBuild._settle: label what is due; once per grid step, forget what no window counts
            due = _due(st, W)
            while st[ST_HN] > 0 and hT[0] <= due:
                s = heap_pop(st, hT, hseq, hslot)
                out_slot[n_out] = s
                out_label[n_out] = label_of(head, etime, enext, pbrow[s], ptime[s], H)
                n_out += 1
                st[ST_WRITTEN] += 1
            step = due // every
            if not st[ST_HAS_PRUNED] or step != st[ST_PRUNED]:
                st[ST_PRUNED], st[ST_HAS_PRUNED] = step, 1
                forget(st, etime, epid, enext, efree, head, pair, n_rows, _forget_before(st, hT, W, next_t, has_next))
    return n_out
