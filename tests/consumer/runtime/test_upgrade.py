"""A new feature set deployed over a changelog written by the old one (real broker): the worker
rebuilds the affected partitions' state from the input topics and serves exactly what a fresh run
serves; an entry that fails to decode on its business's next event gets the same treatment."""

import struct

import pytest
from kafka import KafkaProducer

from consumer.io.publish import publish_records
from consumer.pipeline.store import HEADER, MAGIC
from consumer.runtime.worker import Worker
from features.spec import DEFAULT_SPEC, FeatureSpec
from features.state import STATE_VERSION
from sim.world import DEFAULT_START_MS, WorldConfig, generate_records
from tests.kit.events import DAY
from tests.kit.runs import expected_run
from tests.kit.topics import read_changelog_states, read_predictions, read_topic

pytestmark = pytest.mark.broker

# The previous deployment's feature set: other state parameters, so its states carry another tag.
OLD_SPEC = FeatureSpec(distinct_slots=128)
DAYS = 2
SECOND_START = DEFAULT_START_MS + DAYS * DAY  # the second world's events all come after the first's


@pytest.fixture
def cfg(kafka_config, registry_copy):
    return kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=200)


def _world(cfg, start_ms: int, days: int, seed: int) -> None:
    publish_records(
        cfg,
        generate_records(
            WorldConfig(businesses=30, days=days, seed=seed, cities=2, categories=2, start_time_ms=start_ms)
        ),
    )


def _rebuilds(worker, reason: str) -> float:
    return worker.metrics.registry.get_sample_value("streamrank_state_rebuilds_total", {"reason": reason}) or 0.0


def _states(store):
    return {bid: e.state for part in store.values() for bid, e in part.entries.items()}


def _assert_serves_like_a_fresh_run(cfg, before: set[str]):
    """Every prediction made after the upgrade (ids not in ``before``) is a fresh run's, and the
    changelog holds a fresh run's state."""
    expected, store, _ = expected_run(cfg, cfg.registry_dir)
    want = {k: (p["score"], p["feature_hash"]) for k, p in expected.items() if k not in before}
    got = {
        p["prediction_id"]: (p["score"], p["feature_hash"])
        for p in read_predictions(cfg)
        if p["prediction_id"] not in before
    }
    assert len(want) > 300
    assert got == want
    assert read_changelog_states(cfg) == _states(store)


def _ids(cfg) -> set[str]:
    return {p["prediction_id"] for p in read_predictions(cfg)}


def test_a_changelog_of_another_feature_set_is_rebuilt_from_the_input_topics(cfg):
    assert OLD_SPEC.layout.state_tag != DEFAULT_SPEC.layout.state_tag
    _world(cfg, DEFAULT_START_MS, DAYS, seed=81)
    Worker(cfg, exit_when_idle_s=2, spec=OLD_SPEC).run()  # the old deployment: state, commits
    assert len(read_topic(cfg, cfg.changelog_topic)) > 0
    before = _ids(cfg)
    _world(cfg, SECOND_START, 1, seed=82)
    worker = Worker(cfg, exit_when_idle_s=2)  # the new deployment, default feature set
    stats = worker.run()
    assert [r["reason"] for r in stats.rebuilds] == ["feature_set_changed"]
    assert stats.rebuilds[0]["partitions"] == [0, 1] and stats.rebuilds[0]["records"] > 1000
    assert _rebuilds(worker, "feature_set_changed") == 2
    _assert_serves_like_a_fresh_run(cfg, before)
    # The rebuilt state was written back: the next restart restores it, nothing to rebuild.
    again = Worker(cfg, exit_when_idle_s=1)
    assert again.run().rebuilds == [] and _rebuilds(again, "feature_set_changed") == 0


def test_an_entry_that_fails_to_decode_has_its_partition_rebuilt(cfg):
    _world(cfg, DEFAULT_START_MS, DAYS, seed=83)
    Worker(cfg, exit_when_idle_s=2).run()
    before = _ids(cfg)
    # One entry with valid headers and a corrupt body: only its decode, on its business's next
    # event, can tell.
    victim = next(r for r in read_topic(cfg, cfg.changelog_topic) if r.value is not None and len(r.value) > HEADER.size)
    _, b_off, a_off = HEADER.unpack_from(victim.value)
    state_header = struct.pack("<2sBBI", b"SR", STATE_VERSION, 0, DEFAULT_SPEC.layout.state_tag)
    producer = KafkaProducer(bootstrap_servers=cfg.bootstrap)
    producer.send(
        cfg.changelog_topic,
        key=victim.key,
        value=HEADER.pack(MAGIC, b_off, a_off) + state_header + b"\x00" * 7,
        partition=victim.partition,
    )
    producer.flush()
    producer.close()
    _world(cfg, SECOND_START, 1, seed=84)
    worker = Worker(cfg, exit_when_idle_s=2)
    stats = worker.run()
    assert [(r["reason"], r["partitions"]) for r in stats.rebuilds] == [("unreadable", [victim.partition])]
    assert _rebuilds(worker, "unreadable") == 1
    _assert_serves_like_a_fresh_run(cfg, before)
