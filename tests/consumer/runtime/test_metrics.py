"""consumer.runtime.metrics without a broker: bulk histograms, liveness and readiness rules, the HTTP
endpoints. (The trainer's run record: tests/consumer/trainer; structured logs: test_logsetup.)"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.runtime.health import MetricsServer
from consumer.runtime.metrics import (
    SCORE_BUCKETS,
    BulkHistogram,
    WorkerMetrics,
    model_created_s,
)


def _samples(registry, name: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_bulk_histogram_matches_prometheus_client_histogram():
    rng = np.random.default_rng(3)
    # Values exactly on bucket bounds too: `le` means less or equal.
    values = np.concatenate([rng.normal(0, 3, 2000), np.asarray(SCORE_BUCKETS), [-100.0, 100.0]])
    bulk_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("h", "doc", SCORE_BUCKETS, ["model_version"], registry=bulk_reg)
    ref = Histogram("h", "doc", ["model_version"], buckets=SCORE_BUCKETS, registry=ref_reg)
    for chunk in np.array_split(values, 7):
        bulk.observe_many(chunk, ("v1",))
        bulk.observe_many([float("nan")], ("v1",))  # NaN scores are not observations
        for v in chunk:
            ref.labels("v1").observe(float(v))
    got, want = _samples(bulk_reg, "h_bucket"), _samples(ref_reg, "h_bucket")
    assert got == want
    assert got[(("le", "+Inf"), ("model_version", "v1"))] == len(values)


def test_bulk_histogram_exposes_sum_and_count_for_non_negative_buckets():
    reg = CollectorRegistry()
    h = BulkHistogram("lat", "doc", (1.0, 10.0), registry=reg)
    h.observe_many([0.5, 2.0, 50.0])
    assert _samples(reg, "lat_count") == {(): 3.0}
    assert _samples(reg, "lat_sum") == {(): 52.5}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _running(clock: Clock, stall_s: float = 60.0) -> WorkerMetrics:
    m = WorkerMetrics("w", stall_s=stall_s, clock=clock, wall=lambda: 1.7e9)
    m.model_swapped(SimpleNamespace(version="v20260101000000-abcdef12", feature_set_version="fs", metadata={}))
    m.set_phase("running")
    m.heartbeat()
    return m


def _observe(m: WorkerMetrics, hw: int, received: int | None) -> None:
    tp = TopicPartition("activity", 0)
    consumer = SimpleNamespace(assignment=lambda: {tp}, highwater=lambda _tp: hw)
    m.observe_lag(consumer, {} if received is None else {tp: received}, {}, force=True)


def _idle_for(m: WorkerMetrics, clock: Clock, seconds: int) -> None:
    for _ in range(seconds // 10):  # the loop keeps turning
        clock.t += 10
        m.heartbeat()


def test_liveness_is_progress_not_process_up():
    clock = Clock()
    m = _running(clock)
    assert m.health()[0]
    clock.t += 59
    assert m.health()[0]
    clock.t += 2  # the poll loop has not turned for 61 s
    ok, info = m.health()
    assert not ok and "poll loop" in info["reason"]
    m.heartbeat()
    assert m.health()[0]


def test_records_received_and_never_committed_make_the_worker_not_live():
    clock = Clock()
    m = _running(clock)
    _observe(m, hw=150, received=150)  # 150 records received, none committed
    _idle_for(m, clock, 70)
    ok, info = m.health()
    assert not ok and "committed" in info["reason"]
    m.observe_commit({TopicPartition("activity", 0): 100})
    assert m.health()[0]  # committing again: live, though records remain
    _idle_for(m, clock, 70)
    assert not m.health()[0]  # ... until it stops committing them
    m.observe_commit({TopicPartition("activity", 0): 150})
    _observe(m, hw=150, received=150)  # all committed: idle, and live however long it idles
    _idle_for(m, clock, 300)
    assert m.health()[0]


def test_an_idle_partition_behind_a_transaction_marker_stays_live():
    """The high-water mark stays one past the last record (the commit marker): lag 1 forever is idle."""
    clock = Clock()
    m = _running(clock)
    _observe(m, hw=51, received=50)
    m.observe_commit({TopicPartition("activity", 0): 50})
    _idle_for(m, clock, 300)
    _observe(m, hw=51, received=50)
    assert m.health()[0]
    assert _samples(m.registry, "streamrank_consumer_lag") == {(("partition", "0"), ("topic", "activity")): 1.0}


def test_restoring_is_live_while_records_are_read_and_not_ready():
    clock = Clock()
    m = _running(clock)
    m.set_ready(True)
    assert m.readiness()[0]
    tp = TopicPartition("changelog", 0)
    records = [SimpleNamespace(offset=o) for o in (0, 1, 2)]
    inner = SimpleNamespace(
        poll=lambda **kw: {tp: records}, assignment=lambda: {tp}, highwater=lambda _tp: 10, close=lambda: None
    )
    with m.restoring([0]) as r:
        assert not m.readiness()[0] and m.phase == "restoring"
        consumer = r.wrap(inner)
        clock.t += 50
        consumer.poll(timeout_ms=100)
        clock.t += 50  # 100 s into the restore, but it read records 50 s ago
        assert m.health()[0]
        assert _samples(m.registry, "streamrank_restore_records_read") == {(): 3.0}
        assert _samples(m.registry, "streamrank_restore_records_remaining") == {(): 7.0}
        clock.t += 11
        assert not m.health()[0]  # stalled restore
        r.finished(SimpleNamespace(records=3, seconds=111.0))
    assert m.phase == "running"
    assert _samples(m.registry, "streamrank_restores_total") == {(): 1.0}
    assert not m.readiness()[0]  # ready again only when the worker says so after the restore
    m.heartbeat()
    m.set_ready(True)
    assert m.readiness()[0]


def test_waiting_for_a_model_is_live_but_not_ready():
    m = WorkerMetrics("w")
    m.set_phase("waiting_for_model")
    m.set_ready(True)
    assert m.health()[0] and not m.readiness()[0]


def test_model_age_and_info_follow_the_served_model():
    now = 1_767_232_800.0  # 2026-01-01T02:00:00Z
    m = WorkerMetrics("w", wall=lambda: now)
    m.model_swapped(SimpleNamespace(version="v20260101000000-abcdef12", feature_set_version="fs1", metadata={}))
    assert _samples(m.registry, "streamrank_model_age_seconds") == {(): 7200.0}
    m.model_swapped(
        SimpleNamespace(
            version="v20260101010000-12345678",
            feature_set_version="fs1",
            metadata={"created_at": "2026-01-01T01:30:00+00:00"},
        )
    )
    assert _samples(m.registry, "streamrank_model_age_seconds") == {(): 1800.0}
    info = _samples(m.registry, "streamrank_model_info")
    assert info == {(("feature_set_version", "fs1"), ("model_version", "v20260101010000-12345678")): 1.0}
    assert model_created_s("not-a-version", None) is None


def test_batch_counts_predictions_per_arm_and_model_and_dead_letters_per_reason():
    m = WorkerMetrics("w", topics=["b", "a"])
    preds = [{"arm": "default", "model_version": "v1", "score": 0.1, "event_time": 1_000} for _ in range(5)]
    shadow = [{"arm": "shadow", "model_version": "v2", "score": 0.9, "event_time": 1_000} for _ in range(2)]
    dls = [SimpleNamespace(reason="undecodable")] * 3 + [SimpleNamespace(reason="key_mismatch")]
    out = SimpleNamespace(
        predictions=preds,
        shadow=shadow,
        holdout=[],
        dead_letters=dls,
        outcomes=Counter(scored=5, dead_letter=4),
        score_seconds=0.01,
    )
    m.observe_batch(out, "v1", state_s=0.03, produce_s=0.02, commit_s=0.01, published_at=11.0)
    assert _samples(m.registry, "streamrank_predictions_total") == {
        (("arm", "default"), ("model_version", "v1")): 5.0,
        (("arm", "shadow"), ("model_version", "v2")): 2.0,
    }
    dl = _samples(m.registry, "streamrank_dead_letters_total")
    assert (
        dl[(("reason", "undecodable"),)] == 3
        and dl[(("reason", "key_mismatch"),)] == 1
        and dl[(("reason", "invalid"),)] == 0
    )
    assert _samples(m.registry, "streamrank_event_to_publish_seconds_sum") == {(): 50.0}  # 5 x (11 s - 1 s)
    stage = _samples(m.registry, "streamrank_batch_stage_seconds_sum")
    assert stage[(("stage", "state"),)] == pytest.approx(0.02)  # process time minus the model call
    assert _samples(m.registry, "streamrank_events_consumed_total") == {(("topic", "b"),): 0.0, (("topic", "a"),): 0.0}


def test_lag_series_follow_the_assignment():
    m = WorkerMetrics("w")
    tps = {TopicPartition("a", 0), TopicPartition("a", 1)}
    consumer = SimpleNamespace(assignment=lambda: set(tps), highwater=lambda tp: 10)
    m.observe_lag(consumer, {tp: 7 for tp in tps}, {}, force=True)
    assert set(_samples(m.registry, "streamrank_consumer_lag").values()) == {3.0}
    m.observe_commit({TopicPartition("a", 0): 10})
    m.forget_partitions([1])
    tps.discard(TopicPartition("a", 1))
    m.observe_lag(consumer, {}, {}, force=True)
    assert _samples(m.registry, "streamrank_consumer_lag") == {(("partition", "0"), ("topic", "a")): 0.0}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_endpoints():
    state = {"live": True}
    m = WorkerMetrics("w")
    server = MetricsServer(
        m.registry, 0, host="127.0.0.1", health=lambda: (state["live"], {"phase": "running"}), readiness=m.readiness
    )
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, body = _get(base + "/metrics")
        assert code == 200 and b'streamrank_worker_info{worker_id="w"} 1.0' in body
        code, body = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["ok"] is True
        state["live"] = False
        code, body = _get(base + "/healthz")
        assert code == 503 and json.loads(body) == {"ok": False, "phase": "running"}
        code, body = _get(base + "/readyz")
        assert code == 503 and json.loads(body)["ok"] is False
        assert _get(base + "/nope")[0] == 404
    finally:
        server.close()
