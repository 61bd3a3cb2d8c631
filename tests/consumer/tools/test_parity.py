"""Parity: the worker's features (by hash) equal the trainer's fold; a change in one path is caught."""

import numpy as np
import pytest

import consumer.pipeline.process as process_mod
import consumer.tools.parity as parity
from consumer.cli import main
from consumer.runtime.worker import Worker
from consumer.tools.parity import check_parity, sample
from consumer.tools.report import read_prediction_topics
from tests.kit.topics import publish_world

pytestmark = pytest.mark.broker


@pytest.fixture
def cfg(kafka_config, registry_copy):
    t = kafka_config.predictions_topic
    return kafka_config.with_overrides(
        registry_dir=str(registry_copy),
        batch_size=200,
        arms="a:promoted:1,b:random:1",
        holdout=0.2,
        shadow_model="promoted",
        holdout_topic=t + "-holdout",
        shadow_topic=t + "-shadow",
    )


def _env(monkeypatch, cfg):
    for var, value in [
        ("KAFKA_BOOTSTRAP_SERVERS", cfg.bootstrap),
        ("STREAMRANK_BUSINESS_TOPIC", cfg.business_topic),
        ("STREAMRANK_ACTIVITY_TOPIC", cfg.activity_topic),
        ("STREAMRANK_PREDICTIONS_TOPIC", cfg.predictions_topic),
        ("STREAMRANK_HOLDOUT_TOPIC", cfg.holdout_topic),
        ("STREAMRANK_SHADOW_TOPIC", cfg.shadow_topic),
        ("STREAMRANK_REGISTRY", cfg.registry_dir),
    ]:
        monkeypatch.setenv(var, value)


def _bump_first_feature(real):
    def changed(state, t, row, spec=None):
        real(state, t, row) if spec is None else real(state, t, row, spec)
        row[0] += 1.0

    return changed


def _bump_first_feature_of_written_rows(real):
    """The worker's fold (``features.columnar.fold_batch``) with feature 0 of every row it writes changed."""

    def changed(table, batch, out=None, start=0):
        folded = real(table, batch, out, start)
        if out is not None:
            out[start : folded.n, 0] += 1.0
        return folded

    return changed


def test_parity_is_exact_on_a_generated_world_and_a_changed_feature_is_caught(cfg, monkeypatch, capsys):
    publish_world(cfg, businesses=40, days=3, seed=61)
    Worker(cfg, exit_when_idle_s=2).run()
    preds = read_prediction_topics(cfg, [cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic])
    assert {p["_topic"] for p in preds} == {cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic}
    res = check_parity(cfg, preds, n=400)
    assert res.sampled == 400 and res.mismatch_rate == 0.0, res.to_dict()
    assert len(res.by_topic) == 3

    _env(monkeypatch, cfg)
    assert main(["parity", "--sample", "200"]) == 0
    assert "mismatch rate: 0.0000%" in capsys.readouterr().out

    # The trainer-side path computes one feature differently: every sampled prediction differs.
    monkeypatch.setattr(parity, "extract_into", _bump_first_feature(parity.extract_into))
    res = check_parity(cfg, preds, n=200)
    assert res.mismatched == res.sampled == 200 and res.mismatch_rate == 1.0
    assert main(["parity", "--sample", "50"]) == 1


def test_a_consumer_change_breaks_parity(kafka_config, registry_copy, monkeypatch):
    cfg = kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=200)
    publish_world(cfg, businesses=30, days=2, seed=62)
    monkeypatch.setattr(process_mod, "fold_batch", _bump_first_feature_of_written_rows(process_mod.fold_batch))
    Worker(cfg, exit_when_idle_s=2).run()
    monkeypatch.undo()
    preds = read_prediction_topics(cfg, [cfg.predictions_topic])
    res = check_parity(cfg, preds, n=100)
    assert res.sampled == 100 and res.mismatch_rate == 1.0


def test_sample_is_deterministic_and_bounded():
    preds = [{"prediction_id": f"p{i}"} for i in range(50)]
    assert sample(preds, 10) == sample(list(reversed(preds)), 10) and len(sample(preds, 10)) == 10
    assert len(sample(preds, None)) == 50
    assert np.isnan(parity.ParityResult().mismatch_rate)


def _publish_with_wrong_keys(cfg) -> int:
    """A world with records whose key is not their business_id published in the middle of it (a
    copy of a real activity or profile record under another business's key, new event ids; one
    with no key at all). The worker dead-letters each (``key_mismatch``). Returns how many."""
    from kafka import KafkaProducer

    from consumer.io.publish import publish_records
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from sim.world import WorldConfig, generate_records

    records = list(generate_records(WorldConfig(businesses=30, days=2, seed=63, cities=2, categories=2)))
    half = len(records) // 2
    publish_records(cfg, records[:half])
    ids = sorted({r["business_id"] for _, r in records})
    other = {b: ids[(i + 1) % len(ids)] for i, b in enumerate(ids)}
    reg = FileSchemaRegistry(cfg.schema_registry or None)
    codecs = {
        "business": (cfg.business_topic, AvroCodec(reg, "BusinessEvent", subject=f"{cfg.business_topic}-value")),
        "activity": (cfg.activity_topic, AvroCodec(reg, "ActivityEvent", subject=f"{cfg.activity_topic}-value")),
    }
    # Recent records (just before the cut): timely for the state they would be folded into.
    bad = [(kind, dict(r, event_id=f"{r['event_id']}-rekeyed")) for kind, r in records[half - 400 : half]][::10]
    producer = KafkaProducer(bootstrap_servers=cfg.bootstrap)
    for i, (kind, rec) in enumerate(bad):
        topic, codec = codecs[kind]
        key = None if i == 0 else other[rec["business_id"]].encode()
        producer.send(topic, key=key, value=codec.encode(rec), timestamp_ms=rec["event_time"])
    producer.flush()
    producer.close()
    publish_records(cfg, records[half:])
    return len(bad)


def test_the_trainer_drops_exactly_the_wrongly_keyed_records_the_worker_dead_letters(kafka_config, registry_copy):
    from consumer.io.inputlog import LogRange, read_input_log
    from models.rowsets import build_training_set

    cfg = kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=200)
    n_bad = _publish_with_wrong_keys(cfg)
    stats = Worker(cfg, exit_when_idle_s=2).run()
    assert stats.dead_letters == {"key_mismatch": n_bad}
    preds = read_prediction_topics(cfg, [cfg.predictions_topic])
    rng = LogRange()
    ts = build_training_set(read_input_log(cfg, rng))
    # The trainer's scoring moments are the worker's predictions, one for one.
    assert ts.stats.scoring_moments == len(preds) == stats.predictions
    assert rng.key_mismatch == n_bad and rng.records == sum(stats.consumed.values())
    res = check_parity(cfg, preds, n=None)
    assert res.sampled == len(preds) and res.mismatch_rate == 0.0, res.to_dict()


def test_live_order_drift_is_measured_when_a_business_event_arrives_after_later_activity(kafka_config, registry_copy):
    """The stated bound (README, Determinism): live features equal the trainer's when no record
    arrives after the worker has already applied a record of the other topic with a later event
    time. Here a worker runs while traffic is published: first in event-time order (parity exact),
    then a business's profile change delivered late, after activity that happened after it. The
    live worker has already scored that activity; the trainer's merge puts the profile change
    first. `streamrank parity` must see the drift, not hide it."""
    import threading
    import time

    from consumer.io.publish import publish_records
    from sim.world import WorldConfig, generate_records

    cfg = kafka_config.with_overrides(registry_dir=str(registry_copy))
    records = sorted(
        generate_records(WorldConfig(businesses=20, days=2, seed=81, cities=2, categories=2)),
        key=lambda kr: (kr[1]["event_time"], kr[0] != "business"),
    )
    half = len(records) // 2
    worker = Worker(cfg, exit_when_idle_s=4)
    run = threading.Thread(target=worker.run, daemon=True)
    run.start()
    publish_records(cfg, records[:half])  # in order: live == finished
    deadline = time.monotonic() + 60
    while worker.stats.predictions == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    in_order = check_parity(cfg, read_prediction_topics(cfg, [cfg.predictions_topic]), n=None)
    assert in_order.sampled > 100 and in_order.mismatch_rate == 0
    # A profile change stamped before the second half's activity, delivered after it was scored.
    bid = next(r["business_id"] for k, r in records[half:] if k == "activity")
    profile = next(r for k, r in records if k == "business" and r["business_id"] == bid)
    t_change = next(r["event_time"] for k, r in records[half:] if k == "activity" and r["business_id"] == bid) - 1
    publish_records(cfg, records[half:])
    time.sleep(2.0)  # scored by now
    publish_records(
        cfg,
        [
            (
                "business",
                {
                    **profile,
                    "event_id": "late-profile-change",
                    "kind": "UPDATED",
                    "price_range": 4 if profile.get("price_range") != 4 else 1,
                    "event_time": t_change,
                },
            )
        ],
    )
    run.join(120)
    assert not run.is_alive()
    drift = check_parity(cfg, read_prediction_topics(cfg, [cfg.predictions_topic]), n=None)
    assert drift.mismatched > 0, "a late cross-topic arrival changes live features; parity must report it"
    assert {e["business_id"] for e in drift.examples} == {bid}
