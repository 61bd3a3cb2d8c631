"""The transport layer without a broker: settings reach confluent-kafka under librdkafka's names,
and a missing or unknown client is a clear configuration error. (On the broker, the worker tests
run their contract on both transports.)"""

import sys

import pytest

from consumer.config import Config
from consumer.errors import ConfigError
from consumer.io.transport import ConfluentInput, ConfluentOutput, check_transport, confluent_settings, input_consumer

SECURE = {
    "KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "alice",
    "KAFKA_SASL_PASSWORD": "pw",
    "KAFKA_SSL_CAFILE": "/etc/ca.pem",
    "KAFKA_SSL_CERTFILE": "/etc/client.pem",
    "KAFKA_SSL_KEYFILE": "/etc/client.key",
    "KAFKA_SSL_PASSWORD": "keypw",
}


def test_security_settings_pass_through_under_librdkafka_names():
    conf = confluent_settings(Config.from_env(SECURE))
    assert conf["bootstrap.servers"] == "k1:9093,k2:9093"
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("alice", "pw")
    assert (
        conf["ssl.ca.location"],
        conf["ssl.certificate.location"],
        conf["ssl.key.location"],
        conf["ssl.key.password"],
    ) == ("/etc/ca.pem", "/etc/client.pem", "/etc/client.key", "keypw")
    plain = confluent_settings(Config.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}))
    assert not any(k.startswith(("sasl.", "ssl.")) for k in plain)


def test_librdkafka_accepts_every_setting_we_pass():
    # Unknown or misspelt properties fail at construction; nothing connects (port 9 is discard).
    cfg = Config.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
            "STREAMRANK_TRANSPORT": "confluent",
        }
    )
    consumer = input_consumer(cfg, "g")
    assert isinstance(consumer, ConfluentInput)
    consumer.close()
    ConfluentOutput(cfg).close()


def test_unknown_transport_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="STREAMRANK_TRANSPORT"):
        Config.from_env({"STREAMRANK_TRANSPORT": "rdkafka"})
    with pytest.raises(ConfigError, match="unknown transport"):
        check_transport("rdkafka")


def test_confluent_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"streamrank\[confluent\]"):
        check_transport("confluent")
    assert check_transport("kafka-python") == "kafka-python"


@pytest.mark.broker
def test_both_clients_put_a_key_in_the_same_partition(kafka_config):
    """Workers of either client (a mixed group during a switch) must agree on where a business's
    keyed output goes when the producer's partitioner decides."""
    from kafka import KafkaProducer

    from consumer.io.clients import create_topics, producer_kwargs

    topic = f"{kafka_config.predictions_topic}-keys"
    create_topics(kafka_config, [(topic, 7, {})])
    keys = [f"b{i:06d}".encode() for i in range(200)]
    kp = KafkaProducer(**producer_kwargs(kafka_config))
    by_kafka_python = {k: kp.send(topic, key=k, value=b"x").get(30).partition for k in keys}
    kp.close()
    from confluent_kafka import Producer

    # The worker's confluent producer settings, with a report for every delivery to see partitions.
    producer = Producer({**ConfluentOutput.settings(kafka_config), "delivery.report.only.error": False})
    got = {}
    for k in keys:
        producer.produce(topic, b"x", k, on_delivery=lambda err, msg: got.__setitem__(msg.key(), msg.partition()))
    producer.flush(30)
    assert len(set(by_kafka_python.values())) > 3
    assert got == by_kafka_python
