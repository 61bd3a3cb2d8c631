"""The Dask fit engine (models.daskfit) on a LocalCluster of 2 single-thread workers (in-process:
starts in well under a second; the worker code is the same as on a real cluster)."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

pytest.importorskip("distributed")  # the `distributed` extra (installed by the `test` extra)

from features.spec import DEFAULT_SPEC  # noqa: E402
from models import daskfit  # noqa: E402
from models.baseline import PopularityMargin  # noqa: E402
from models.benchfit import loaders, save_chunks, synthetic_fitset  # noqa: E402
from models.dataset import DAY_MS  # noqa: E402
from models.errors import SplitGroupError  # noqa: E402
from models.evaluate import auc, topk_capture  # noqa: E402
from models.fitdata import check_whole_groups  # noqa: E402
from models.train import TrainOptions, fit  # noqa: E402


@pytest.fixture(scope="module")
def client():
    c = daskfit.connect(n_workers=2, threads_per_worker=1, processes=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    full = synthetic_fitset(3000, seed=5, days=24, group_rows=20)
    later = full.time >= full.time.min() // DAY_MS * DAY_MS + 20 * DAY_MS
    train, held = full.take(np.flatnonzero(~later)), full.take(np.flatnonzero(later))
    return train, held, save_chunks(train, tmp_path_factory.mktemp("dask-chunks"), 800)


def test_partitions_hold_the_same_rows_and_never_split_a_group_across_workers(client, sets):
    train, _, paths = sets
    data = daskfit.DaskEngine(client, partitions=4).open(loaders(paths), TrainOptions())
    try:
        # the same training set: labels, groups, times in the input order; features gathered back
        np.testing.assert_array_equal(data.rows.y, train.y)
        np.testing.assert_array_equal(data.rows.groups, train.groups)
        np.testing.assert_array_equal(data.rows.time, train.time)
        parts = client.gather(data.parts)
        ids = np.concatenate(data.part_ids)
        assert sorted(ids.tolist()) == list(range(len(train)))
        np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), train.X[ids])
        # each group in one partition (sorted within), each partition on one worker
        groups = data.partition_groups()
        check_whole_groups(groups)
        workers = data.partition_workers()
        assert all(len(w) == 1 for w in workers) and len(set().union(*workers)) == 2, "both workers hold data"
        owner: dict[int, str] = {}
        for g, (w,) in zip(groups, workers, strict=True):
            for gid in np.unique(g).tolist():
                assert owner.setdefault(gid, w) == w, f"group {gid} on two workers"
    finally:
        data.close()


def test_a_partitioning_that_splits_a_group_is_refused(client, sets, monkeypatch):
    train, _, _ = sets
    real = daskfit._plan

    def split_one(groups, partitions):
        plan = real(groups, partitions)
        moved = plan[0][-1:]  # the last row of partition 0's last group goes to partition 1
        return [plan[0][:-1], np.concatenate([moved, plan[1]]), *plan[2:]]

    monkeypatch.setattr(daskfit, "_plan", split_one)
    with pytest.raises(SplitGroupError):
        daskfit.DaskEngine(client, partitions=4).open(train, TrainOptions())


def test_dask_fit_matches_the_single_process_fit(client, sets):
    """The same protocol on the cluster: same rows, same inner split; tolerance: AUC and top-3
    capture on held-out days within 0.01 of the in-process fit (distributed histogram sums may
    differ in the last bits)."""
    train, held, paths = sets
    margin = PopularityMargin(DEFAULT_SPEC)
    opts = TrainOptions(num_boost_round=20)
    one = fit(train, opts, DAY_MS, margin)
    dist = fit(loaders(paths), opts, DAY_MS, margin, engine=daskfit.DaskEngine(client))
    assert dist.engine == "dask" and dist.engine_detail["workers"] == 2
    assert dist.examples == one.examples and dist.inner == one.inner
    assert set(dist.objectives) == set(one.objectives) == {"rank:ndcg", "binary:logistic"}
    assert dist.objective == one.objective and abs(dist.rounds - one.rounds) <= 5
    assert dist.booster.num_boosted_rounds() == dist.rounds

    def metrics(fr):
        s = fr.booster.predict(xgb.DMatrix(held.X), output_margin=True) + margin.values(held.X)
        return auc(held.y, s), topk_capture(held.y, s, held.groups, 3)

    for a, b in zip(metrics(dist), metrics(one), strict=True):
        assert abs(a - b) <= 0.01
