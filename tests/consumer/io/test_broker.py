"""The embedded broker and topic administration, on the session's real broker."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumer.config import Config
from consumer.errors import BrokerUnavailable, TopicLayoutError
from consumer.io.brokers.tansu import EmbeddedBroker
from consumer.io.clients import GROUP_TIMING, check_copartitioned, check_reachable, create_topics, partition_counts

pytestmark = pytest.mark.broker


@pytest.mark.tansu_smoke
def test_produce_and_consume_through_the_broker(kafka_config):
    topic = kafka_config.activity_topic
    producer = KafkaProducer(bootstrap_servers=kafka_config.bootstrap, acks="all")
    for i in range(50):
        producer.send(topic, key=f"b{i % 5}".encode(), value=f"v{i}".encode(), headers=[("h", b"x")])
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_config.bootstrap,
        group_id=f"g-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        **GROUP_TIMING,
    )
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 50 and time.monotonic() < deadline:
        for records in consumer.poll(500).values():
            seen.extend(records)
    consumer.close()
    assert sorted(r.value for r in seen) == sorted(f"v{i}".encode() for i in range(50))
    assert all(r.headers == [("h", b"x")] for r in seen)
    # Same key, same partition: what co-partitioning relies on.
    by_key = {}
    for r in seen:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


@pytest.mark.tansu_smoke
def test_topics_create_is_idempotent_and_copartitions_inputs(kafka_config):
    again = create_topics(kafka_config)
    assert set(again.values()) == {"exists"}
    assert check_copartitioned(kafka_config) == kafka_config.partitions


def test_refuses_inputs_that_are_not_copartitioned(broker):
    suffix = uuid.uuid4().hex[:8]
    cfg = Config(bootstrap=broker.bootstrap, business_topic=f"be-{suffix}", activity_topic=f"ae-{suffix}")
    create_topics(cfg, [(cfg.business_topic, 2, {}), (cfg.activity_topic, 3, {})])
    assert partition_counts(cfg, cfg.input_topics) == {cfg.business_topic: 2, cfg.activity_topic: 3}
    with pytest.raises(TopicLayoutError, match="not co-partitioned"):
        check_copartitioned(cfg)


def test_unreachable_broker_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="127.0.0.1:1"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    assert time.monotonic() - t0 < 5


@pytest.mark.tansu_smoke
def test_context_manager_starts_and_stops():
    with EmbeddedBroker() as b:
        assert b.running
        check_reachable(b.bootstrap)
    assert not b.running
    with pytest.raises(BrokerUnavailable):
        check_reachable(b.bootstrap, timeout_s=1)


@pytest.mark.tansu_smoke
def test_cli_broker_prints_bootstrap_first_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "broker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("bootstrap=127.0.0.1:")
        check_reachable(first.split("=", 1)[1])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(BrokerUnavailable):
        check_reachable(first.split("=", 1)[1], timeout_s=1)


def test_cli_unreachable_broker_is_one_line_and_nonzero():
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "topics", "create", "--bootstrap", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": ""},
    )
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: no Kafka broker reachable")
    assert "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 15


def test_cli_bad_arguments_exit_2():
    out = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "generate", "--businesses", "-3"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "must be >= 1" in out.stderr


@pytest.mark.slow
def test_cli_kafka_engine_prints_bootstrap_first_and_stops_on_sigterm(tmp_path):
    """`streamrank broker --engine kafka`: Apache Kafka (JVM, KRaft) on a free port, the same
    contract as the embedded broker: bootstrap= first, a log file, a clean stop."""
    from consumer.io.brokers.apache import java_available

    if not java_available():
        pytest.skip("no Java on this machine")
    log = tmp_path / "kafka.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "broker", "--engine", "kafka", "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("bootstrap=127.0.0.1:"), first + proc.stderr.read()
        assert proc.stdout.readline().strip() == f"log={log}"
        bootstrap = first.split("=", 1)[1]
        check_reachable(bootstrap)
        admin_cfg = Config(bootstrap=bootstrap, business_topic="b", activity_topic="a")
        create_topics(admin_cfg, [("b", 1, {}), ("a", 1, {})])
        assert partition_counts(admin_cfg, ["a", "b"]) == {"a": 1, "b": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert proc.stdout.read().strip() == "broker stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Kafka Server started" in log.read_text() or "STARTED" in log.read_text()
    with pytest.raises(BrokerUnavailable):
        check_reachable(bootstrap, timeout_s=1)


def test_cli_kafka_engine_without_java_is_one_clear_line(tmp_path):
    """No Java: one line saying so, non-zero exit; the Tansu engine still works (other tests)."""
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # an empty PATH: no java, no mvn
    env["STREAMRANK_KAFKA_HOME"] = str(tmp_path / "no-jars")
    out = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "broker", "--engine", "kafka"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == ["error: Apache Kafka needs Java 17+: no java on PATH or in $JAVA_HOME (use --engine tansu)"], (
        out.stderr
    )


def test_cluster_ids_never_start_with_a_dash(monkeypatch):
    """A base64 id starting with "-" (first byte 0xF8-0xFB, 1 in 64) read as an option made the
    storage tool fail: `kafka-storage: error: argument --cluster-id/-t: expected one argument`."""
    import uuid as uuid_mod

    from consumer.io.brokers import apache

    ids = iter([uuid_mod.UUID(bytes=b"\xf8" + bytes(15)), uuid_mod.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(apache.uuid, "uuid4", lambda: next(ids))
    cid = apache.random_cluster_id()
    assert len(cid) == 22 and not cid.startswith("-")
    assert cid == "AQAAAAAAAAAAAAAAAAAAAA"  # the second draw: the first began with "-"
