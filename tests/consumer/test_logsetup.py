"""What an operator sees: levels that mean something. A clean worker run logs no WARNING or
ERROR; the Kafka client's lifecycle noise is DEBUG; security failures still come through; JSON
lines never carry a secret."""

import json
import logging

import pytest

from consumer.config import Config
from consumer.logsetup import JsonFormatter, KafkaClientLevels
from tests.kit.runs import start_worker
from tests.kit.topics import publish_world


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
    assert all(ln.startswith("{") for ln in log.read_text().splitlines() if ln.strip()), (
        "a line that is not a log record (a traceback?)"
    )


class _Stream:
    def __init__(self, tty: bool):
        self.tty, self.lines = tty, []

    def isatty(self) -> bool:
        return self.tty


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere():
    from consumer.logsetup import JsonFormatter, TextFormatter, formatter

    assert isinstance(formatter("auto", _Stream(tty=True)), TextFormatter)
    assert isinstance(formatter("auto", _Stream(tty=False)), JsonFormatter)
    assert isinstance(formatter("json", _Stream(tty=True)), JsonFormatter)
    assert isinstance(formatter("text", _Stream(tty=False)), TextFormatter)


def test_text_lines_carry_the_context_and_mask_secrets():
    from consumer.logsetup import TextFormatter

    rec = _record("streamrank.worker", logging.INFO, "partitions assigned")
    rec.partitions, rec.sasl_password = [0, 1], "hunter2"
    line = TextFormatter().format(rec)
    assert "INFO" in line and "streamrank.worker" in line and "partitions assigned" in line
    assert "partitions=[0, 1]" in line and "hunter2" not in line and "sasl_password=***" in line


def test_a_bad_log_format_is_a_config_error(monkeypatch):
    from consumer.config import Config
    from consumer.errors import ConfigError

    monkeypatch.setenv("STREAMRANK_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="STREAMRANK_LOG_FORMAT"):
        Config.from_env()


def test_with_a_file_the_console_gets_only_warnings_and_the_file_everything(tmp_path, capsys):
    from consumer import logsetup

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logsetup.setup("INFO", "text", file=tmp_path / "run.log")
        logging.getLogger("streamrank.demo").info("a step went well", extra={"n": 3})
        logging.getLogger("streamrank.demo").warning("something to act on")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    console = capsys.readouterr().err
    assert "something to act on" in console and "a step went well" not in console
    in_file = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()]
    assert [(d["level"], d["msg"]) for d in in_file] == [
        ("info", "a step went well"),
        ("warning", "something to act on"),
    ]
    assert in_file[0]["n"] == 3


def test_a_worker_with_no_broker_says_so_in_one_line_and_exits_non_zero(tmp_path):
    import subprocess
    import sys
    import time

    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "run",
            "--bootstrap",
            "127.0.0.1:1",
            "--exit-when-idle",
            "3",
            "--registry",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and time.monotonic() - t0 < 30
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "127.0.0.1:1" in lines[0], out.stderr


def test_json_logs_mask_secrets_in_settings_and_secret_looking_keys():
    secret = "hunter2-do-not-log"
    cfg = Config(bootstrap="b:9092", sasl_password=secret, ssl_password=secret)
    rec = logging.LogRecord("streamrank.worker", logging.INFO, __file__, 1, "worker started", (), None)
    rec.config = cfg.describe()
    rec.sasl_password = secret
    rec.topic, rec.partition, rec.offset = "t", 3, 42
    line = JsonFormatter().format(rec)
    doc = json.loads(line)
    assert secret not in line and secret not in repr(cfg)
    assert doc["config"]["sasl_password"] == "***" and doc["sasl_password"] == "***"
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("t", 3, 42)


def test_the_demo_console_level_keeps_expected_warnings_in_the_file(tmp_path, capsys):
    from consumer import logsetup

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logsetup.setup("INFO", "text", file=tmp_path / "demo.log", console_level="ERROR")
        logging.getLogger("streamrank.worker").warning("dead letter")
        logging.getLogger("streamrank.worker").error("batch not delivered")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    console = capsys.readouterr().err
    assert "batch not delivered" in console and "dead letter" not in console
    assert "dead letter" in (tmp_path / "demo.log").read_text()
