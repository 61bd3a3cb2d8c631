"""``streamrank diff``: two models replayed over the same range, compared; plus the comparison
logic on hand-made predictions."""

import json
import shutil
import uuid

import numpy as np
import pytest

from consumer.cli import main
from consumer.config import Config
from consumer.errors import DiffError
from consumer.io.clients import create_topics
from consumer.io.publish import publish_records
from consumer.tools.diff import compare, run_diff
from consumer.tools.replay import Position, replay
from consumer.tools.topicreads import Conversions, Source
from sim.world import WorldConfig, generate, generate_records

H = 86_400_000
KINDS = ("BIZSITE_VISIT", "CALL", "DIRECTIONS")
WORLD = WorldConfig(businesses=40, days=4, seed=3, cities=2, categories=2)


# ------------------------------------------------------------------------ without a broker
def _pred(offset, score, business="b1", group="Phoenix|Food", t=1_000, version="v1", fh="f"):
    return {
        "prediction_id": f"{version}-{offset}",
        "business_id": business,
        "score": score,
        "model_version": version,
        "feature_set_version": "fs",
        "source_topic": "activity",
        "source_partition": 0,
        "source_offset": offset,
        "event_time": t,
        "scored_at": 0,
        "group_key": group,
        "arm": "default",
        "feature_hash": fh,
    }


def test_compare_counts_coverage_deltas_and_top_k_overlap():
    # One group, five businesses; B swaps the order of the 3rd and 4th best; A has one extra record.
    a = [_pred(i, s, business=f"b{i}", t=1_000 + i) for i, s in enumerate([5.0, 4.0, 3.0, 2.0, 1.0])] + [_pred(9, 0.5)]
    b = [_pred(i, s, business=f"b{i}", t=1_000 + i, version="v2") for i, s in enumerate([5.0, 4.0, 2.0, 3.0, 1.0])]
    conv = Conversions({"b0": np.array([2_000]), "b3": np.array([3_000, 10**9])}, log_end_ms=10 * H, events=100)
    rep = compare(a, b, conv, horizon_ms=H, kinds=KINDS, k=3)
    assert (rep.n_a, rep.n_b, rep.both, rep.only_a, rep.only_b) == (6, 5, 5, 1, 0)
    assert rep.identical_share == pytest.approx(0.6)
    assert rep.abs_delta["max"] == pytest.approx(1.0) and rep.abs_delta["mean"] == pytest.approx(0.4)
    [g] = rep.groups
    assert g.businesses == 5 and g.overlap == pytest.approx(2 / 3)  # {b0,b1,b2} vs {b0,b1,b3}
    assert g.spearman == pytest.approx(0.9)  # one adjacent swap in 5: 1 - 6*2/(5*24)
    # Labels: b0 and b3 convert once within the horizon (b3's second conversion is far later).
    ma, mb = rep.metrics
    assert (ma.versions, mb.versions) == (["v1"], ["v2"])
    assert mb.capture == pytest.approx(1.0) and ma.capture == pytest.approx(0.5)  # b3 is in B's top 3 only
    with pytest.raises(DiffError):
        compare(a, [_pred(100, 1.0)], conv, horizon_ms=H)


def test_source_syntax():
    assert Source.parse("preds@v1") == Source("preds", "v1")
    assert Source.parse("preds") == Source("preds", None)
    for bad in ("@v1", "preds@"):
        with pytest.raises(ValueError):
            Source.parse(bad)


# ------------------------------------------------------------------------------ on the broker
@pytest.fixture(scope="module")
def two_replays(broker, trained_registry, tmp_path_factory):
    """One world; the session's model and a second, different one (logistic, other data);
    both replayed over the whole log into one topic."""
    from models.registry import ModelRegistry
    from models.train import TrainOptions
    from models.trainer import train_and_register
    from tests.kit.records import world_records

    d = tmp_path_factory.mktemp("diff")
    shutil.copytree(trained_registry, d / "registry")
    registry = ModelRegistry(d / "registry")
    v1 = registry.promoted_version()
    v2 = train_and_register(
        world_records(40, 8, seed=5, cities=2, categories=2),
        registry,
        options=TrainOptions(sample_rate=0.5, validation_days=2, objective="binary:logistic"),
    ).version
    s = uuid.uuid4().hex[:10]
    cfg = Config(
        bootstrap=broker.bootstrap,
        business_topic=f"business-{s}",
        activity_topic=f"activity-{s}",
        predictions_topic=f"predictions-{s}",
        dead_letter_topic=f"dead-letters-{s}",
        changelog_topic=f"changelog-{s}",
        partitions=2,
        registry_dir=str(d / "registry"),
        schema_registry=str(d / "schemas.json"),
    )
    create_topics(cfg)
    publish_records(cfg, generate_records(WORLD))
    topic = f"replays-{s}"
    n1 = replay(cfg, v1, topic, Position.earliest()).predictions
    n2 = replay(cfg, v2, topic, Position.earliest()).predictions
    assert n1 == n2 > 5_000
    return cfg, topic, v1, v2, n1


def _expected_auc(preds, horizon_ms):
    """AUC of one model by brute force from the generated events: distinct conversions of the
    business in (t, t + H]; the latest prediction per (group, day, business); complete labels only."""
    from sklearn.metrics import roc_auc_score

    conv: dict[str, set] = {}
    end = 0
    for e in generate(WORLD):
        if hasattr(e, "user_id"):
            end = max(end, e.event_time)
            if e.kind in KINDS:
                conv.setdefault(e.business_id, set()).add((e.event_id, e.event_time))
    latest: dict[tuple, dict] = {}
    for p in sorted(
        preds, key=lambda p: (p["event_time"], p["source_topic"], p["source_partition"], p["source_offset"])
    ):
        if p["event_time"] + horizon_ms <= end:
            latest[(p["group_key"], p["event_time"] // H, p["business_id"])] = p
    y = [
        sum(1 for _, t in conv.get(p["business_id"], ()) if p["event_time"] < t <= p["event_time"] + horizon_ms) > 0
        for p in latest.values()
    ]
    return roc_auc_score(y, [p["score"] for p in latest.values()]), len(latest)


def test_diff_of_two_models_reports_their_differences_and_metrics(two_replays, tmp_path, monkeypatch, capsys):
    cfg, topic, v1, v2, n = two_replays
    monkeypatch.setenv("STREAMRANK_ACTIVITY_TOPIC", cfg.activity_topic)
    monkeypatch.setenv("STREAMRANK_SCHEMA_REGISTRY", cfg.schema_registry)
    out = tmp_path / "report"
    assert main(["diff", f"{topic}@{v1}", f"{topic}@{v2}", "--out", str(out), "--bootstrap", cfg.bootstrap]) == 0
    printed = capsys.readouterr().out
    md = (out / "diff.md").read_text()
    assert md in printed
    assert (out / "diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((out / "diff.json").read_text())

    assert (rep["n_a"], rep["n_b"], rep["both"], rep["only_a"], rep["only_b"]) == (n, n, n, 0, 0)
    assert rep["same_features_share"] == 1.0  # same inputs, same features: only the model differs
    assert rep["identical_share"] < 0.05 and rep["abs_delta"]["mean"] > 0
    gs = rep["group_summary"]
    assert gs["groups"] >= 8 and gs["overlap_mean"] < 1.0 and gs["spearman_mean"] < 0.999
    ma, mb = rep["metrics"]
    assert (ma["versions"], mb["versions"]) == ([v1], [v2])
    from tests.kit.topics import read_predictions

    preds = read_predictions(cfg.with_overrides(predictions_topic=topic))
    for m, v in ((ma, v1), (mb, v2)):
        auc, examples = _expected_auc([p for p in preds if p["model_version"] == v], H)
        assert m["auc"] == pytest.approx(auc, abs=1e-12) and rep["n_examples"] == examples
    assert ma["auc"] != mb["auc"]
    for text in (v1, v2, "AUC", "top-3 capture", "Spearman", "diff.png"):
        assert text in md


def test_a_model_against_itself_is_identical_and_ambiguous_topics_are_refused(two_replays, monkeypatch, capsys):
    cfg, topic, v1, _, n = two_replays
    rep = run_diff(cfg, Source(topic, v1), Source(topic, v1), kinds=KINDS, horizon_ms=H)
    assert rep.identical_share == 1.0 and rep.both == n
    assert all(g.overlap == 1.0 for g in rep.groups)
    assert all(g.spearman == pytest.approx(1.0) for g in rep.groups if np.isfinite(g.spearman))
    ma, mb = rep.metrics
    assert (ma.auc, ma.capture) == (mb.auc, mb.capture)

    monkeypatch.setenv("STREAMRANK_ACTIVITY_TOPIC", cfg.activity_topic)
    assert main(["diff", topic, f"{topic}@{v1}", "--bootstrap", cfg.bootstrap, "--out", "unused"]) == 1
    assert "several models" in capsys.readouterr().err
