"""Fit engines (models.fitdata): the default path pinned, external memory vs in memory, whole groups."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xgboost as xgb

from features.spec import DEFAULT_SPEC
from models.baseline import PopularityMargin
from models.benchfit import loaders, save_chunks, synthetic_fitset
from models.dataset import DAY_MS
from models.errors import SplitGroupError, TrainingError
from models.evaluate import auc, topk_capture
from models.fitdata import ExternalMemoryData, ExternalMemoryEngine, check_whole_groups, group_ranges
from models.train import FitSet, TrainOptions, dmatrix, fit, load_chunks


# ------------------------------------------------------------------------- pinned default
def pinned_fitset(rows: int = 3000, seed: int = 7) -> FitSet:
    """Frozen generator of the pin below: changing it changes the pinned numbers."""
    rng = np.random.default_rng(seed)
    n_feat = len(DEFAULT_SPEC.names)
    X = rng.poisson(2.0, size=(rows, n_feat)).astype(np.float32)
    X[rng.random((rows, n_feat)) < 0.05] = np.nan
    day = rng.integers(0, 20, rows)
    market = rng.integers(0, 6, rows)
    groups = (day * 6 + market).astype(np.int64)
    rng.shuffle(groups)  # not sorted: the fit sorts by qid itself
    day = groups // 6
    signal = np.nan_to_num(X[:, 3] + 0.5 * X[:, 6] - 0.3 * X[:, 10])
    y = rng.poisson(np.exp(0.25 * signal - 2.0)).astype(np.float32)
    time = (1_700_000_000_000 // DAY_MS + day) * DAY_MS + rng.integers(0, DAY_MS, rows)
    return FitSet(X, y, groups, time.astype(np.int64), np.full(rows, "events", dtype=object))


# Computed with models/train.py as of b1fa4d5 (before the engines), XGBoost 3.2.0.
PINNED_AUTO_MARGIN = {
    "objective": "binary:logistic",
    "rounds": 5,
    "objectives": {"rank:ndcg": 0.6925255187530003, "binary:logistic": 0.7104572543904935},
    "margins": [-3.1214888095855713, -2.1426029205322266, -2.377046823501587, -2.723625898361206],
    "sha256": "38baebdd703c127d1e3d9458a14a889745d9afb38ddca935bc4ed9c3c680eed2",
}
PINNED_RANK = {
    "rounds": 40,
    "criterion": 0.6794192502422809,
    "margins": [-0.6910076141357422, -0.3218314051628113, 0.021305693313479424, -0.4700503349304199],
    "sha256": "fe5af8ded72fe54fe5a71a72226acde183ed8165a9fcea317bb6a58f46aadbd7",
}


def _pin_check(fr, pin: dict, ex: FitSet) -> None:
    margins = fr.booster.predict(xgb.DMatrix(ex.X[:4]), output_margin=True)
    np.testing.assert_allclose(margins, pin["margins"], rtol=1e-6)
    if xgb.__version__.startswith("3.2."):  # the serialized bytes are XGBoost-version specific
        assert hashlib.sha256(bytes(fr.booster.save_raw("ubj"))).hexdigest() == pin["sha256"]


def test_default_path_is_bit_identical_to_the_fit_before_engines():
    ex = pinned_fitset()
    fr = fit(ex, TrainOptions(), DAY_MS, PopularityMargin(DEFAULT_SPEC))
    assert fr.engine == "memory" and fr.to_dict()["engine"] == "memory"
    assert (fr.objective, fr.rounds, fr.objectives) == (
        PINNED_AUTO_MARGIN["objective"],
        PINNED_AUTO_MARGIN["rounds"],
        PINNED_AUTO_MARGIN["objectives"],
    )
    _pin_check(fr, PINNED_AUTO_MARGIN, ex)
    rank = fit(ex, TrainOptions(objective="rank:ndcg"), DAY_MS)
    assert (rank.rounds, rank.best_score) == (PINNED_RANK["rounds"], PINNED_RANK["criterion"])
    _pin_check(rank, PINNED_RANK, ex)


def test_the_default_fit_never_imports_dask():
    code = textwrap.dedent(
        """
        import sys
        from models.benchfit import synthetic_fitset
        from models.train import TrainOptions, fit
        fr = fit(synthetic_fitset(400), TrainOptions(objective="binary:logistic", num_boost_round=3))
        assert fr.engine == "memory"
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ groups
def test_group_ranges_hold_whole_groups_within_the_batch_size():
    groups = np.repeat(np.arange(10), [3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    edges = group_ranges(groups, 6)
    part = np.searchsorted(edges, groups, side="right")
    sizes = np.bincount(part)
    assert all(s <= 6 or len(np.unique(groups[part == i])) == 1 for i, s in enumerate(sizes))  # 9 stands alone
    for g in np.unique(groups):
        assert len(np.unique(part[groups == g])) == 1


def test_check_whole_groups_refuses_a_split_or_unsorted_group():
    check_whole_groups([np.array([1, 1, 2]), np.array([3, 5, 5])])  # whole and sorted: fine
    with pytest.raises(SplitGroupError, match="group 2"):
        check_whole_groups([np.array([1, 2]), np.array([7, 2])], ordered=False)
    with pytest.raises(SplitGroupError, match="starts with group 2 after group 2"):
        check_whole_groups([np.array([1, 2]), np.array([2, 3])])
    with pytest.raises(SplitGroupError, match="out of order"):
        check_whole_groups([np.array([3, 1])])
    check_whole_groups([np.array([5, 5]), np.array([1])], ordered=False)  # Dask: disjoint is enough


# --------------------------------------------------------------------- external memory
ROWS = 2400


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """A FitSet, its held-out later days, and loaders of .npz chunks cut regardless of groups."""
    full = synthetic_fitset(ROWS + 600, seed=3, days=24, group_rows=20)
    later = full.time >= full.time.min() // DAY_MS * DAY_MS + 20 * DAY_MS
    train, held = full.take(np.flatnonzero(~later)), full.take(np.flatnonzero(later))
    paths = save_chunks(train, tmp_path_factory.mktemp("chunks"), 700)
    return train, held, paths


def _metrics(fr, held: FitSet, margin) -> tuple[float, float]:
    s = fr.booster.predict(xgb.DMatrix(held.X), output_margin=True) + margin.values(held.X)
    return auc(held.y, s), topk_capture(held.y, s, held.groups, 3)


def test_chunks_are_regrouped_so_batches_hold_whole_groups_in_the_in_memory_order(chunked, tmp_path):
    train, _, paths = chunked
    cut = [np.load(p)["groups"] for p in paths]
    assert set(cut[0]) & set(cut[1]), "the input chunks cut groups (what the re-chunking is for)"
    margin = PopularityMargin(DEFAULT_SPEC)
    data = ExternalMemoryData(loaders(paths), tmp_path, batch_bytes=300 * 80 * 4)
    batches = list(data.arrays(None, "rank:ndcg", margin))
    assert len(batches) > 3
    check_whole_groups([b["qid"] for b in batches])
    # exactly the rows, labels, groups and margins the in-memory DMatrix gets, in its order
    order = np.argsort(train.groups, kind="stable")
    np.testing.assert_array_equal(np.concatenate([b["data"] for b in batches]), train.X[order])
    np.testing.assert_array_equal(np.concatenate([b["qid"] for b in batches]), train.groups[order])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), train.y[order])
    params = TrainOptions(objective="rank:ndcg").xgb_params()
    ext, mem = data.matrix(None, params, margin), dmatrix(train, "rank:ndcg", margin)
    assert isinstance(ext, xgb.ExtMemQuantileDMatrix)
    assert ext.num_row() == mem.num_row() == len(train)
    np.testing.assert_array_equal(ext.get_label(), mem.get_label())
    np.testing.assert_array_equal(ext.get_base_margin(), mem.get_base_margin())
    np.testing.assert_array_equal(ext.get_uint_info("group_ptr"), mem.get_uint_info("group_ptr"))
    data.close()


def test_a_batch_plan_that_splits_a_group_is_refused(chunked, tmp_path):
    _, _, paths = chunked
    data = ExternalMemoryData(loaders(paths), tmp_path)
    ordered = np.argsort(data.rows.groups, kind="stable")
    g = data.rows.groups[ordered]
    cut = int(np.flatnonzero(g[1:] == g[:-1])[len(g) // 2]) + 1  # between two rows of one group
    data.batches = lambda idx, objective: [ordered[:cut], ordered[cut:]]  # type: ignore[method-assign]
    with pytest.raises(SplitGroupError, match=f"group {g[cut]}"):
        data.matrix(None, TrainOptions(objective="rank:ndcg").xgb_params(), None)
    data.close()


def test_external_memory_fit_matches_the_in_memory_fit(chunked, tmp_path):
    """Tolerance: AUC and top-3 capture on held-out days within 0.01 of the in-memory fit (the
    quantile sketch of batches may cut bins slightly differently; on this set it does not)."""
    train, held, paths = chunked
    margin = PopularityMargin(DEFAULT_SPEC)
    opts = TrainOptions(num_boost_round=30)
    mem = fit(train, opts, DAY_MS, margin)
    calls = []

    def counted(load, i):
        return lambda: (calls.append(i), load())[1]

    chunks = [counted(load, i) for i, load in enumerate(loaders(paths))]
    ext = fit(chunks, opts, DAY_MS, margin, engine=ExternalMemoryEngine(tmp_path, batch_bytes=400 * 80 * 4))
    assert calls == list(range(len(paths))), "each chunk is loaded once"
    assert ext.engine == "external_memory" and ext.engine_detail["ext_mem_matrices"] >= 3  # inner x2 + refit
    assert ext.examples == mem.examples and ext.inner == mem.inner  # the same rows and inner split
    assert ext.objective == mem.objective and abs(ext.rounds - mem.rounds) <= 10
    for a, b in zip(_metrics(ext, held, margin), _metrics(mem, held, margin), strict=True):
        assert abs(a - b) <= 0.01
    assert list(tmp_path.iterdir()) == [], "the spill directory is removed after the fit"


def test_auto_engine_goes_to_external_memory_above_the_budget(chunked):
    train, _, paths = chunked
    opts = TrainOptions(objective="binary:logistic", num_boost_round=5)
    small = opts.with_(memory_budget_bytes=200_000)  # under 2400 rows x 80 features x 4 bytes
    assert fit(train, small, DAY_MS).engine == "external_memory"
    assert fit(loaders(paths), small, DAY_MS).engine == "external_memory"
    # under the budget, chunks are loaded into memory: the very same booster as the FitSet's
    a = fit(loaders(paths), opts.with_(memory_budget_bytes=10**9), DAY_MS)
    b = fit(load_chunks(loaders(paths)), opts, DAY_MS)
    assert a.engine == b.engine == "memory"
    assert bytes(a.booster.save_raw("ubj")) == bytes(b.booster.save_raw("ubj"))
    with pytest.raises(TrainingError):
        fit(train, opts, DAY_MS, engine="spark")
    with pytest.raises(TrainingError):
        TrainOptions(memory_budget_bytes=0)
