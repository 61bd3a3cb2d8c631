"""`streamrank train`'s printed lines: the snapshot metrics with their intervals next to the baselines."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from consumer.trainer.loop import TrainResult, describe
from models.evaluate import MetricSet, evaluate_snapshots
from models.trainer import Gate


def _outcome(markets: int):
    rng = np.random.default_rng(0)
    m = np.repeat(np.arange(markets), 20)
    snap = np.tile(np.repeat(np.arange(2), 10), markets)
    y = rng.poisson(1.0, len(m)).astype(float)
    s = y + rng.normal(0, 1, len(m))
    snapshot = evaluate_snapshots(s, y, m * 2 + snap, m, snap, s + rng.normal(0, 2, len(m)), s, samples=50)
    ms = MetricSet(ndcg10=0.9, auc=0.8, capture=0.5)
    gates = [
        Gate("sanity", True, "sanity set passes"),
        Gate(
            "beats_popularity", None, f"insufficient validation data: {snapshot.sufficiency.detail}", insufficient=True
        )
        if not snapshot.sufficiency.enough
        else Gate("beats_popularity", True, "ok"),
    ]
    return SimpleNamespace(
        version="v1",
        promoted=snapshot.sufficiency.enough,
        reason="r",
        evaluation=SimpleNamespace(k=3, model=ms, popularity=ms, random=ms),
        build=SimpleNamespace(records=1000, examples=100),
        fit=SimpleNamespace(
            seconds=0.1,
            rounds=12,
            objective="binary:logistic",
            examples={"rows": 500, "snapshots": {"rows": 500, "groups": 40, "groups_with_pairs": 38}},
        ),
        snapshot=snapshot,
        gates=gates,
        shifts=[],
    )


def test_describe_prints_snapshot_metrics_with_intervals_and_baselines():
    o = _outcome(10)
    lines = describe(TrainResult(o, 1.0, "/r/report.md"))
    text = "\n".join(lines)
    cap = next(line for line in lines if "top-3 capture:" in line and "recent" in line)
    iv = o.snapshot.scores["model"]["capture"]
    assert f"model {iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]" in cap
    for name in ("popularity", "recent", "random"):
        assert f"{name} " in cap
    assert "AUC:" in text and "NDCG@10:" in text and "model - popularity: capture" in text
    assert "enough data to decide" in text and "event frame:" in text
    # what the fit saw: the snapshot examples, with pairs, and the objective the inner split chose
    assert "fit: snapshots 500 rows in 40 groups (38 with pairs); binary:logistic, 12 trees" in text


def test_describe_says_insufficient_data():
    lines = describe(TrainResult(_outcome(2), 1.0, "/r/report.md"))
    assert any("INSUFFICIENT data" in line for line in lines)
    assert any(line.startswith("  gate beats_popularity: insufficient validation data") for line in lines)
