"""What an operator sees: levels that mean something. A clean worker run logs no WARNING or
ERROR; the Kafka client's lifecycle noise is DEBUG; security failures still come through."""

import json
import logging

import pytest

from consumer.logsetup import KafkaClientLevels
from workerkit import publish_world, start_worker


def _record(name, level, msg):
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def test_client_lifecycle_noise_is_debug_and_security_failures_are_kept(monkeypatch):
    f = KafkaClientLevels()
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    noise = _record("kafka.cluster", logging.ERROR, "Metadata refresh: failed Cancelled")
    assert f.filter(noise) is False and noise.levelname == "DEBUG"
    started = _record("kafka.net.manager", logging.ERROR, "Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    assert f.filter(started) is False
    auth = _record("kafka.net.connection", logging.ERROR, "SASL authentication failed: bad credentials")
    assert f.filter(auth) is True and auth.levelname == "ERROR"
    ours = _record("streamrank.worker", logging.ERROR, "batch not delivered; rewinding to the last commit")
    assert f.filter(ours) is True and ours.levelname == "ERROR"
    monkeypatch.setattr(root, "level", logging.DEBUG)
    assert f.filter(_record("kafka.cluster", logging.ERROR, "Metadata refresh: failed Cancelled")) is True


@pytest.mark.broker
def test_a_clean_worker_run_logs_no_warning_or_error(kafka_config, registry_copy, tmp_path):
    cfg = kafka_config.with_overrides(registry_dir=str(registry_copy))
    publish_world(cfg, businesses=30, days=2, seed=17)
    log = tmp_path / "worker.log"
    assert start_worker(cfg, idle_s=3, log_path=log).wait(120) == 0
    lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert any(d["msg"] == "worker stopped" and d["predictions"] > 0 for d in lines)
    loud = [f"{d['level']} {d['logger']}: {d['msg']}" for d in lines if d["level"] in ("warning", "error", "critical")]
    assert loud == []
    assert all(ln.startswith("{") for ln in log.read_text().splitlines() if ln.strip()), "a line that is not a log record (a traceback?)"
