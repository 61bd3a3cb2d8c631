"""A tombstone (null value) on the compacted business topic, through the worker on the real broker:
the business's state is dropped, every other business keeps being scored, and replay, the trainer
and parity, reading the same log, agree with the worker."""

import signal
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.io.clients import consumer_kwargs
from consumer.io.inputlog import read_input_log
from consumer.pipeline.predictions import feature_hash
from consumer.pipeline.store import applied_offsets, is_deletion
from consumer.runtime.worker import Worker
from consumer.tools.parity import check_parity
from consumer.tools.replay import Position, replay
from models.registry import ModelRegistry
from models.rowsets import build_training_set
from tests.kit.runs import expected_run, start_worker
from tests.kit.topics import prediction_count, publish_world, read_predictions, read_topic

pytestmark = pytest.mark.broker

RECREATED = "b000003"  # tombstoned, then created again by the second world
GONE = "b000007"  # tombstoned for good


@pytest.fixture
def cfg(kafka_config, registry_copy):
    return kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=200)


def _publish_with_tombstones(cfg, businesses=30, days=2) -> None:
    """A world; a tombstone for RECREATED (its later activity and a small second world bring it
    back); then a late profile update of GONE and its tombstone, queued after all its activity."""
    from consumer.io.publish import publish_records
    from sim.world import WorldConfig, generate_records

    world = WorldConfig(businesses=businesses, days=days, seed=61, cities=2, categories=2)
    records = list(generate_records(world))
    publish_records(cfg, records)
    late = max(r["event_time"] for _, r in records) + 3_600_000
    _tombstone(cfg, RECREATED, late)
    publish_world(cfg, businesses=5, days=1, seed=62)
    last = [r for kind, r in records if kind == "business" and r["business_id"] == GONE][-1]
    publish_records(
        cfg, [("business", dict(last, event_id=f"{last['event_id']}-late", kind="UPDATED", event_time=late))]
    )
    _tombstone(cfg, GONE, late)


def _tombstone(cfg, bid: str, timestamp_ms: int) -> None:
    # Stamped in the world's time, as the publisher stamps events: a record stamped "now", months
    # after the world's, makes Kafka roll the segment, and compaction may then rewrite the log
    # between the expected run's read and the worker's.
    producer = KafkaProducer(bootstrap_servers=cfg.bootstrap)
    producer.send(cfg.business_topic, key=bid.encode(), value=None, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def _latest_changelog(cfg) -> dict[str, bytes | None]:
    latest = {}
    for r in read_topic(cfg, cfg.changelog_topic):
        latest[r.key.decode()] = r.value
    return latest


def _live_states(cfg) -> dict:
    from consumer.pipeline.store import decode_entry

    return {k: decode_entry(v).state for k, v in _latest_changelog(cfg).items() if not is_deletion(v)}


def _states(store):
    return {bid: e.state for part in store.values() for bid, e in part.entries.items()}


def test_tombstone_for_a_live_business_drops_its_state_and_the_worker_keeps_scoring(cfg, tmp_path):
    _publish_with_tombstones(cfg)
    expected, store, outcomes = expected_run(cfg, cfg.registry_dir)
    assert outcomes["business_deleted"] == 2
    stats = Worker(cfg, exit_when_idle_s=2).run()
    got = {p["prediction_id"]: p for p in read_predictions(cfg)}
    assert got.keys() == expected.keys()
    for pid, p in expected.items():
        assert (got[pid]["score"], got[pid]["feature_hash"]) == (p["score"], p["feature_hash"])
    assert dict(stats.outcomes) == outcomes
    # Every business but the deleted one is still scored after the tombstones; the re-created one too.
    assert {p["business_id"] for p in got.values()} >= {RECREATED}
    # The changelog ends with a tombstone (or nothing) for the deleted business.
    assert _latest_changelog(cfg).get(GONE) is None
    assert GONE not in _states(store) and RECREATED in _states(store)
    assert _live_states(cfg) == _states(store)

    # Replay, parity (the trainer's fold) and the training set on the same log agree with the worker.
    version = ModelRegistry(cfg.registry_dir).promoted_version()
    out_topic = f"{cfg.predictions_topic}-replay"
    replay(cfg, version, out_topic, Position.earliest())
    replayed = {p["prediction_id"]: p for p in read_predictions(cfg.with_overrides(predictions_topic=out_topic))}
    assert {k: (p["score"], p["feature_hash"]) for k, p in replayed.items()} == {
        k: (p["score"], p["feature_hash"]) for k, p in got.items()
    }
    parity = check_parity(cfg, list(got.values()), n=None)
    assert parity.sampled == len(got) and parity.mismatch_rate == 0.0, parity.examples
    ts = build_training_set(read_input_log(cfg))
    assert ts.stats.tombstones == 2 and ts.stats.scoring_moments == len(got)
    live_rows = {(p["business_id"], p["feature_hash"]) for p in got.values()}
    trainer_rows = {(ts.business_table[b], feature_hash(row)) for b, row in zip(ts.business, ts.X, strict=True)}
    assert len(ts.X) > 0 and trainer_rows <= live_rows


def _tombstone_in_changelog(cfg, key: str) -> bool:
    """Whether the changelog holds a value of ``key`` written after its tombstone was applied: a
    deletion, or a state rebuilt since (its business offset at or past the tombstone's)."""
    tomb = next(r for r in read_topic(cfg, cfg.business_topic) if r.key == key.encode() and r.value is None)
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    try:
        tp = TopicPartition(cfg.changelog_topic, tomb.partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        for batch in consumer.poll(timeout_ms=200, max_records=100_000).values():
            for r in batch:
                if r.key == key.encode() and (is_deletion(r.value) or applied_offsets(r.value)[0] >= tomb.offset):
                    return True
        return False
    finally:
        consumer.close()


def test_kill_minus_9_right_after_a_tombstone_then_restart_loses_nothing(cfg, tmp_path):
    # Small batches and frequent checkpoints: the mid-log tombstone (RECREATED) is checkpointed
    # while most of the log is still unread.
    cfg = cfg.with_overrides(batch_size=50, checkpoint_interval_ms=100)
    _publish_with_tombstones(cfg, businesses=60, days=3)
    expected, store, _ = expected_run(cfg, cfg.registry_dir)
    proc = start_worker(cfg, log_path=tmp_path / "w1.log")
    # Kill as soon as the deletion reaches the changelog: at the checkpoint of the tombstone's
    # batch, before or just after its offsets are committed.
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not _tombstone_in_changelog(cfg, RECREATED):
        time.sleep(0.01)
    assert proc.poll() is None, "the worker stopped before the tombstone reached the changelog"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = prediction_count(cfg)
    print(f"killed after {first} of {len(expected)} predictions")
    restart = start_worker(cfg, log_path=tmp_path / "w2.log")
    assert restart.wait(90) == 0, (tmp_path / "w2.log").read_text()[-3000:]
    got = read_predictions(cfg)
    missing = sorted(
        (p["source_partition"], p["source_offset"], p["business_id"])
        for k, p in expected.items()
        if k not in {g["prediction_id"] for g in got}
    )
    assert {p["prediction_id"] for p in got} == expected.keys(), (missing[:20], len(got), prediction_count(cfg))
    for p in got:  # duplicates re-emitted after the crash carry the same id and the same score
        assert (p["score"], p["feature_hash"]) == (
            expected[p["prediction_id"]]["score"],
            expected[p["prediction_id"]]["feature_hash"],
        )
    assert _latest_changelog(cfg).get(GONE) is None
    assert _live_states(cfg) == _states(store)
