"""The monitor's core without a broker: windows, ordering, capture, coverage, uplift (vs report)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consumer.config import Config, parse_windows
from consumer.errors import ConfigError
from consumer.monitor.core import ALL, OTHER, MonitorCore, MonitorSettings, topk_credit
from consumer.monitor.windows import Ring
from consumer.tools.report import build_report
from tests.kit.monitoring import DAY, HOUR, T0, experiment, pred

KINDS = frozenset({"CALL"})


def core(**kw) -> MonitorCore:
    base = {"windows": (("1h", HOUR), ("1d", DAY)), "buckets": 12, "top_k": 1, "conversion_kinds": KINDS}
    return MonitorCore(MonitorSettings(**{**base, **kw}))


def feed(c: MonitorCore, preds, convs) -> None:
    for p in preds:  # each prediction scored an activity event at its event time
        c.add_prediction(p)
        c.add_activity(p["business_id"], "VIEW", f"v-{p['prediction_id']}", p["event_time"])
    for b, eid, t in convs:
        c.add_activity(b, "CALL", eid, t)
    c.release()


# ------------------------------------------------------------------------------------ windows
def test_ring_sums_the_last_n_buckets_and_drops_what_falls_out():
    r = Ring(10, 3, 1)
    assert r.add(5, "k", [1]) and r.add(15, "k", [2]) and r.add(25, "k", [4])
    assert r.totals(29) == {"k": [7.0]}
    assert r.add(35, "k", [8])  # bucket 0 falls out
    assert r.totals(35) == {"k": [14.0]}
    assert not r.add(9, "k", [100])  # older than the window: refused
    assert r.start_ms(35) == 10
    assert r.entries() == 3


def test_windows_parse_and_bad_settings_are_refused():
    assert parse_windows("1h, 24h,7d") == (("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY))
    for bad in ("", "1h,1h", "0h", "5x", "0"):
        with pytest.raises(ValueError):
            parse_windows(bad)
    with pytest.raises(ConfigError, match="STREAMRANK_MONITOR_WINDOWS"):
        Config.from_env({"STREAMRANK_MONITOR_WINDOWS": "1w"})
    with pytest.raises(ConfigError):
        Config.from_env({"STREAMRANK_MONITOR_TOP_K": "0"})


def test_topk_credit_shares_ties():
    assert topk_credit(5, [5, 4, 3], 1) == 1.0
    assert topk_credit(3, [5, 4, 3], 2) == 0.0
    assert topk_credit(1, [1, 1, 1, 1], 2) == 0.5
    assert topk_credit(1, [2, 1, 1], 2) == 0.5


# ------------------------------------------------------------------------------------ capture
def test_capture_counts_the_latest_score_before_the_conversion_and_popularity_beside_it():
    c = core(top_k=1)
    feed(
        c,
        [pred("x", T0, 1.0), pred("y", T0, 2.0), pred("x", T0 + 10, 3.0), pred("y", T0 + 500, 9.0)],
        # x converts at +100 (x is top: 3 > 2), y at +200 (not top), and again at +500: its own
        # prediction at +500 comes after it, so y is still second.
        [("x", "e1", T0 + 100), ("y", "e2", T0 + 200), ("y", "e3", T0 + 500)],
    )
    f = c.snapshot().figures[("1h", "a", ALL)]
    assert f.conversions == 3 and f.capture == pytest.approx(1 / 3)
    # popularity before each: e1: x=0,y=0 -> tie 0.5; e2: x=1,y=0 -> 0; e3: x=1,y=1 -> tie 0.5
    assert f.popularity_capture == pytest.approx(1 / 3)


def test_records_out_of_order_are_applied_in_event_time_order_once_released():
    c = core(top_k=1)
    c.add_activity("x", "CALL", "e1", T0 + 100)
    c.add_prediction(pred("y", T0 + 50, 2.0))
    c.add_prediction(pred("x", T0, 1.0))
    assert c.pending == 3 and c.release(T0 + 60) == 2 and c.pending == 1
    c.release()
    assert c.snapshot().figures[("1h", "a", ALL)].capture == 0.0  # y (2.0) was above x at +100


def test_coverage_counts_unscored_conversions_and_shadow_does_not_cover():
    c = core()
    feed(
        c,
        [pred("x", T0, 1.0), pred("z", T0, 1.0, arm="shadow")],
        [("x", "e1", T0 + 1), ("z", "e2", T0 + 2), ("u", "e3", T0 + 3), ("x", "e1", T0 + 4)],  # e1 twice
    )
    snap = c.snapshot()
    assert snap.coverage["1h"] == (3.0, 1.0)
    assert c.counts["duplicates"] == 1
    assert snap.figures[("1h", "shadow", ALL)].conversions == 1


def test_windows_slide_in_event_time():
    c = core(top_k=1)
    feed(c, [pred("x", T0, 1.0)], [("x", "e1", T0 + 1000), ("x", "e2", T0 + 3 * HOUR)])
    snap = c.snapshot()
    assert snap.figures[("1h", "a", ALL)].conversions == 1
    assert snap.figures[("1d", "a", ALL)].conversions == 2


def test_delay_quantiles_are_histogram_upper_bounds():
    c = core()
    feed(c, [pred("x", T0, 1.0)], [("x", "e1", T0 + 30_000), ("x", "e2", T0 + 2 * HOUR)])
    snap = c.snapshot()
    assert snap.delay_s[("1d", "a", 0.5)] == 60
    assert snap.delay_s[("1d", "a", 0.9)] == 3 * 3600


def test_market_labels_are_bounded_top_n_plus_other_and_all():
    c = core(top_markets=2)
    preds, convs = [], []
    for m in range(5):
        for j in range(m + 1):  # market m gets m + 1 conversions
            preds.append(pred(f"b{m}-{j}", T0, 1.0, market=f"m{m}"))
            convs.append((f"b{m}-{j}", f"e{m}-{j}", T0 + 10))
    feed(c, preds, convs)
    snap = c.snapshot()
    assert snap.markets == ["m4", "m3"]
    labels = {m for (w, cell, m) in snap.figures if w == "1d"}
    assert labels == {"m4", "m3", OTHER, ALL}
    fig = snap.figures
    assert fig[("1d", "a", OTHER)].conversions == 1 + 2 + 3
    assert fig[("1d", "a", ALL)].conversions == 15


# ------------------------------------------------------------------------------------ vs report
@pytest.mark.parametrize("seed", [1, 2])
def test_rates_and_uplift_equal_reports_when_the_window_spans_the_log(seed):
    preds, convs = experiment(seed=seed)
    c = MonitorCore(MonitorSettings(windows=(("30d", 30 * DAY),), buckets=30, top_k=3, conversion_kinds=KINDS))
    feed(c, preds, convs)
    snap = c.snapshot()
    times: dict[str, list[int]] = {}
    for b, _, t in convs:
        times.setdefault(b, []).append(t)
    end = max(convs[-1][2], preds[-1]["event_time"])
    assert snap.now_ms == end  # the newest activity: report's log end
    rep = build_report(preds, {b: np.asarray(v) for b, v in times.items()}, end, horizon_ms=DAY, k=3)
    for arm in ("a", "b", "holdout"):
        cell, f = rep.cell(arm), snap.figures[("30d", arm, ALL)]
        assert f.businesses == cell.n_businesses
        assert f.conv_per_business_day == pytest.approx(cell.conv_per_business_day, rel=1e-12)
    for arm in ("a", "b"):
        u, want = snap.figures[("30d", arm, ALL)].uplift, rep.cell(arm).uplift_vs_holdout
        assert u is not None and want is not None
        assert (u.diff, u.lo, u.hi, u.n_a, u.n_b) == pytest.approx((want.diff, want.lo, want.hi, want.n_a, want.n_b))
    assert snap.figures[("30d", "holdout", ALL)].uplift is None


def test_capture_of_a_quality_ranking_beats_a_shuffled_one():
    """The experiment's conversions follow the scores: the capture must see it, and lose it when the
    scores are shuffled within each arm."""
    preds, convs = experiment(seed=3, businesses=200)
    rng = np.random.default_rng(0)
    shuffled = [dict(p, score=float(rng.random())) for p in preds]
    got = []
    for ps in (preds, shuffled):
        c = MonitorCore(MonitorSettings(windows=(("30d", 30 * DAY),), buckets=30, top_k=3, conversion_kinds=KINDS))
        feed(c, ps, convs)
        got.append(c.snapshot().figures[("30d", "a", ALL)])
    good, bad = got
    assert good.capture > bad.capture + 0.1
    assert not math.isnan(good.popularity_capture)


def test_the_monitor_exports_business_figures_only_once_ready(tmp_path):
    from consumer.monitor.loop import Monitor

    mon = Monitor(Config(schema_registry=str(tmp_path / "schemas.json")), MonitorSettings(conversion_kinds=KINDS))
    feed(mon.core, *experiment(seed=1))
    reg = mon.metrics.registry

    def conversions():
        return [s for m in reg.collect() for s in m.samples if s.name == "streamrank_monitor_conversions"]

    mon.refresh()  # still rebuilding from the topics: partial figures
    assert mon.snapshot is not None and mon.snapshot.figures
    assert conversions() == [] and reg.get_sample_value("streamrank_monitor_pending_records") == 0
    mon.ready = True
    mon.refresh()
    assert conversions()
