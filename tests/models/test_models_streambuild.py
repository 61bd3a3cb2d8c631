"""The streaming build (issue 19): the same rows whether built in one run, in increments or in
parallel, a checkpoint that survives a crash and is discarded when the feature set changes. Its
rules (labels, snapshots, sampling, start) are checked against brute force through
``models.rowsets.build_training_set`` / ``build_snapshot_frame`` in test_models_dataset.py,
test_models_snapshots.py and test_models_training_examples.py."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil

import pytest

from features.spec import DEFAULT_SPEC
from models.buildstore import RecordsLog, build
from models.shards import Rows
from models.streambuild import BuildConfig
from tests.kit.records import world_records


@pytest.fixture(scope="module")
def world():
    return world_records(50, 18, seed=3)


@pytest.fixture(scope="module")
def one_shot(world, tmp_path_factory):
    return build(RecordsLog(world), tmp_path_factory.mktemp("one"), BuildConfig())


def canon(rows: Rows) -> list[tuple]:
    """Every row, order-free: kind, time, business, label, moment, feature bytes."""
    cols = (rows["kind"], rows["time"], rows["business"], rows["y"], rows["offset"])
    return sorted(zip(*(c.tolist() for c in cols), (x.tobytes() for x in rows["X"]), strict=True))


def test_ten_increments_give_the_one_run_rows(world, one_shot, tmp_path):
    rnd = random.Random(7)
    cuts = sorted(rnd.sample(range(1, len(world)), 9)) + [len(world)]
    for i, cut in enumerate(cuts):
        res = build(RecordsLog(world[:cut]), tmp_path, BuildConfig())
        assert res.incremental == (i > 0)
    # the last increment read only what the ninth had not
    assert res.stats.records == len(world) - cuts[-2]
    assert canon(res.rows()) == canon(one_shot.rows())


def test_two_processes_give_the_one_process_rows(world, one_shot, tmp_path):
    res = build(RecordsLog(world), tmp_path, BuildConfig(), workers=2)
    assert len(res.partitions) == 2 and canon(res.rows()) == canon(one_shot.rows())


def test_a_run_that_died_after_writing_shards_is_redone_identically(world, one_shot, tmp_path):
    half = len(world) // 2
    build(RecordsLog(world[:half]), tmp_path, BuildConfig())
    saved = tmp_path.parent / (tmp_path.name + "-saved")
    shutil.copytree(tmp_path / "parts", saved)
    build(RecordsLog(world), tmp_path, BuildConfig())  # its shards stay, its checkpoints are lost:
    shutil.rmtree(tmp_path / "parts")
    shutil.copytree(saved, tmp_path / "parts")
    res = build(RecordsLog(world), tmp_path, BuildConfig())
    assert res.stats.records == len(world) - half
    assert canon(res.rows()) == canon(one_shot.rows())


def test_a_changed_feature_set_rebuilds_from_the_start(world, tmp_path, caplog):
    build(RecordsLog(world[:1000]), tmp_path, BuildConfig())
    other = BuildConfig(
        spec=dataclasses.replace(DEFAULT_SPEC, allowed_lateness_ms=DEFAULT_SPEC.allowed_lateness_ms + 1)
    )
    with caplog.at_level(logging.WARNING, logger="streamrank.models.build"):
        res = build(RecordsLog(world[:2000]), tmp_path, other)
    assert res.rebuilt and "feature_set_version" in res.rebuilt and not res.incremental
    assert res.stats.records == 2000  # read from the log's start
    assert any("rebuilding from the log's start" in r.getMessage() for r in caplog.records)


def test_memory_holds_pending_rows_not_the_log(tmp_path):
    """Labelled rows leave memory as their windows close: what waits at the end is about one
    horizon plus the lateness of rows, not the history."""
    from models.buildstore import load_partition

    world = world_records(30, 40, seed=5)
    build(RecordsLog(world), tmp_path, BuildConfig())
    for p in (0, 1):
        pb = load_partition(tmp_path, BuildConfig(), p)
        assert pb.counts.rows_written > 20 * len(pb.pending)
        assert all(t > pb.max_time - 2 * 86_400_000 for t, _, _ in pb.pending)


def test_a_dask_cluster_builds_the_same_rows(world, one_shot, tmp_path):
    """Partitions as tasks on a local Dask cluster of two worker processes (the sources and
    summaries cross process boundaries, as on a real cluster)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = build(RecordsLog(world), tmp_path, BuildConfig(), client=client)
    assert {s.pid for s in res.partitions}.isdisjoint({os.getpid()})  # built on the cluster's workers
    assert canon(res.rows()) == canon(one_shot.rows())


def test_a_log_that_restarted_below_the_checkpoint_is_refused(world, tmp_path):
    """A recreated topic starts again at offset 0: folding it into the old state would count it twice."""
    from models.errors import CheckpointMismatch

    build(RecordsLog(world), tmp_path, BuildConfig())

    class Restarted(RecordsLog):
        def read(self, partition, start):
            return super().read(partition, (0, 0))  # a reader that found the log begun again

        def part(self, partition):
            return self

    with pytest.raises(CheckpointMismatch, match=r"business\[0\]@0: .* recreated"):
        build(Restarted(world), tmp_path, BuildConfig())
