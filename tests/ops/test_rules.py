"""Alert rules: valid for promtool, unit-tested by promtool, each linked to its runbook section,
and every metric they read is one the worker or the trainer really exports."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from kafka import TopicPartition
from prometheus_client import generate_latest

from consumer.monitor.core import MonitorCore, MonitorSettings
from consumer.monitor.exposition import MonitorMetrics
from consumer.runtime import drift
from consumer.runtime.metrics import WorkerMetrics
from consumer.trainer.metrics import TrainerMetrics
from models.drift import build_reference
from tests.kit.ops import OPS, ROOT

RULES = OPS / "alerts.yml"
RULE_TESTS = OPS / "alerts_test.yml"
REQUIRED = {
    "StreamrankNoPredictions",  # predictions rate 0 while events arrive
    "StreamrankDeadLetterRate",
    "StreamrankConsumerLagGrowing",
    "StreamrankModelTooOld",  # beyond the retraining period
    "StreamrankPromotionFailed",
    "StreamrankModelRefused",  # a bad promoted model, as the workers see it
    "StreamrankScoreDistributionShift",
    "StreamrankWorkerNotLive",
    "StreamrankFeatureDrift",  # a top-10 feature's PSI against the model's training data
    "StreamrankScoreDrift",
    "StreamrankCaptureBelowPopularity",  # the business metrics (streamrank monitor)
    "StreamrankUpliftBelowZero",
    "StreamrankPredictionLatencyHigh",
}


def _alerts() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check(promtool):
    r = _run(promtool, "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests_pass(promtool):
    r = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_zero_predictions_alert_has_firing_and_silent_cases():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == "StreamrankNoPredictions"]
    assert any(c["exp_alerts"] for c in cases), "no case where the zero-predictions alert fires"
    assert any(not c["exp_alerts"] for c in cases), "no case where the zero-predictions alert stays silent"


def test_promtool_tests_catch_a_naive_zero_predictions_rule(promtool, tmp_path):
    """`predictions == 0` misses a worker that never published (absent series): the tests must say so."""
    rules = RULES.read_text()
    good = (
        "sum by (job, instance) (rate(streamrank_events_consumed_total[5m])) > 0\n"
        "          unless on (job, instance)\n"
        "          sum by (job, instance) (rate(streamrank_predictions_total[5m])) > 0"
    )
    assert good in rules
    naive = (
        "sum by (job, instance) (rate(streamrank_events_consumed_total[5m])) > 0\n"
        "          and on (job, instance)\n"
        "          sum by (job, instance) (rate(streamrank_predictions_total[5m])) == 0"
    )
    (tmp_path / "alerts.yml").write_text(rules.replace(good, naive))
    (tmp_path / "alerts_test.yml").write_text(RULE_TESTS.read_text())
    r = _run(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert r.returncode != 0
    assert "predictions series is absent" in r.stdout + r.stderr


def test_required_alerts_exist_with_severity_and_summary():
    alerts = {a["alert"]: a for a in _alerts()}
    assert REQUIRED <= set(alerts), f"missing: {REQUIRED - set(alerts)}"
    for name, a in alerts.items():
        assert a["labels"]["severity"] in ("critical", "warning"), name
        assert a["annotations"].get("summary"), name


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_a_runbook_section_that_says_what_how_and_what_to_do():
    text = (ROOT / "RUNBOOK.md").read_text()
    sections = {}
    for block in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        sections[_slug(heading)] = body
    for a in _alerts():
        url = a["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("RUNBOOK.md"), url
        assert anchor in sections, f"{a['alert']}: no RUNBOOK.md section #{anchor}"
        body = sections[anchor]
        for part in ("**What it means.**", "**How to confirm.**", "**What to do.**"):
            assert part in body, f"RUNBOOK.md#{anchor} lacks {part}"


def _monitor_metrics() -> MonitorMetrics:
    """The monitor's registry after two arms ("a" and the hold-out) scored two businesses each and
    each business converted once."""
    mon = MonitorMetrics()
    core = MonitorCore(
        MonitorSettings(windows=(("24h", 86_400_000), ("7d", 604_800_000)), conversion_kinds=frozenset({"CALL"}))
    )
    for arm, score in (("a", 1.0), ("holdout", 1.0)):
        core.add_prediction(
            {"business_id": arm, "score": score, "event_time": 0, "group_key": "m", "arm": arm, "model_version": "v"}
        )
        core.add_prediction(
            {
                "business_id": arm + "2",
                "score": 0.0,
                "event_time": 0,
                "group_key": "m",
                "arm": arm,
                "model_version": "v",
            }
        )
    for i, b in enumerate(("a", "a2", "holdout", "holdout2")):
        core.add_activity(b, "CALL", f"e{i}", 1000 + i)
    core.release()
    mon.snapshot.set(core.snapshot())
    return mon


def _exported_names() -> set[str]:
    """Every sample name the worker, the trainer and the monitor expose once they have done some work."""
    m = WorkerMetrics("w", topics=["business-events", "activity-events"])
    X = np.zeros((drift.MAX_ROWS, 2))
    reference = build_reference(X[:100], ("f0", "f1"), np.zeros(100)).to_dict()
    model = SimpleNamespace(
        version="v20260101000000-abcdef12",
        feature_set_version="fs1",
        metadata={"drift_reference": reference, "importance": {"f0": 1.0}},
        spec=SimpleNamespace(names=("f0", "f1")),
    )
    m.model_swapped(model)
    preds = [{"arm": "default", "model_version": model.version, "score": 0.5, "event_time": 0}]
    out = SimpleNamespace(
        predictions=preds, dead_letters=[], outcomes=Counter(scored=1), score_seconds=0.0, features=X
    )  # a full drift window: the PSI gauges are set
    m.observe_batch(out, model.version, state_s=0.0, produce_s=0.0, commit_s=0.0)
    m.batch_failed("DeliveryError")
    tp = TopicPartition("activity-events", 0)
    consumer = SimpleNamespace(assignment=lambda: {tp}, highwater=lambda _tp: 10)
    m.observe_lag(consumer, {tp: 4}, {}, force=True)
    t = TrainerMetrics()
    t.record(
        {
            "result": "promoted",
            "ended_at": 1.0,
            "duration_s": 1.0,
            "promoted": True,
            "version": "v",
            "metrics": {"model": {"capture": 0.5}},
            "gates": [{"name": "sanity", "passed": True}],
        }
    )
    mon = _monitor_metrics()
    text = (generate_latest(m.registry) + generate_latest(t.registry) + generate_latest(mon.registry)).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_rules_read_is_exported():
    exported = _exported_names()
    doc = yaml.safe_load(RULES.read_text())
    read = set()
    for g in doc["groups"]:
        for r in g["rules"]:
            read |= set(re.findall(r"(?<![\w:])(streamrank_[a-z_]+)", r["expr"]))
    assert read, "no streamrank metric found in the rules"
    missing = read - exported
    assert not missing, f"rules read metrics nobody exports: {missing}"


def test_prometheus_config_is_valid_and_scrapes_the_jobs_the_rules_name(promtool):
    r = _run(promtool, "check", "config", str(OPS / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load((OPS / "prometheus.yml").read_text())
    jobs = {s["job_name"] for s in cfg["scrape_configs"]}
    named = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    assert named and named <= jobs
    assert cfg["rule_files"] == ["alerts.yml"]


def test_compose_runs_prometheus_with_the_rules():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prom = compose["services"]["prometheus"]
    assert "./ops/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    for svc in ("worker", "trainer", "monitor"):  # what prometheus.yml scrapes on port 9100
        assert compose["services"][svc]["environment"]["STREAMRANK_METRICS_PORT"] == "9100"


@pytest.mark.parametrize("script", ["scripts/install-prometheus.sh"])
def test_install_script_is_a_no_op_when_installed(script, promtool, prometheus_bin):
    r = _run("bash", str(ROOT / script))
    assert r.returncode == 0, r.stderr
    assert "apt-get" not in r.stderr


def test_grafana_dashboard_reads_only_exported_metrics():
    import json

    dash = json.loads((ROOT / "ops" / "grafana" / "streamrank-business.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    read = {n for e in exprs for n in re.findall(r"(?<![\w:])(streamrank_[a-z_]+)", e)}
    assert any(n.startswith("streamrank_monitor_") for n in read)
    assert read <= _exported_names(), read - _exported_names()


def test_monitor_exports_the_holdout_capture_the_capture_alert_reads():
    """The capture alert judges the promoted model on the hold-out: the monitor must export the
    hold-out's capture by both rankings and its conversions (market all and per market)."""
    text = generate_latest(_monitor_metrics().registry).decode()
    samples = {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    for market in ("all", "m"):
        for ranking in ("served", "popularity"):
            want = (
                f'streamrank_monitor_topk_capture{{arm="holdout",market="{market}",ranking="{ranking}",window="24h"}}'
            )
            assert want in samples, want
        assert f'streamrank_monitor_conversions{{arm="holdout",market="{market}",window="24h"}}' in samples
    rule = next(a for a in _alerts() if a["alert"] == "StreamrankCaptureBelowPopularity")
    assert 'arm="holdout"' in rule["expr"] and 'ranking="served"' in rule["expr"]
