"""Shared fixtures: one real broker per test session, a unique topic set per test.

The broker is chosen in this order (``broker_choice``): an existing cluster from
``KAFKA_BOOTSTRAP_SERVERS``; testcontainers' ``KafkaContainer`` (KRaft) when a Docker daemon
answers; Apache Kafka on the JVM (``consumer.io.brokers.apache``) when Java is present; else the embedded
Tansu. ``STREAMRANK_TEST_BROKER=kafka|tansu`` forces one engine (the Tansu smoke run of
``make test`` uses it). When Apache Kafka is the choice and does not start, every broker test
errors: no quiet fall-back to a weaker broker. The header and the summary of each run name the
broker it used.

Tests marked ``real_kafka`` need Apache Kafka semantics (compaction, transactions, correct
``offsets_for_times``) and are skipped on Tansu.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from consumer.config import Config


@dataclass(frozen=True)
class BrokerInfo:
    bootstrap: str
    kind: str  # "external" | "testcontainers" | "kafka" (JVM, started here) | "tansu"
    engine: object = None  # the broker object when this session started it (KafkaBroker/EmbeddedBroker)

    @property
    def is_real_kafka(self) -> bool:
        if self.kind == "external":
            return os.environ.get("STREAMRANK_EXTERNAL_IS_TANSU") != "1"
        return self.kind in ("testcontainers", "kafka")


def _docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # any failure means "no usable daemon"
        return False


def broker_choice() -> str:
    forced = os.environ.get("STREAMRANK_TEST_BROKER", "").strip().lower()
    if forced in ("kafka", "tansu"):
        return forced
    if forced not in ("", "auto"):
        raise pytest.UsageError(f"STREAMRANK_TEST_BROKER={forced!r}: expected kafka, tansu or auto")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return "external"
    if _docker_answers():
        return "testcontainers"
    from consumer.io.brokers.apache import kafka_runnable

    return "kafka" if kafka_runnable() else "tansu"


_USED: list[str] = []


def pytest_report_header(config):
    from consumer.io.brokers.apache import KAFKA_VERSION

    choice = broker_choice()
    what = {
        "external": f"the cluster at {os.environ.get('KAFKA_BOOTSTRAP_SERVERS')}",
        "testcontainers": "Apache Kafka in a testcontainers KafkaContainer",
        "kafka": f"Apache Kafka {KAFKA_VERSION} (JVM, single-node KRaft, started by the suite)",
        "tansu": "the embedded Tansu broker (no compaction/transactions: real_kafka tests skip)",
    }[choice]
    return f"broker: {what}"


def pytest_terminal_summary(terminalreporter):
    for line in _USED:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> BrokerInfo:
    choice = broker_choice()
    if choice == "external":
        _USED.append(f"broker used: external cluster at {os.environ['KAFKA_BOOTSTRAP_SERVERS']}")
        yield BrokerInfo(os.environ["KAFKA_BOOTSTRAP_SERVERS"], "external")
        return
    if choice == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            _USED.append("broker used: testcontainers KafkaContainer")
            yield BrokerInfo(kafka.get_bootstrap_server(), "testcontainers")
        return
    from consumer.io.brokers import start_broker

    log = tmp_path_factory.mktemp(choice) / f"{choice}.log"
    with start_broker(choice, log_path=str(log)) as started:
        if choice == "kafka":
            _USED.append(
                f"broker used: Apache Kafka {started.version} (JVM, KRaft) at {started.bootstrap}, "
                f"started in {started.started_in_s:.1f} s; log {log}"
            )
        else:
            _USED.append(f"broker used: embedded Tansu at {started.bootstrap}; log {log}")
        yield BrokerInfo(started.bootstrap, choice, started)


def pytest_collection_modifyitems(items):
    # A test that reaches the broker fixture (directly or through kafka_config) is a broker test,
    # marked or not: `make check` (-m "not broker") must never start one.
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(autouse=True)
def _skip_real_kafka_only(request):
    if request.node.get_closest_marker("real_kafka"):
        info = request.getfixturevalue("broker")
        if not info.is_real_kafka:
            pytest.skip("needs Apache Kafka semantics; the embedded Tansu broker lacks them")


@pytest.fixture
def kafka_config(broker, tmp_path) -> Config:
    """A Config on the session broker with topic names unique to this test; topics created."""
    from tests.kit.topics import unique_config

    return unique_config(broker.bootstrap, tmp_path)


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory):
    """A registry holding one promoted model trained on a small world (built once per session).

    Tests that write to a registry copy it (``shutil.copytree``) rather than share it.
    """
    from models.registry import ModelRegistry
    from models.train import TrainOptions
    from models.trainer import train_and_register
    from tests.kit.records import world_records

    records = world_records(150, 30, seed=7, partition=lambda bid: int(bid[1:]) % 2)
    path = tmp_path_factory.mktemp("trained") / "registry"
    registry = ModelRegistry(path)
    outcome = train_and_register(records, registry, options=TrainOptions(sample_rate=0.2, validation_days=5))
    if not outcome.promoted:  # the fixture needs a servable model; the gates are tested elsewhere
        registry.promote(outcome.version, "test fixture", decided_by="test")
    return path


@pytest.fixture
def registry_copy(trained_registry, tmp_path):
    import shutil

    dest = tmp_path / "registry"
    shutil.copytree(trained_registry, dest, dirs_exist_ok=True)
    return dest
