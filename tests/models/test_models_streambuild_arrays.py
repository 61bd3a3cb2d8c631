"""The streaming build's own conversion of activity events to arrays (``activity_arrays``) gives
``features.columnar.activity_batch``'s arrays and ``models.dataset.sampled``'s hashes."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from features.columnar import ColumnarTable, activity_batch
from features.errors import InvalidEvent
from models.dataset import _GOLD, _sample_threshold, _seed_crc, sampled
from models.streambuild import activity_arrays
from tests.kit.records import world_records


def _events():
    evs = [r.event for r in world_records(12, 3, seed=11) if r.rank == 1]
    # the edge cases the kernels read: no user, an empty user id, a review with and without a rating
    evs[1] = dataclasses.replace(evs[1], user_id=None)
    evs[2] = dataclasses.replace(evs[2], user_id="")
    evs[3] = dataclasses.replace(evs[3], kind="REVIEW", rating=4)
    evs[4] = dataclasses.replace(evs[4], kind="REVIEW", rating=None)
    evs[5] = dataclasses.replace(evs[5], kind="PAGE_VIEW", rating=3)
    return evs


def test_the_same_arrays_as_activity_batch_and_rows_in_the_same_order():
    evs = _events()
    mine, ref = ColumnarTable(), ColumnarTable()
    for lo, hi in ((0, 7), (7, 300), (300, len(evs))):  # businesses first seen in later batches too
        batch, hashes = activity_arrays(mine, evs[lo:hi], _seed_crc(3))
        expected = activity_batch(ref, evs[lo:hi])
        for name, a, b in zip(expected._fields, batch, expected, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert mine.ids == ref.ids
        want = [(zlib.crc32(e.event_id.encode(), _seed_crc(3)) * _GOLD) & 0xFFFFFFFF for e in evs[lo:hi]]
        assert hashes.tolist() == want
        for e, u in zip(evs[lo:hi], hashes.tolist(), strict=True):
            assert (u < _sample_threshold(0.3)) == sampled(e.event_id, 0.3, seed=3)


def test_an_unknown_kind_is_refused_before_any_row_is_made():
    evs = _events()[:5]
    evs[3] = dataclasses.replace(evs[3], kind="TELEPORT")
    table = ColumnarTable()
    with pytest.raises(InvalidEvent, match="TELEPORT"):
        activity_arrays(table, evs, 0)
    assert len(table) == 0
