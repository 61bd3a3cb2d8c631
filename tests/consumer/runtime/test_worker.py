"""The worker on the real broker: exact outputs, crashes, group failover, dead letters, parity."""

import random
import signal
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaProducer

from consumer.errors import TopicLayoutError
from consumer.io.clients import create_topics
from consumer.pipeline.predictions import feature_hash
from consumer.runtime.worker import Worker
from features.extract import extract_into
from features.order import merge_finished
from features.scoring import as_of
from features.spec import DEFAULT_SPEC
from models.dataset import scoring_moments
from tests.kit.runs import expected_run, start_worker
from tests.kit.topics import prediction_count, publish_world, read_changelog_states, read_predictions, read_topic

pytestmark = pytest.mark.broker


@pytest.fixture
def cfg(kafka_config, registry_copy, request):
    # Tests marked with `both_transports` run once per Kafka client (consumer.io.transport).
    transport = getattr(request, "param", "kafka-python")
    return kafka_config.with_overrides(registry_dir=str(registry_copy), batch_size=200, transport=transport)


# The worker's contract (exact outputs, crash recovery, failover, dead letters) holds on either client.
both_transports = pytest.mark.parametrize("cfg", ["kafka-python", "confluent"], indirect=True)


def _states(store):
    return {bid: e.state for part in store.values() for bid, e in part.entries.items()}


@pytest.mark.tansu_smoke
@both_transports
def test_exact_predictions_and_state_for_a_generated_log(cfg):
    n = publish_world(cfg)
    expected, store, outcomes = expected_run(cfg, cfg.registry_dir)
    stats = Worker(cfg, exit_when_idle_s=2).run()
    got = read_predictions(cfg)
    assert sum(stats.consumed.values()) == n
    assert len(got) == len({p["prediction_id"] for p in got}) == len(expected) > 1000
    by_id = {p["prediction_id"]: p for p in got}
    assert by_id.keys() == expected.keys()
    for pid, p in expected.items():
        assert (by_id[pid]["score"], by_id[pid]["feature_hash"]) == (p["score"], p["feature_hash"])
    # Accounting: every input record is a prediction, a dead letter or a named non-scoring outcome.
    assert sum(stats.outcomes.values()) == n
    assert dict(stats.outcomes) == outcomes
    assert read_changelog_states(cfg) == _states(store)


def test_features_at_scoring_equal_the_trainers_replay(cfg):
    """Parity: the trainer's fold (models.dataset.scoring_moments) gives the features the worker scored."""
    from consumer.io.inputlog import read_input_log

    publish_world(cfg, businesses=40, days=3, seed=11)
    Worker(cfg, exit_when_idle_s=2).run()
    live = {
        (p["source_partition"], p["source_offset"]): p["feature_hash"]
        for p in read_predictions(cfg)
        if p["source_topic"] == cfg.activity_topic
    }
    by_part = {}
    for r in read_input_log(cfg):
        by_part.setdefault(r.partition, []).append((r.rank, r.time, r.offset, r))  # the worker's merge time
    row = np.empty(len(DEFAULT_SPEC.names), dtype=np.float32)
    replayed = {}
    for p, items in by_part.items():
        ordered = list(merge_finished(items))
        offsets = {id(r.event): r.offset for r in ordered}
        for ev, state in scoring_moments(r.event for r in ordered):
            extract_into(state, as_of(state), row)
            replayed[(p, offsets[id(ev)])] = feature_hash(row)
    assert len(live) > 500
    assert replayed == live


@pytest.mark.tansu_smoke
@both_transports
def test_kill_minus_9_and_restart_loses_nothing(cfg, tmp_path):
    publish_world(cfg, businesses=100, days=5, seed=21)
    expected, store, _ = expected_run(cfg, cfg.registry_dir)
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    # A kill that lands after the worker finished proves nothing: try again on fresh outputs.
    for attempt in range(3):
        out = _fresh_outputs(cfg, attempt)
        kill_after = rnd.randrange(len(expected) // 10, len(expected) // 2)
        print(f"attempt {attempt}: kill -9 after >= {kill_after} predictions (seed {seed})")
        proc = start_worker(out, log_path=tmp_path / f"w1-{attempt}.log")
        deadline = time.monotonic() + 60
        while prediction_count(out) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if prediction_count(out) < len(expected):
            break
    else:
        pytest.fail("the worker finished before the kill in every attempt: the test proved nothing")
    restart = start_worker(out, log_path=tmp_path / "w2.log")
    assert restart.wait(90) == 0
    got = read_predictions(out)
    ids = {p["prediction_id"] for p in got}
    assert ids == expected.keys(), (len(ids), len(expected))
    # Duplicates (re-emitted after the crash) carry the same id and the same score.
    for p in got:
        assert p["score"] == expected[p["prediction_id"]]["score"]
    assert read_changelog_states(out) == _states(store)


def _fresh_outputs(cfg, n):
    """Same inputs, a new group and new output topics."""
    out = cfg.with_overrides(
        group_id=f"{cfg.group_id}-{n}",
        predictions_topic=f"{cfg.predictions_topic}-{n}",
        changelog_topic=f"{cfg.changelog_topic}-{n}",
        dead_letter_topic=f"{cfg.dead_letter_topic}-{n}",
    )
    create_topics(
        out,
        [
            (out.predictions_topic, 2, {}),
            (out.dead_letter_topic, 2, {}),
            (out.changelog_topic, 2, {"cleanup.policy": "compact"}),
        ],
    )
    return out


@pytest.mark.parametrize(
    "clients",
    [("kafka-python", "kafka-python"), ("confluent", "confluent"), ("kafka-python", "confluent")],
    ids=["kafka-python", "confluent", "mixed"],
)
def test_two_workers_split_partitions_and_one_takes_over(cfg, tmp_path, clients):
    """ "mixed": one group, one worker on each client (a rolling switch of STREAMRANK_TRANSPORT)."""
    cfg = cfg.with_overrides(batch_size=50)
    publish_world(cfg, businesses=100, days=5, seed=31)
    expected, store, _ = expected_run(cfg, cfg.registry_dir)
    # b's idle limit outlasts the group's session timeout (6 s) and the rebalance after it, counted
    # from b's last batch, which can come well before the kill: b may have finished its own
    # partitions by then (the clean-clone CI of a024f90 saw a confluent b idle out 12 s after its
    # last batch, before the group handed it a's partition). It must still be there when the group
    # notices that a is gone and hands it a's partitions.
    a = start_worker(cfg.with_overrides(transport=clients[0]), idle_s=12, log_path=tmp_path / "a.log")
    b = start_worker(cfg.with_overrides(transport=clients[1]), idle_s=25, log_path=tmp_path / "b.log")
    # Kill a once both serve (a client's start-up can lag the other's: librdkafka's first fetch
    # takes up to a second on the embedded broker) and a quarter of the work is done.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        prediction_count(cfg) >= len(expected) // 4
        and all("first offset scored by model" in (tmp_path / f"{w}.log").read_text() for w in "ab")
    ):
        time.sleep(0.02)
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    assert b.wait(90) == 0
    log_b = (tmp_path / "b.log").read_text()
    assignments = [line for line in log_b.splitlines() if '"partitions assigned"' in line]
    assert len(assignments) >= 2 and '"partitions": [0, 1]' in assignments[-1], assignments
    assert '"state restored"' in log_b
    got = read_predictions(cfg)
    assert {p["prediction_id"] for p in got} == expected.keys()
    assert read_changelog_states(cfg) == _states(store)
    # Both workers served: each wrote predictions before the kill (the group split the partitions).
    log_a = (tmp_path / "a.log").read_text()
    assert "first offset scored by model" in log_a and "first offset scored by model" in log_b


@pytest.mark.tansu_smoke
@both_transports
def test_corrupted_messages_go_to_dead_letters_and_the_worker_keeps_going(cfg):
    publish_world(cfg, businesses=20, days=1, seed=41)
    producer = KafkaProducer(bootstrap_servers=cfg.bootstrap)
    bad = [
        (cfg.activity_topic, b"b000001", b"garbage"),
        (cfg.activity_topic, b"b000001", b"\x00\x00\x00\x00\x02"),  # header only
        (cfg.business_topic, b"b000002", b"\x00\x00\x00\x00\x02\x02x"),  # activity schema on the business topic
        (cfg.activity_topic, None, b"\x00\x00\x00\x03\xe7abc"),  # unknown schema id, no key
    ]
    for topic, key, value in bad:
        producer.send(topic, key=key, value=value)
    producer.flush()
    publish_world(cfg, businesses=20, days=1, seed=42)  # good traffic after the bad
    stats = Worker(cfg, exit_when_idle_s=2).run()
    dls = read_topic(cfg, cfg.dead_letter_topic)
    assert len(dls) == len(bad) == sum(stats.dead_letters.values())
    for r in dls:
        h = dict(r.headers)
        assert h["dlq.reason"] in (b"undecodable", b"invalid", b"key_mismatch")
        assert int(h["dlq.source.offset"]) >= 0 and h["dlq.source.topic"] in (
            cfg.activity_topic.encode(),
            cfg.business_topic.encode(),
        )
        assert (h["dlq.source.topic"].decode(), r.value) in {(t, v) for t, _, v in bad}
    assert stats.predictions > 0 and sum(stats.outcomes.values()) == sum(stats.consumed.values())


def test_a_record_our_code_cannot_process_is_dead_lettered_and_the_worker_keeps_going(cfg, monkeypatch):
    """The error policy (Worker._loop): a valid event on which our own code raises goes to the
    dead-letter topic (reason "unprocessable", with its coordinates); the worker keeps going and
    scores everything else. Before the policy the exception left the loop: a crash loop, since a
    restarted worker re-reads the same record."""
    import consumer.pipeline.process as proc
    from features.state import event_key
    from sim.world import WorldConfig, generate_records

    publish_world(cfg, businesses=30, days=2, seed=43)
    expected, _, _ = expected_run(cfg, cfg.registry_dir)
    records = [
        r
        for kind, r in generate_records(WorldConfig(businesses=30, days=2, seed=43, cities=2, categories=2))
        if kind == "activity"
    ]
    victim = records[len(records) // 2]
    victim_key = event_key(victim["event_id"])
    real_fold = proc.fold_batch

    def fold_batch(table, batch, *args):  # reached by bulk-decoded runs and single records alike
        if (batch.keys == victim_key).any():
            raise ArithmeticError("a bug that only this event reaches")
        return real_fold(table, batch, *args)

    monkeypatch.setattr(proc, "fold_batch", fold_batch)
    stats = Worker(cfg, exit_when_idle_s=2).run()
    dls = read_topic(cfg, cfg.dead_letter_topic)
    assert len(dls) == 1 and stats.dead_letters == {"unprocessable": 1}
    h = dict(dls[0].headers)
    assert h["dlq.reason"] == b"unprocessable" and b"ArithmeticError" in h["dlq.error"]
    assert dls[0].key == victim["business_id"].encode()
    got = {p["prediction_id"]: p for p in read_predictions(cfg)}
    others = {pid: p for pid, p in expected.items() if p["business_id"] != victim["business_id"]}
    assert others.keys() <= got.keys()
    assert all(got[pid]["score"] == p["score"] for pid, p in others.items())
    assert stats.outcomes["dead_letter"] == 1


def test_refuses_inputs_that_are_not_copartitioned(broker, registry_copy):
    from consumer.config import Config

    s = uuid.uuid4().hex[:8]
    cfg = Config(
        bootstrap=broker.bootstrap, business_topic=f"b-{s}", activity_topic=f"a-{s}", registry_dir=str(registry_copy)
    )
    create_topics(cfg, [(cfg.business_topic, 2, {}), (cfg.activity_topic, 3, {})])
    with pytest.raises(TopicLayoutError, match="not co-partitioned"):
        Worker(cfg, exit_when_idle_s=1).run()


def test_hot_swap_and_bad_model_refused(cfg):
    """A corrupt promoted model is refused while the old one serves; a good one is swapped in
    at a batch boundary without a restart."""
    import json
    import shutil
    import threading

    from models.registry import ModelRegistry

    registry = ModelRegistry(cfg.registry_dir)
    first = registry.promoted_version()
    worker = Worker(cfg.with_overrides(model_poll_s=0.2), exit_when_idle_s=4)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", worker.run()))
    publish_world(cfg, businesses=20, days=1, seed=51)
    thread.start()
    deadline = time.monotonic() + 30
    while prediction_count(cfg) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    bad = "v20000101000000-0badbad0"
    shutil.copytree(registry.version_dir(first), registry.path / bad)
    (registry.path / bad / "model.ubj").write_bytes(b"not a model")
    registry.promote(bad, "test: corrupt model")
    deadline = time.monotonic() + 10
    while worker.models.refusals == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.models.refusals == 1 and worker.models.current.version == first

    meta = json.loads((registry.version_dir(first) / "metadata.json").read_text())
    second = registry.register(
        (registry.version_dir(first) / "model.ubj").read_bytes(),
        {"feature_set": meta["feature_set"], "model": meta["model"]},  # the margin record too
    )
    registry.promote(second, "test: a good model")
    time.sleep(1.0)  # the watcher polls every 0.2 s; the swap happens at the next batch
    publish_world(cfg, businesses=20, days=1, seed=52)
    thread.join(60)
    stats = result["stats"]
    assert [m["version"] for m in stats.models] == [first, second]
    assert stats.models[1]["first_scored"] is not None
    versions = [p["model_version"] for p in read_predictions(cfg)]
    assert set(versions) == {first, second} and bad not in versions


def _promote_copy_of(trained_registry, registry_dir):
    """Register and promote, in ``registry_dir``, a copy of the model promoted in ``trained_registry``."""
    import json

    from models.registry import ModelRegistry

    source = ModelRegistry(trained_registry)
    first = source.promoted_version()
    meta = json.loads((source.version_dir(first) / "metadata.json").read_text())
    target = ModelRegistry(registry_dir)
    version = target.register(
        (source.version_dir(first) / "model.ubj").read_bytes(),
        {"feature_set": meta["feature_set"], "model": meta["model"]},  # the margin record too
    )
    target.promote(version, "test: the first model")
    return version


def _wait_for(cond, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_empty_registry_serves_the_popularity_baseline_until_a_model_is_promoted(kafka_config, trained_registry):
    """Day one: nothing promoted, the worker serves the popularity ranker at once (predictions labelled
    with its version, scores = the business's conversions so far); the first promoted model replaces it
    through the hot swap; with the pointer removed (demoted), the baseline serves again."""
    import threading

    from consumer.io.inputlog import read_input_log
    from consumer.io.publish import publish_records
    from features.spec import DAY_MS
    from models.baseline import PopularityScorer
    from models.dataset import LabelConfig
    from sim.world import DEFAULT_START_MS, WorldConfig, generate_records

    cfg = kafka_config.with_overrides(batch_size=200, model_poll_s=0.2)
    baseline = PopularityScorer(DEFAULT_SPEC)
    worker = Worker(cfg, exit_when_idle_s=6)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", worker.run()))
    publish_world(cfg, businesses=30, days=3, seed=61)
    thread.start()
    assert _wait_for(lambda: worker.ready.is_set() and worker.stats.predictions > 0)
    assert worker.metrics.readiness()[0], "a worker serving the baseline is ready"
    assert worker.metrics.registry.get_sample_value("streamrank_serving_baseline") == 1.0
    first_batch = read_predictions(cfg)
    assert first_batch and {p["model_version"] for p in first_batch} == {baseline.version}

    # The scores rank businesses by their conversions so far (the trainer's popularity baseline):
    # replay the log through the trainer's fold and compare, prediction by prediction.
    kinds = [DEFAULT_SPEC.layout.kind_index[k] for k in LabelConfig().kinds]
    by_part = {}
    for r in read_input_log(cfg):
        by_part.setdefault(r.partition, []).append((r.rank, r.time, r.offset, r))
    popularity = {}
    for p, items in by_part.items():
        ordered = list(merge_finished(items))
        offsets = {id(r.event): r.offset for r in ordered}
        for ev, state in scoring_moments(r.event for r in ordered):
            popularity[(p, offsets[id(ev)])] = sum(state.totals[i] for i in kinds)
    assert _wait_for(lambda: prediction_count(cfg) == len(popularity))  # the whole first world is scored
    live = read_predictions(cfg)
    scored = [(popularity[(p["source_partition"], p["source_offset"])], p["score"]) for p in live]
    assert len(scored) > 300 and max(c for c, _ in scored) >= 3
    assert all(int(np.floor(s)) == c for c, s in scored)

    model_version = _promote_copy_of(trained_registry, cfg.registry_dir)
    assert _wait_for(lambda: worker.models.current is not None and worker.models.current.version == model_version)
    n_before = prediction_count(cfg)
    # The same businesses a day after the first world's end (events before the states' clocks would be late).
    later_world = WorldConfig(
        businesses=30, days=1, seed=62, cities=2, categories=2, start_time_ms=DEFAULT_START_MS + 4 * DAY_MS
    )
    publish_records(cfg, generate_records(later_world))
    assert _wait_for(lambda: prediction_count(cfg) > n_before + 100)
    seen = {p["prediction_id"] for p in live}
    later = [p for p in read_predictions(cfg) if p["prediction_id"] not in seen]
    assert {p["model_version"] for p in later} == {model_version}
    assert worker.metrics.registry.get_sample_value("streamrank_serving_baseline") == 0.0

    (worker.models.registry.path / "promoted.json").unlink()  # demoted: nothing promoted any more
    assert _wait_for(lambda: worker.models.serving_fallback)
    thread.join(60)
    stats = result["stats"]
    assert [m["version"] for m in stats.models] == [baseline.version, model_version, baseline.version]
    assert stats.models[1]["first_scored"] is not None  # the model's first offset, as for any swap


def test_with_baseline_none_a_worker_waits_for_a_model_as_before(kafka_config):
    cfg = kafka_config.with_overrides(baseline="none")
    publish_world(cfg, businesses=10, days=1, seed=63)
    stats = Worker(cfg, exit_when_idle_s=1).run()
    assert stats.models == [] and stats.predictions == 0
    assert prediction_count(cfg) == 0
