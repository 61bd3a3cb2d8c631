"""The monitor on a real broker: it serves its endpoints, agrees with ``report`` on the same topics,
and a restarted monitor rebuilds the same windows from the topics."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from consumer.monitor.core import ALL
from consumer.monitor.loop import Monitor
from consumer.runtime.health import MetricsServer
from consumer.runtime.worker import Worker
from consumer.tools.report import run_report
from tests.kit.topics import publish_world

pytestmark = pytest.mark.broker


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_monitor_serves_agrees_with_report_and_rebuilds_on_restart(kafka_config):
    cfg = kafka_config.with_overrides(
        arms="a:promoted:50,b:random:50",
        holdout=0.3,
        holdout_topic=kafka_config.predictions_topic + "-holdout",
        shadow_topic=kafka_config.predictions_topic + "-shadow",
        monitor_windows="1h,30d",
        monitor_refresh_s=0.2,
    )
    publish_world(cfg, businesses=80, days=4, seed=5)
    Worker(cfg, exit_when_idle_s=2.0).run()  # nothing promoted: the arms serve the popularity baseline

    mon = Monitor(cfg)
    server = MetricsServer(mon.metrics.registry, 0, host="127.0.0.1", health=mon.health, readiness=mon.readiness)
    thread = threading.Thread(target=mon.run, daemon=True)
    try:
        assert _get(f"http://127.0.0.1:{server.port}/readyz")[0] == 503  # not caught up yet
        thread.start()
        deadline = time.monotonic() + 60
        while not (mon.ready and mon.core.pending == 0 and mon.snapshot and mon.snapshot.now_ms > 0):
            assert time.monotonic() < deadline, "monitor did not catch up"
            time.sleep(0.2)
        time.sleep(0.5)  # one more refresh after the last release
        code, body = _get(f"http://127.0.0.1:{server.port}/readyz")
        assert code == 200 and json.loads(body)["phase"] == "monitoring"
        assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        metrics = _get(f"http://127.0.0.1:{server.port}/metrics")[1]
        assert 'streamrank_monitor_topk_capture{arm="a",market="all",ranking="served",window="30d"}' in metrics
        assert 'streamrank_monitor_uplift_vs_holdout_ci_high{arm="b",market="all",window="30d"}' in metrics
        live = mon.snapshot
    finally:
        mon.request_stop()
        thread.join(10)
        server.close()

    rep = run_report(cfg, kinds=("BIZSITE_VISIT", "CALL", "DIRECTIONS"), horizon_ms=cfg.horizon_ms, k=3)
    assert live is not None and live.now_ms == rep.log_end_ms
    for arm in ("a", "b", "holdout"):
        cell, f = rep.cell(arm), live.figures[("30d", arm, ALL)]
        assert f.businesses == cell.n_businesses, arm
        assert f.conv_per_business_day == pytest.approx(cell.conv_per_business_day, rel=1e-9), arm
        # Different frames (the ranking at each conversion vs report's daily frame with next-horizon
        # labels): agreement within the tolerance the README states.
        assert f.capture == pytest.approx(cell.capture, abs=0.05), arm
    for arm in ("a", "b"):
        u, want = live.figures[("30d", arm, ALL)].uplift, rep.cell(arm).uplift_vs_holdout
        assert u is not None and want is not None
        assert (u.diff, u.lo, u.hi) == pytest.approx((want.diff, want.lo, want.hi), rel=1e-9, abs=1e-12)
    # Coverage: every conversion of a business the worker scored before it.
    n, scored = live.coverage["30d"]
    assert n == rep.conversions and 0.5 < scored / n <= 1

    again = Monitor(cfg).run(until_caught_up=True)  # a restart: rebuilt from the topics
    assert again.now_ms == live.now_ms
    assert again.figures.keys() == live.figures.keys()
    for key, f in live.figures.items():
        g = again.figures[key]
        assert (g.conversions, g.businesses) == (f.conversions, f.businesses), key
        assert g.capture == pytest.approx(f.capture, nan_ok=True), key
        assert g.conv_per_business_day == pytest.approx(f.conv_per_business_day, nan_ok=True), key
