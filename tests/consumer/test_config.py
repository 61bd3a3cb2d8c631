import pytest

from consumer.config import Config, env_settings
from consumer.errors import ConfigError
from consumer.io.clients import client_kwargs


def test_from_env_reads_and_types_settings():
    cfg = Config.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "STREAMRANK_PARTITIONS": "8", "STREAMRANK_MODEL_POLL_S": "1.5"}
    )
    assert cfg.bootstrap == "k1:9092,k2:9092"
    assert cfg.partitions == 8
    assert cfg.model_poll_s == 1.5
    assert cfg.predictions_topic == "predictions"


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigError, match="STREAMRANK_PARTITIONS"):
        Config.from_env({"STREAMRANK_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM"):
        Config.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


def test_secrets_never_appear_in_repr_or_describe():
    cfg = Config.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "alice",
            "KAFKA_SASL_PASSWORD": "hunter2-secret",
        }
    )
    assert "hunter2-secret" not in repr(cfg)
    assert "hunter2-secret" not in str(cfg.describe())
    assert "alice" in repr(cfg)


def test_security_settings_pass_through_to_clients():
    cfg = Config.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "alice",
            "KAFKA_SASL_PASSWORD": "pw",
            "KAFKA_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    kw = client_kwargs(cfg)
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("alice", "pw")
    assert kw["ssl_cafile"] == "/etc/ca.pem"


def test_flags_override_env_and_none_means_not_given():
    cfg = Config.from_env({"KAFKA_BOOTSTRAP_SERVERS": "env:9092"})
    assert cfg.with_overrides(bootstrap="flag:9092").bootstrap == "flag:9092"
    assert cfg.with_overrides(bootstrap=None).bootstrap == "env:9092"


def test_every_setting_has_a_distinct_env_variable():
    names = [name for name, _, _ in env_settings()]
    assert len(names) == len(set(names))
    assert all(n.startswith(("KAFKA_", "STREAMRANK_")) for n in names)


def test_baseline_defaults_to_popularity_and_takes_none():
    assert Config.from_env({}).baseline == "popularity"
    assert Config.from_env({"STREAMRANK_BASELINE": "none"}).baseline == "none"
    with pytest.raises(ConfigError, match="STREAMRANK_BASELINE"):
        Config.from_env({"STREAMRANK_BASELINE": "random"})
