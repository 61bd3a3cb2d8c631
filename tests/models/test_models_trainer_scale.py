"""The trainer at scale (issue 19): a run resumes the last run's build, the training snapshots
stay on disk when they exceed the memory budget (XGBoost's external memory), and the fit runs on a
Dask cluster - each giving the training set the in-memory, one-run trainer gets."""

from __future__ import annotations

import pytest

from models.registry import ModelRegistry
from models.train import TrainOptions
from models.trainer import train_and_register
from tests.kit.records import world_records

OPTIONS = TrainOptions(validation_days=5, num_boost_round=30)


@pytest.fixture(scope="module")
def world():
    return world_records(80, 21, seed=12)


@pytest.fixture(scope="module")
def in_memory(world, tmp_path_factory):
    return train_and_register(world, ModelRegistry(tmp_path_factory.mktemp("reg")), options=OPTIONS)


def _auc(outcome) -> float:
    return outcome.snapshot.scores["model"]["auc"].value


def _decision(outcome, event):
    return next(d for d in outcome.metadata["decisions"] if d["event"] == event)


def test_a_second_run_reads_only_the_new_log_and_trains_on_the_same_rows(world, in_memory, tmp_path):
    cut = len(world) * 3 // 4
    reg = ModelRegistry(tmp_path / "reg")
    first = train_and_register(world[:cut], reg, options=OPTIONS, work_dir=tmp_path / "build")
    second = train_and_register(world, reg, options=OPTIONS, work_dir=tmp_path / "build")
    assert not _decision(first, "built")["incremental"] and _decision(second, "built")["incremental"]
    assert second.build.records == len(world) - cut
    assert second.fit.examples == in_memory.fit.examples  # rows, groups, conversions by source
    assert second.snapshot.to_dict()["model"] == in_memory.snapshot.to_dict()["model"]


def test_training_snapshots_over_the_memory_budget_are_fitted_from_the_shards(world, in_memory, tmp_path):
    out = train_and_register(world, ModelRegistry(tmp_path), options=OPTIONS.with_(memory_budget_bytes=1 << 16))
    assert _decision(out, "training_snapshots")["out_of_core"] is True
    assert out.fit.engine == "external_memory" and out.metadata["training"]["engine"] == "external_memory"
    assert out.fit.examples["rows"] == in_memory.fit.examples["rows"]
    assert out.fit.examples["snapshots"]["conversions"] == in_memory.fit.examples["snapshots"]["conversions"]
    # same rows in another order (by shard): another model, within noise
    assert abs(_auc(out) - _auc(in_memory)) < 0.03


def test_the_fit_runs_on_a_dask_cluster(world, in_memory, tmp_path):
    distributed = pytest.importorskip("distributed")
    from models.daskfit import DaskEngine

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c,
        distributed.Client(c) as client,
    ):
        out = train_and_register(world, ModelRegistry(tmp_path), options=OPTIONS, engine=DaskEngine(client))
    assert out.fit.engine == "dask" and out.fit.examples == in_memory.fit.examples
    assert abs(_auc(out) - _auc(in_memory)) < 0.03
