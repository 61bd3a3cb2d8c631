"""The trainer's run record (``consumer.trainer.metrics.TrainingRun``): the facts of each run in a
Prometheus textfile and one structured log line, for a finished, a failed and a CLI run."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.logsetup import JsonFormatter
from consumer.trainer.metrics import TrainingRun


def _outcome(promoted: bool):
    gate = SimpleNamespace(
        to_dict=lambda: {"name": "beats_popularity", "passed": promoted, "detail": "x", "value": 0.3, "threshold": 0.2}
    )
    return SimpleNamespace(
        version="v20260101000000-abcdef12",
        promoted=promoted,
        reason="gates failed: beats_popularity" if not promoted else "ok",
        build=SimpleNamespace(data_min_ms=1_767_225_600_000, data_end_ms=1_767_312_000_000, records=1234, examples=99),
        evaluation=SimpleNamespace(
            to_dict=lambda: {"k": 10, "model": {"capture": 0.31, "auc": 0.7}, "popularity": {"capture": 0.2}}
        ),
        gates=[gate],
        snapshot=None,
    )


@pytest.fixture
def run_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("streamrank.trainer.run")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def _textfile(cfg) -> dict[str, dict[tuple, float]]:
    text = (cfg.registry_dir / "metrics" / "streamrank_trainer.prom").read_text()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_training_run_records_facts_in_textfile_and_log(tmp_path, run_log):
    cfg = SimpleNamespace(registry_dir=tmp_path, metrics_port=0)
    rng = SimpleNamespace(to_dict=lambda: {"offsets": {"a": {"0": [0, 10]}}, "min_event_time": 1, "max_event_time": 2})
    with TrainingRun(cfg, rng) as run:
        run.done(_outcome(promoted=False))
    f = _textfile(cfg)
    assert f["streamrank_trainer_last_run_promoted"] == {(): 0.0}
    assert f["streamrank_trainer_last_run_success"] == {(): 1.0}
    assert f["streamrank_trainer_last_run_gate"] == {(("gate", "beats_popularity"),): 0.0}
    assert f["streamrank_trainer_last_run_metric"][(("metric", "capture"), ("scorer", "model"))] == 0.31
    assert f["streamrank_trainer_last_run_data_end_timestamp_seconds"] == {(): 1_767_312_000.0}
    assert f["streamrank_trainer_last_run_events"] == {(): 1234.0}
    line = json.loads(run_log.getvalue().splitlines()[-1])
    assert line["msg"] == "training run finished"
    assert line["run"]["reason"].startswith("gates failed") and line["run"]["data_range"]["offsets"] == {
        "a": {"0": [0, 10]}
    }
    assert line["run"]["duration_s"] >= 0


def test_a_failed_training_run_is_recorded_and_reraised(tmp_path, run_log):
    cfg = SimpleNamespace(registry_dir=tmp_path, metrics_port=0)
    with pytest.raises(RuntimeError, match="broker gone"), TrainingRun(cfg, None):
        raise RuntimeError("broker gone")
    f = _textfile(cfg)
    assert f["streamrank_trainer_last_run_success"] == {(): 0.0}
    line = json.loads(run_log.getvalue().splitlines()[-1])
    assert line["level"] == "error" and "broker gone" in line["run"]["error"]


@pytest.fixture
def root_logging():
    """`streamrank train` reconfigures the root logger (onto this test's captured stderr): undo it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_streamrank_train_records_a_failed_run(tmp_path, run_log, root_logging):
    """Through the CLI: a log too short to train on still leaves its run in the textfile and log."""
    from consumer.cli import main

    events = tmp_path / "tiny.avro"
    assert (
        main(
            [
                "generate",
                "--businesses",
                "10",
                "--days",
                "2",
                "--cities",
                "1",
                "--categories",
                "1",
                "--out",
                str(events),
            ]
        )
        == 0
    )
    assert main(["train", "--from-file", str(events), "--registry", str(tmp_path / "reg")]) == 1
    f = _textfile(SimpleNamespace(registry_dir=tmp_path / "reg"))
    assert f["streamrank_trainer_last_run_success"] == {(): 0.0}
    assert f["streamrank_trainer_last_run_promoted"] == {(): 0.0}
    line = json.loads(run_log.getvalue().splitlines()[-1])
    assert line["run"]["result"] == "failed" and "TrainingError" in line["run"]["error"]


def test_the_snapshot_metrics_the_gates_judged_and_an_undecided_gate_are_exported(tmp_path, run_log):
    """The gates judge the snapshot frame (models.snapshots): its metrics, with their interval
    bounds, are what an operator must see next to the gate values; a gate the data could not decide
    ("insufficient validation data") is -2, not a pass, a failure or a skip."""
    cfg = SimpleNamespace(registry_dir=tmp_path, metrics_port=0)
    outcome = _outcome(promoted=False)
    outcome.gates = [
        SimpleNamespace(
            to_dict=lambda: {"name": "beats_popularity", "passed": None, "insufficient": True, "detail": "too few"}
        ),
        SimpleNamespace(to_dict=lambda: {"name": "sanity", "passed": True, "insufficient": False, "detail": "ok"}),
    ]
    snapshot = {
        "k": 3,
        "model": {
            "capture": {"value": 0.46, "low": 0.36, "high": 0.60},
            "auc": {"value": 0.85, "low": 0.8, "high": 0.9},
        },
        "popularity": {"capture": {"value": 0.42, "low": 0.31, "high": 0.57}},
        "model_minus_popularity": {"capture": {"value": 0.04, "low": 0.01, "high": 0.08}},
        "sufficiency": {"enough": False, "conversions": 12.0, "markets": 2},
    }
    outcome.snapshot = SimpleNamespace(to_dict=lambda: snapshot)
    with TrainingRun(cfg, None) as run:
        run.done(outcome)
    f = _textfile(cfg)
    assert f["streamrank_trainer_last_run_gate"] == {(("gate", "beats_popularity"),): -2.0, (("gate", "sanity"),): 1.0}
    snap = f["streamrank_trainer_last_run_snapshot_metric"]
    assert snap[(("bound", "value"), ("metric", "capture"), ("scorer", "model"))] == 0.46
    assert snap[(("bound", "low"), ("metric", "capture"), ("scorer", "model"))] == 0.36
    assert snap[(("bound", "high"), ("metric", "capture"), ("scorer", "model_minus_popularity"))] == 0.08
    assert f["streamrank_trainer_last_run_snapshot_sufficient"] == {(): 0.0}
    line = json.loads(run_log.getvalue().splitlines()[-1])
    assert line["run"]["snapshot_metrics"]["sufficiency"]["enough"] is False
