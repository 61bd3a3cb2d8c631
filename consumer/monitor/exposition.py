"""The monitor's figures as Prometheus metrics (a collector over the latest ``Snapshot``).

Labels are bounded: ``arm`` (the experiment's arms, ``holdout``, ``shadow``), ``window`` (the
settings' windows), ``market`` (the top ``STREAMRANK_MONITOR_TOP_MARKETS`` markets by conversions
in the largest window, ``other`` for the rest, ``all`` for every market: do not sum over
``market``). A figure that is undefined (no conversions, no hold-out) is absent, not NaN, so
alert rules never compare with NaN. The series are rebuilt from each snapshot, so a market that
leaves the top list leaves no stale series behind.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from consumer.monitor.core import Snapshot

P = "streamrank_monitor_"


def _ok(v: float) -> bool:
    return v is not None and math.isfinite(v)


class SnapshotCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None

    def set(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap

    def collect(self) -> Iterator[Any]:
        with self._lock:
            snap = self._snap
        if snap is None:
            return
        amw = ["arm", "market", "window"]
        capture = GaugeMetricFamily(
            P + "topk_capture",
            "Share of the window's conversions (of businesses the arm had scored) that went to the market's top-k "
            "at the moment of the conversion; ranking=served: the arm's latest scores (arm=holdout: the promoted "
            "model's scores of businesses never served, free of feedback: what StreamrankCaptureBelowPopularity "
            "judges), ranking=popularity: conversions so far",
            labels=[*amw, "ranking"],
        )
        conversions = GaugeMetricFamily(
            P + "conversions",
            "Conversions in the window of businesses the arm had scored (capture's denominator)",
            labels=amw,
        )
        businesses = GaugeMetricFamily(
            P + "businesses", "Businesses exposed in the arm (the uplift's units)", labels=amw
        )
        rate = GaugeMetricFamily(
            P + "conversions_per_business_day",
            "Mean per-business conversions per day over the window since each business's first prediction",
            labels=amw,
        )
        up = GaugeMetricFamily(
            P + "uplift_vs_holdout",
            "Conversions per business per day minus the hold-out's (report's estimator)",
            labels=amw,
        )
        up_lo = GaugeMetricFamily(
            P + "uplift_vs_holdout_ci_low", "Lower end of the uplift's Welch 95 % interval", labels=amw
        )
        up_hi = GaugeMetricFamily(
            P + "uplift_vs_holdout_ci_high", "Upper end of the uplift's Welch 95 % interval", labels=amw
        )
        for (window, arm, market), f in sorted(snap.figures.items()):
            lv = [arm, market, window]
            conversions.add_metric(lv, f.conversions)
            businesses.add_metric(lv, f.businesses)
            if _ok(f.capture):
                capture.add_metric([*lv, "served"], f.capture)
            if _ok(f.popularity_capture):
                capture.add_metric([*lv, "popularity"], f.popularity_capture)
            if _ok(f.conv_per_business_day):
                rate.add_metric(lv, f.conv_per_business_day)
            u = f.uplift
            if u is not None and _ok(u.diff):
                up.add_metric(lv, u.diff)
                up_lo.add_metric(lv, u.lo)
                up_hi.add_metric(lv, u.hi)
        yield from (capture, conversions, businesses, rate, up, up_lo, up_hi)
        cov = GaugeMetricFamily(
            P + "coverage",
            "Share of the window's conversions whose business had a serving or hold-out score",
            labels=["window"],
        )
        conv_all = GaugeMetricFamily(P + "window_conversions", "Distinct conversions in the window", labels=["window"])
        for window, (n, scored) in sorted(snap.coverage.items()):
            conv_all.add_metric([window], n)
            if n:
                cov.add_metric([window], scored / n)
        yield from (cov, conv_all)
        delay = GaugeMetricFamily(
            P + "conversion_delay_seconds",
            "Event time from the business's latest score to its conversion (quantile: a histogram bucket's upper bound)",
            labels=["arm", "window", "quantile"],
        )
        for (window, arm, q), v in sorted(snap.delay_s.items()):
            delay.add_metric([arm, window, str(q)], v if math.isfinite(v) else float("inf"))
        yield delay
        info = GaugeMetricFamily(
            P + "arm_info", "The model version each arm last scored with", labels=["arm", "model_version"]
        )
        for arm, version in sorted(snap.model_versions.items()):
            info.add_metric([arm, version], 1)
        yield info
        yield GaugeMetricFamily(P + "event_time_seconds", "Event time the windows end at", value=snap.now_ms / 1000.0)


class MonitorMetrics:
    """The monitor process's registry: the snapshot collector plus its own progress."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)
        r = self.registry
        self.records = Counter(P + "records", "Records read, per topic", ["topic"], registry=r)
        self.undecodable = Counter(
            P + "undecodable_records", "Records that did not decode, per topic", ["topic"], registry=r
        )
        self.late = Gauge(
            P + "late_records", "Records applied after the release point passed their event time", registry=r
        )
        self.pending = Gauge(P + "pending_records", "Records waiting for the slowest partition", registry=r)
        self.ready = Gauge(P + "ready", "1 once the windows are rebuilt from the topics (caught up once)", registry=r)
        self.refresh_seconds = Gauge(P + "refresh_seconds", "Time the last snapshot took", registry=r)


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def to_dict(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-ready data (``monitor --snapshot --json``)."""

    def clean(v: float | None) -> float | None:
        return v if v is not None and math.isfinite(v) else None

    rows = []
    for (window, arm, market), f in sorted(snap.figures.items()):
        u = f.uplift
        rows.append(
            {
                "window": window,
                "arm": arm,
                "market": market,
                "conversions": f.conversions,
                "capture": clean(f.capture),
                "popularity_capture": clean(f.popularity_capture),
                "businesses": f.businesses,
                "conv_per_business_day": clean(f.conv_per_business_day),
                "uplift_vs_holdout": None
                if u is None
                else {"diff": clean(u.diff), "lo": clean(u.lo), "hi": clean(u.hi), "n_a": u.n_a, "n_b": u.n_b},
            }
        )
    return {
        "now_ms": snap.now_ms,
        "windows": snap.windows,
        "markets": snap.markets,
        "figures": rows,
        "coverage": {w: {"conversions": n, "scored": s} for w, (n, s) in snap.coverage.items()},
        "delay_s": [
            {"window": w, "arm": a, "quantile": q, "seconds": v} for (w, a, q), v in sorted(snap.delay_s.items())
        ],
        "model_versions": snap.model_versions,
    }


def to_markdown(snap: Snapshot, market: str = "all") -> str:
    """One table per window, ``market`` only (``all`` by default)."""
    import datetime as dt

    end = dt.datetime.fromtimestamp(snap.now_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    lines = [f"# Monitor snapshot, windows ending {end} (event time), market {market}", ""]
    for window in snap.windows:
        n, scored = snap.coverage.get(window, (0.0, 0.0))
        cov = scored / n if n else float("nan")
        lines += [
            f"## {window}: {n:.0f} conversions, coverage {_fmt(cov, '.3f')}",
            "",
            "| arm | model | conversions | capture | popularity capture | businesses | conv/business/day | uplift vs hold-out [95 %] | delay p50 |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for (w, arm, m), f in sorted(snap.figures.items()):
            if w != window or m != market:
                continue
            u = f.uplift
            ups = "-" if u is None or not math.isfinite(u.diff) else f"{u.diff:+.4f} [{u.lo:+.4f}, {u.hi:+.4f}]"
            p50 = snap.delay_s.get((window, arm, 0.5))
            lines.append(
                f"| {arm} | {snap.model_versions.get(arm, '')} | {f.conversions:.0f} | {_fmt(f.capture)} | "
                f"{_fmt(f.popularity_capture)} | {f.businesses} | {_fmt(f.conv_per_business_day)} | {ups} | "
                f"{_fmt(p50, '.0f')} s |"
            )
        lines.append("")
    return "\n".join(lines)
