"""Arms in the worker (routing to serving / hold-out / shadow) and the experiment report."""

from collections import Counter

import numpy as np
import pytest

from consumer.cli import main
from consumer.pipeline.arms import ArmConfig, Assigner
from consumer.runtime.worker import Worker
from consumer.tools.report import build_report, read_prediction_topics, to_markdown, welch, write_report
from tests.kit.events import DAY
from tests.kit.runs import expected_run
from tests.kit.topics import publish_world


def _pred(arm, bid, t, score, mv="m1", group="g"):
    return {
        "prediction_id": f"{arm}{bid}{t}",
        "arm": arm,
        "model_version": mv,
        "business_id": bid,
        "event_time": t,
        "score": score,
        "group_key": group,
        "source_offset": t,
    }


def test_report_on_synthetic_outcomes(tmp_path):
    rng = np.random.default_rng(0)
    preds, conv = [], {}
    for i in range(400):
        arm = "holdout" if i % 4 == 0 else ("a" if i % 4 in (1, 2) else "b")
        bid = f"b{i}"
        q = rng.normal()
        lift = 2.0 if arm == "a" else 0.0  # arm a converts 2 more per day
        preds += [_pred(arm, bid, d * DAY + 1000, q, group=f"g{i % 5}") for d in range(5)]
        n = rng.poisson((np.exp(q) + lift) * 5)
        conv[bid] = np.sort(rng.integers(1001, 5 * DAY, n))
    rep = build_report(preds, conv, 5 * DAY, horizon_ms=DAY, k=3)
    a, b = rep.cell("a"), rep.cell("b")
    assert a.uplift_vs_holdout.lo > 0 and a.uplift_vs_holdout.lo < 2.0 < a.uplift_vs_holdout.hi
    assert b.uplift_vs_holdout.lo <= 0 <= b.uplift_vs_holdout.hi
    assert b.uplift_vs_first.hi < 0  # b vs a
    assert rep.cell("holdout").n_businesses == 100 and a.n_predictions == 1000
    assert a.auc > 0.6 and a.calibration[-1]["mean_conversions"] > a.calibration[0]["mean_conversions"]
    md_path, png, md = write_report(rep, tmp_path / "r")
    assert png.stat().st_size > 1000 and "| a | m1 | 1000 | 200 |" in md and md_path.read_text() == md
    assert to_markdown(rep, None).count("\n| ") >= 6


def test_welch_matches_a_hand_computation():
    a, b = np.array([1.0, 2, 3, 4]), np.array([0.0, 0, 1, 1])
    d, lo, hi = welch(a, b)
    se = np.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 4)
    assert d == 2.0 and np.isclose(hi - d, 1.959964 * se)


@pytest.mark.broker
def test_worker_routes_arms_holdout_and_shadow_and_report_runs(
    kafka_config, registry_copy, monkeypatch, tmp_path, capsys
):
    t = kafka_config.predictions_topic
    cfg = kafka_config.with_overrides(
        registry_dir=str(registry_copy),
        batch_size=200,
        arms="a:promoted:1,r:random:1",
        holdout=0.25,
        shadow_model="promoted",
        holdout_topic=t + "-holdout",
        shadow_topic=t + "-shadow",
    )
    publish_world(cfg, businesses=60, days=2, seed=71)
    expected, _, _ = expected_run(cfg, cfg.registry_dir)  # the classic single-arm worker's output
    stats = Worker(cfg, exit_when_idle_s=2).run()
    by_topic = {}
    for p in read_prediction_topics(cfg, [cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic]):
        by_topic.setdefault(p["_topic"], []).append(p)
    serving, hold, shadow = by_topic[cfg.predictions_topic], by_topic[cfg.holdout_topic], by_topic[cfg.shadow_topic]
    assign = Assigner(ArmConfig.from_config(cfg))
    assert all(p["arm"] == assign(p["business_id"]) != "holdout" for p in serving)
    assert all(p["arm"] == "holdout" == assign(p["business_id"]) for p in hold)
    assert Counter(p["arm"] for p in serving).keys() == {"a", "r"} and stats.predictions == len(serving)
    # Every scoring moment is scored once by its arm (or the hold-out) and once by the shadow.
    coord = lambda p: (p["source_topic"], p["source_partition"], p["source_offset"])  # noqa: E731
    want = {coord(p): p for p in expected.values()}
    assert sorted(map(coord, serving + hold)) == sorted(want) == sorted(map(coord, shadow))
    for p in serving + hold + shadow:
        e = want[coord(p)]
        assert p["feature_hash"] == e["feature_hash"]
        if p["model_version"] != "random":
            assert p["score"] == e["score"]
    assert all(p["model_version"] == "random" for p in serving if p["arm"] == "r")
    ids = [p["prediction_id"] for p in serving + hold + shadow]
    assert len(ids) == len(set(ids))

    for var, value in [
        ("KAFKA_BOOTSTRAP_SERVERS", cfg.bootstrap),
        ("STREAMRANK_ACTIVITY_TOPIC", cfg.activity_topic),
        ("STREAMRANK_PREDICTIONS_TOPIC", cfg.predictions_topic),
        ("STREAMRANK_HOLDOUT_TOPIC", cfg.holdout_topic),
        ("STREAMRANK_SHADOW_TOPIC", cfg.shadow_topic),
        ("STREAMRANK_REGISTRY", cfg.registry_dir),
    ]:
        monkeypatch.setenv(var, value)
    assert main(["report", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| shadow |" in out and "| holdout |" in out and "| r | random |" in out
    assert (tmp_path / "rep" / "report.png").exists() and (tmp_path / "rep" / "report.md").exists()


def test_online_labels_start_at_the_business_clock_the_features_had():
    """A prediction's features know every event up to ``as_of`` (the business's clock), which is
    later than the triggering event when that event arrived late. A conversion in between is
    already in the features: it is not an outcome of the prediction (the trainer labels from
    as_of too)."""
    HOUR = 3_600_000
    hi = {**_pred("a", "hi", 1000, 1.0), "as_of": 1000 + HOUR}  # scored after a late event
    lo = {**_pred("a", "lo", 1000, 0.0), "as_of": 1000}
    none = {**_pred("a", "none", 1000, 0.5), "as_of": None}  # written before as_of existed: event_time
    conv = {"hi": np.array([1000 + HOUR // 2]), "lo": np.array([1000 + 2 * HOUR])}
    rep = build_report([hi, lo, none], conv, 5 * DAY, horizon_ms=DAY, k=1)
    assert (
        rep.cell("a").auc == 0.0
    )  # only lo converted after its clock; labelled from event_time, hi would count too (0.5)


def test_a_missing_prediction_topic_is_skipped_by_its_type_not_its_message(monkeypatch):
    """The report reads whichever arms' topics exist: ``TopicNotFound`` skips a topic; any other
    failure to read one is an error, whatever its message says."""
    import consumer.tools.topicreads as topicreads
    from consumer.config import Config
    from consumer.errors import DiffError, ReportError, TopicNotFound

    def scan_topic(cfg, topic, idle_timeout_s=30.0):
        if topic == "missing":
            raise TopicNotFound(topic)
        raise DiffError(f"reading {topic}: partition 1 does not exist on the broker that led it")
        yield

    monkeypatch.setattr(topicreads, "scan_topic", scan_topic)
    cfg = Config()
    assert read_prediction_topics(cfg, ["missing"]) == []
    with pytest.raises(ReportError, match="partition 1 does not exist") as info:
        read_prediction_topics(cfg, ["missing", "flaky"])
    assert isinstance(info.value.__cause__, DiffError)


@pytest.mark.broker
def test_report_on_a_missing_activity_topic_raises_topic_not_found(kafka_config):
    from consumer.errors import TopicNotFound
    from consumer.tools.report import run_report

    cfg = kafka_config.with_overrides(activity_topic=kafka_config.activity_topic + "-missing")
    with pytest.raises(TopicNotFound, match=rf"^topic {cfg.activity_topic} does not exist") as info:
        run_report(cfg, kinds=("REVIEW",), horizon_ms=DAY)
    assert info.value.topic == cfg.activity_topic
