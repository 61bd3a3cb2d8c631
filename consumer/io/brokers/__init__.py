"""Brokers this project starts itself: real Kafka-protocol brokers for tests, the demo and users.

``tansu`` (the embedded Tansu binary, zero dependencies: ``make demo``) and ``apache`` (Apache Kafka
on the JVM, the broker of record: the test suite). ``start_broker(engine)`` picks one; both are
used as ``with start_broker(...) as broker: broker.bootstrap``.
"""

from __future__ import annotations

import socket
import time

from consumer.errors import EmbeddedBrokerError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_metadata(bootstrap: str, timeout_s: float = 15.0) -> None:
    """Block until the broker answers a Kafka metadata request (not just a TCP connect)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise EmbeddedBrokerError(f"broker at {bootstrap} did not answer metadata within {timeout_s:.0f}s: {last}")


ENGINES = ("tansu", "kafka")


def start_broker(engine: str, port: int | None = None, advertised_port: int | None = None, log_path: str | None = None):
    """An unstarted broker of ``engine`` ("tansu" or "kafka") for a ``with`` block."""
    if engine == "tansu":
        from consumer.io.brokers.tansu import EmbeddedBroker

        return EmbeddedBroker(port=port, advertised_port=advertised_port, log_path=log_path)
    if engine == "kafka":
        from consumer.io.brokers.apache import KafkaBroker

        return KafkaBroker(port=port, advertised_port=advertised_port, log_path=log_path)
    raise EmbeddedBrokerError(f"unknown broker engine {engine!r}; expected one of {', '.join(ENGINES)}")
