"""Bad model: a corrupt model and a feature-mismatched one are promoted while the worker runs. The
worker refuses both, keeps serving the old model, and raises the refusal metric
(``streamrank_model_refusals_total``, what the alert watches); the invariant holds against a
fault-free run with the old model."""

import json
import shutil
import time

import pytest

from consumer.io.publish import publish_records
from consumer.runtime.worker import Worker
from models.registry import ModelRegistry
from sim.world import WorldConfig, generate_records
from tests.kit.runs import Expected, ThreadedWorker, check_invariant

pytestmark = [pytest.mark.reliability, pytest.mark.broker]


def _refusals(worker):
    return worker.metrics.registry.get_sample_value("streamrank_model_refusals_total")


def test_corrupt_and_mismatched_models_are_refused(cfg, tally):
    registry = ModelRegistry(cfg.registry_dir)
    first = registry.promoted_version()
    records = sorted(
        generate_records(WorldConfig(businesses=30, days=2, seed=95, cities=2, categories=2)),
        key=lambda kr: (kr[1]["event_time"], kr[0] != "business"),
    )
    half = len(records) // 2
    publish_records(cfg, records[:half])

    worker = Worker(cfg.with_overrides(model_poll_s=0.2), exit_when_idle_s=3)
    run = ThreadedWorker(worker).start()
    deadline = time.monotonic() + 30
    while worker.stats.predictions == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.stats.predictions > 0

    corrupt = "v20000101000000-0badbad0"
    shutil.copytree(registry.version_dir(first), registry.path / corrupt)
    (registry.path / corrupt / "model.ubj").write_bytes(b"not a model")
    mismatched = "v20000101000001-0badbad1"
    shutil.copytree(registry.version_dir(first), registry.path / mismatched)
    meta_path = registry.path / mismatched / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_set"]["version"] = meta["feature_set"]["version"] + "-other"
    meta_path.write_text(json.dumps(meta))

    seen = []
    for bad in (corrupt, mismatched):
        registry.promote(bad, f"test: bad model {bad}")
        deadline = time.monotonic() + 10
        while worker.models.refusals < len(seen) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(bad)
        assert worker.models.refusals == len(seen), f"{bad} was not refused"
        assert worker.models.current.version == first
    publish_records(cfg, records[half:])  # traffic after the refusals: still the old model
    stats = run.join(60)

    expected = Expected(cfg, cfg.registry_dir, version=first)
    figures = check_invariant(cfg, expected)
    refusals = _refusals(worker)
    tally(
        "bad_model",
        refused=sorted(worker.models.describe()["refused"]),
        refusal_metric=refusals,
        served=[m["version"] for m in stats.models],
        **figures,
    )
    assert refusals == 2
    assert [m["version"] for m in stats.models] == [first]
    assert sorted(worker.models.describe()["refused"]) == sorted(seen)
