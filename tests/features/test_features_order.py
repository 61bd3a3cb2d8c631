"""The head merge (``features.order.HeadMerger``): runs pushed as arrays release the same records,
in the same order, as the records pushed one at a time, whatever the chunking, limits and
caught-up flags."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.order import ACTIVITY_RANK, BUSINESS_RANK, HeadMerger

times = st.lists(st.integers(0, 6), max_size=25)


def _released(merger: HeadMerger, steps: list[tuple[bool, bool, int]]) -> list:
    out: list = []
    for b_done, a_done, limit in [*steps, (True, True, 10_000)]:
        for item in merger.pop_ready(b_done, a_done, limit):
            out.extend(item if isinstance(item, list) else [item])
    return out


@settings(max_examples=300, deadline=None)
@given(
    b=times,
    a=times,
    cuts=st.lists(st.integers(1, 8), min_size=1, max_size=10),
    steps=st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(1, 9)), max_size=6),
    run_rank=st.sampled_from([BUSINESS_RANK, ACTIVITY_RANK]),
)
def test_runs_release_what_single_records_release(b, a, cuts, steps, run_rank):
    streams = {BUSINESS_RANK: b, ACTIVITY_RANK: a}
    one, runs = HeadMerger(), HeadMerger()
    for rank, ts in streams.items():
        for off, t in enumerate(ts):
            one.push(rank, t, off, (rank, off))
        if rank != run_rank:
            for off, t in enumerate(ts):
                runs.push(rank, t, off, (rank, off))
            continue
        tarr, oarr = np.array(ts, np.int64), np.arange(len(ts), dtype=np.int64)
        lo, i = 0, 0
        while lo < len(ts):  # the stream in runs of the given lengths (a poll batch each)
            hi = min(len(ts), lo + cuts[i % len(cuts)])
            runs.push_run(rank, tarr, oarr, lo, hi, lambda i, j, r=rank: [(r, o) for o in range(i, j)])
            lo, i = hi, i + 1
    assert runs.pending() == one.pending() == len(a) + len(b)
    assert runs.first_offset(run_rank) == (0 if streams[run_rank] else None)
    # The same decisions with the same record budgets: one release per step, then everything.
    assert _released(runs, steps) == _released(one, steps)
    assert runs.pending() == 0


def test_a_run_item_is_cut_at_the_other_streams_head_and_at_the_limit():
    m: HeadMerger = HeadMerger()
    m.push(BUSINESS_RANK, 5, 0, "b0")
    m.push_run(ACTIVITY_RANK, np.array([1, 2, 5, 6]), np.arange(4), 0, 4, lambda i, j: (i, j))
    # activity at time 5 comes after the business record at time 5 (business first on ties)
    assert list(m.pop_ready(False, False, 1)) == [(0, 1)]
    assert list(m.pop_ready(False, False)) == [(1, 2), "b0"]
    assert m.first_offset(ACTIVITY_RANK) == 2 and m.queued(ACTIVITY_RANK) == 2
    assert list(m.pop_ready(False, False)) == []  # the business stream is not caught up
    assert list(m.pop_ready(True, False)) == [(2, 4)]
