"""Predictions and conversions as the monitor's core receives them (``consumer.monitor.core``).

``pred`` builds one decoded prediction; ``experiment`` a seeded random one: businesses split over
arms and a hold-out, a prediction at each business's activity and conversions that favour
high-scored businesses, returned as (predictions, conversions) ready for both the core and
``consumer.tools.report.build_report``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, where simulated worlds start


def pred(b: str, t: int, score: float, *, arm: str = "a", market: str = "m1", version: str = "v1") -> dict[str, Any]:
    return {
        "prediction_id": f"{arm}-{b}-{t}",
        "business_id": b,
        "score": score,
        "event_time": t,
        "as_of": t,
        "group_key": market,
        "arm": arm,
        "model_version": version,
    }


def experiment(
    seed: int = 1, businesses: int = 120, days: int = 5, markets: int = 4, arms: tuple[str, ...] = ("a", "b")
) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
    """(predictions, conversions as (business, event_id, time)), both in time order."""
    rng = np.random.default_rng(seed)
    cells = [*arms, "holdout"]
    preds: list[dict[str, Any]] = []
    convs: list[tuple[str, str, int]] = []
    for i in range(businesses):
        b = f"b{i:04d}"
        arm = cells[i % len(cells)]
        market = f"city{i % markets}|cat"
        quality = rng.gamma(1.0, 1.0)
        for t in np.sort(rng.integers(T0, T0 + days * DAY, size=int(rng.integers(1, 12)))):
            preds.append(pred(b, int(t), float(quality + rng.normal(0, 0.3)), arm=arm, market=market))
        for j, t in enumerate(np.sort(rng.integers(T0, T0 + days * DAY, size=int(rng.poisson(quality * 3))))):
            convs.append((b, f"{b}-c{j}", int(t)))
    preds.sort(key=lambda p: p["event_time"])
    convs.sort(key=lambda c: c[2])
    return preds, convs
