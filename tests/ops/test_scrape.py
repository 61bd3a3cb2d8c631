"""A real Prometheus scrapes a running worker; its counters must match what the test produced.

One worker run serves every test here (module fixture): a generated world plus three
undecodable records are published, the worker processes them with a metrics port, Prometheus
(the Debian binary, 1 s scrapes, our alert rules loaded) scrapes it, and the tests compare what
Prometheus stored with independent truth: what was published and what is on the output topics.
The worker's log lines are captured too (structured, secret-free).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.io.brokers import free_port
from consumer.io.clients import consumer_kwargs, producer_kwargs
from consumer.io.publish import publish_records
from consumer.logsetup import JsonFormatter
from consumer.runtime.worker import Worker
from models.registry import ModelRegistry
from sim.world import WorldConfig, generate_records
from tests.kit.ops import OPS

pytestmark = pytest.mark.broker

SECRET = "s3cr3t-never-in-logs-7f1c"
GARBAGE = 3


def _topic_total(cfg, topic: str) -> int:
    """Records on ``topic``: the sum of its partitions' fetch high-water marks."""
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        deadline = time.monotonic() + 10
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100)
        return sum(consumer.highwater(tp) or 0 for tp in tps)
    finally:
        consumer.close()


def _http(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Prometheus:
    """A real Prometheus (1 s scrapes and rule evaluations) on ``tmp``: ``rules`` is the rule file's
    text (the real ``alerts.yml`` by default), ``jobs`` maps scrape job names to targets."""

    def __init__(self, binary: str, tmp, target: str | None = None, *, rules: str | None = None, jobs=None):
        self.port = free_port()
        jobs = dict(jobs or {"streamrank-worker": target})
        (tmp / "alerts.yml").write_text(rules if rules is not None else (OPS / "alerts.yml").read_text())
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            + "".join(f"  - job_name: {job}\n    static_configs: [{{targets: ['{t}']}}]\n" for job, t in jobs.items())
        )
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while _http_ok(self.base + "/-/ready") is False:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def query(self, promql: str) -> list[dict]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        code, body = _http(url)
        doc = json.loads(body)
        assert code == 200 and doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _http_ok(url: str) -> bool:
    try:
        return _http(url)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def scraped(broker, trained_registry, prometheus_bin, tmp_path_factory):
    import shutil
    import uuid

    from consumer.config import Config
    from consumer.io.clients import create_topics

    tmp = tmp_path_factory.mktemp("scrape")
    registry = tmp / "registry"
    shutil.copytree(trained_registry, registry)
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    cfg = Config(
        bootstrap=broker.bootstrap,
        business_topic=f"business-events-{suffix}",
        activity_topic=f"activity-events-{suffix}",
        predictions_topic=f"predictions-{suffix}",
        dead_letter_topic=f"dead-letters-{suffix}",
        changelog_topic=f"changelog-{suffix}",
        group_id=f"streamrank-{suffix}",
        partitions=2,
        registry_dir=str(registry),
        schema_registry=str(tmp / "schemas.json"),
        batch_size=200,
        metrics_port=port,
        sasl_password=SECRET,
        ssl_password=SECRET,
    )
    create_topics(cfg)
    stats = publish_records(cfg, generate_records(WorldConfig(businesses=20, days=2, seed=1, cities=2, categories=2)))
    producer = KafkaProducer(**producer_kwargs(cfg))
    for i in range(GARBAGE):  # not Confluent-framed Avro: dead letters, reason "undecodable"
        producer.send(cfg.activity_topic, key=b"b1", value=b"not avro %d" % i)
    producer.flush()
    producer.close()
    total = stats.total + GARBAGE

    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    prom = Prometheus(prometheus_bin, tmp, f"127.0.0.1:{port}")
    worker = Worker(cfg)
    thread = threading.Thread(target=worker.run, name="worker-under-scrape", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 40
        while sum(worker.stats.outcomes.values()) < total:
            assert thread.is_alive(), "the worker stopped"
            assert time.monotonic() < deadline, f"worker processed {sum(worker.stats.outcomes.values())} of {total}"
            time.sleep(0.2)
        # The worker is idle now; wait for a scrape that saw all of it (lag is refreshed once a second).
        while (
            prom.value("sum(streamrank_event_outcomes_total)") != total
            or prom.value("sum(streamrank_consumer_lag)") != 0
        ):
            assert time.monotonic() < deadline, (
                f"prometheus never scraped the final counts: {prom.query('streamrank_event_outcomes_total')} "
                f"lag {prom.query('streamrank_consumer_lag')}"
            )
            time.sleep(0.3)
        health = _http(f"http://127.0.0.1:{port}/healthz")
        ready = _http(f"http://127.0.0.1:{port}/readyz")
        metrics_text = _http(f"http://127.0.0.1:{port}/metrics")[1].decode()
        rules = json.loads(_http(prom.base + "/api/v1/rules")[1])
        yield dict(
            cfg=cfg,
            prom=prom,
            worker=worker,
            stats=stats,
            total=total,
            health=health,
            ready=ready,
            metrics_text=metrics_text,
            rules=rules,
            logs=logs,
        )
    finally:
        worker.request_stop()
        thread.join(timeout=30)
        prom.close()
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_prometheus_counts_match_what_was_published_and_produced(scraped):
    cfg, prom, stats = scraped["cfg"], scraped["prom"], scraped["stats"]
    by_topic = {r["metric"]["topic"]: float(r["value"][1]) for r in prom.query("streamrank_events_consumed_total")}
    assert by_topic == {cfg.business_topic: stats.business, cfg.activity_topic: stats.activity + GARBAGE}
    produced = _topic_total(cfg, cfg.predictions_topic)
    assert produced > 100
    preds = prom.query("streamrank_predictions_total")
    version = ModelRegistry(cfg.registry_dir).promoted_version()
    assert [(r["metric"]["arm"], r["metric"]["model_version"], float(r["value"][1])) for r in preds] == [
        ("default", version, produced)
    ]
    assert (
        prom.value('streamrank_dead_letters_total{reason="undecodable"}')
        == GARBAGE
        == _topic_total(cfg, cfg.dead_letter_topic)
    )
    assert prom.value("sum(streamrank_dead_letters_total)") == GARBAGE
    # Every prediction's score and latency were observed once.
    assert prom.value('sum(streamrank_score_bucket{le="+Inf"})') == produced
    assert prom.value("streamrank_event_to_publish_seconds_count") == produced


def test_prometheus_sees_stages_lag_state_model_and_health(scraped):
    prom, worker = scraped["prom"], scraped["worker"]
    assert prom.value('up{job="streamrank-worker"}') == 1
    batches = prom.value("streamrank_batches_total")
    assert batches == worker.stats.batches > 0
    stages = {r["metric"]["stage"]: float(r["value"][1]) for r in prom.query("streamrank_batch_stage_seconds_count")}
    assert set(stages) == {"poll", "decode", "state", "score", "produce", "commit"}
    assert all(stages[s] == batches for s in ("state", "score", "produce", "commit"))
    assert prom.value("sum(streamrank_consumer_lag)") == 0  # everything processed and committed
    assert prom.value("count(streamrank_consumer_lag)") == 4  # 2 topics x 2 partitions
    entities = sum(len(p) for p in worker.store.values())
    assert prom.value("sum(streamrank_state_entities)") == entities > 0
    info = prom.query("streamrank_model_info")
    assert [r["metric"]["model_version"] for r in info] == [worker.models.current.version]
    assert prom.value("streamrank_model_age_seconds") > 0
    assert prom.value("streamrank_live") == 1 and prom.value("streamrank_ready") == 1
    assert prom.value("streamrank_restores_total") >= 1  # the initial (empty) restore of its partitions
    assert scraped["health"][0] == 200 and json.loads(scraped["health"][1])["ok"] is True
    assert (
        scraped["ready"][0] == 200 and json.loads(scraped["ready"][1])["model_version"] == worker.models.current.version
    )


def test_real_prometheus_loads_the_alert_rules_and_nothing_fires(scraped):
    prom = scraped["prom"]
    loaded = {r["name"] for g in scraped["rules"]["data"]["groups"] for r in g["rules"]}
    assert {"StreamrankNoPredictions", "StreamrankWorkerNotLive", "StreamrankDeadLetterRate"} <= loaded
    firing = [r["metric"]["alertname"] for r in prom.query('ALERTS{alertstate="firing"}')]
    assert firing == []


def test_worker_logs_are_json_lines_with_context_and_no_secret(scraped):
    lines = scraped["logs"].getvalue().splitlines()
    assert lines
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    text = scraped["logs"].getvalue()
    assert SECRET not in text and SECRET not in scraped["metrics_text"]
    started = [d for d in docs if d["msg"] == "worker started"]
    assert started and started[0]["config"]["sasl_password"] == "***" and started[0]["config"]["ssl_password"] == "***"
    dead = [d for d in docs if d["msg"] == "dead letter"]
    assert len(dead) == GARBAGE
    assert all({"topic", "partition", "offset", "reason"} <= d.keys() for d in dead)
    assert {d["offset"] for d in dead} and all(d["topic"] == scraped["cfg"].activity_topic for d in dead)
    serving = [d for d in docs if d["msg"] == "serving model"]
    assert serving and serving[0]["model_version"] == scraped["worker"].models.current.version
