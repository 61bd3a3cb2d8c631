"""The trainer's streaming build on a real broker (issue 19): partition by partition from the
input topics, a second run reads only what was published after the first, and the rows equal a
one-run build of the whole log."""

from __future__ import annotations

import pytest

from consumer.io.inputlog import KafkaPartitionLog, read_input_log
from consumer.io.publish import publish_records
from models.buildstore import RecordsLog, build
from models.streambuild import BuildConfig
from sim.world import WorldConfig, generate_records
from tests.models.test_models_streambuild import canon


@pytest.mark.tansu_smoke  # the demo trains through this reader on Tansu
def test_a_second_run_reads_only_the_new_records_and_matches_one_run(kafka_config, tmp_path):
    cfg = kafka_config
    records = list(generate_records(WorldConfig(businesses=30, days=6, seed=11, cities=2, categories=2)))
    cut = len(records) * 2 // 3
    publish_records(cfg, records[:cut])
    first = build(KafkaPartitionLog(cfg), tmp_path / "inc", BuildConfig())
    assert first.stats.records == cut and not first.incremental
    publish_records(cfg, records[cut:])
    second = build(KafkaPartitionLog(cfg), tmp_path / "inc", BuildConfig(), workers=2)
    assert second.incremental and second.stats.records == len(records) - cut
    whole = build(KafkaPartitionLog(cfg), tmp_path / "one", BuildConfig())
    assert whole.stats.records == len(records)
    assert canon(second.rows()) == canon(whole.rows())
    # and the same rows as a build of the log read whole (the in-memory reader)
    in_memory = build(RecordsLog(list(read_input_log(cfg))), tmp_path / "mem", BuildConfig())
    assert canon(in_memory.rows()) == canon(whole.rows())


def _records_read(err: str) -> int:
    """The new records of every partition, from ``streamrank train``'s progress lines."""
    lines = [line for line in err.splitlines() if " new records in " in line]
    return sum(int(line.split("): ")[1].split(" new records")[0].replace(",", "")) for line in lines)


def test_streamrank_train_resumes_its_work_dir_and_runs_on_a_local_dask_cluster(
    kafka_config, tmp_path, monkeypatch, capsys
):
    from consumer.cli import main
    from models.registry import ModelRegistry

    cfg = kafka_config
    for var, value in [
        ("KAFKA_BOOTSTRAP_SERVERS", cfg.bootstrap),
        ("STREAMRANK_BUSINESS_TOPIC", cfg.business_topic),
        ("STREAMRANK_ACTIVITY_TOPIC", cfg.activity_topic),
        ("STREAMRANK_REGISTRY", str(tmp_path / "reg")),
    ]:
        monkeypatch.setenv(var, value)
    records = list(generate_records(WorldConfig(businesses=40, days=16, seed=3, cities=2, categories=2)))
    cut = len(records) * 9 // 10
    publish_records(cfg, records[:cut])
    assert main(["train", "--validation-days", "4", "--workers", "2"]) == 0
    assert _records_read(capsys.readouterr().err) == cut
    assert (tmp_path / "reg" / ".train-build" / "build.json").exists()
    publish_records(cfg, records[cut:])
    assert main(["train", "--validation-days", "4", "--dask", "local:2"]) == 0
    assert _records_read(capsys.readouterr().err) == len(records) - cut
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.metadata(reg.latest_version())["training"]["engine"] == "dask"
