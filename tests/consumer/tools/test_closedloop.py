"""The closed-loop world on the real broker: A/A covers 0; a good model beats the hold-out."""

import pytest

from consumer.tools.closedloop import LoopConfig, rank_boosts, run_closed_loop
from consumer.tools.report import build_report, offline_metrics, read_prediction_topics, to_markdown
from consumer.tools.topicreads import read_conversions
from models.registry import ModelRegistry
from sim.world import WorldConfig

pytestmark = pytest.mark.broker

# Many businesses (the units of the uplift), few views each (fast: ~3k events per simulated day), high
# conversion rates (signal), a milder popularity tail than the default world (businesses' sizes are
# the main source of variance between arms).
WORLD = WorldConfig(
    businesses=600,
    days=9,
    seed=3,
    cities=2,
    categories=2,
    views_per_business_day=4.0,
    conversion_rates=(0.033, 0.018, 0.027),
    popularity_sigma=0.6,
)


def _experiment(kafka_config, registry_copy, arms, holdout):
    cfg = kafka_config.with_overrides(
        registry_dir=str(registry_copy),
        batch_size=500,
        arms=arms,
        holdout=holdout,
        holdout_topic=kafka_config.predictions_topic + "-holdout",
        shadow_topic=kafka_config.predictions_topic + "-shadow",
    )
    res = run_closed_loop(cfg, LoopConfig(WORLD, top_k=10, effect=3.0, warmup_days=3), progress=print)
    preds = read_prediction_topics(cfg, [cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic])
    conv = read_conversions(cfg, ("BIZSITE_VISIT", "CALL", "DIRECTIONS"))
    rep = build_report(
        preds,
        conv.times,
        conv.log_end_ms,
        horizon_ms=cfg.horizon_ms,
        k=3,
        offline=offline_metrics(ModelRegistry(cfg.registry_dir)),
        start_ms=res.experiment_start_ms,
    )
    print(to_markdown(rep, None))
    return res, rep


def test_rank_boosts_promote_top_k_per_group_and_arm():
    latest = {f"b{i}": {"group_key": "g1", "arm": "a" if i % 2 else "b", "score": float(i)} for i in range(10)}
    boosts = rank_boosts(latest, 2, 1.5)
    assert boosts == {"b9": 2.5, "b7": 2.5, "b8": 2.5, "b6": 2.5}


def test_aa_run_uplift_interval_covers_zero(kafka_config, registry_copy):
    res, rep = _experiment(kafka_config, registry_copy, "a1:promoted:50,a2:promoted:50", 0.3)
    assert res.days == WORLD.days and max(res.boosted_per_day) > 0
    u = rep.cell("a2").uplift_vs_first
    assert u is not None and u.lo <= 0 <= u.hi, u


def test_good_model_beats_holdout_and_random(kafka_config, registry_copy):
    res, rep = _experiment(kafka_config, registry_copy, "good:promoted:50,rand:random:50", 0.3)
    good, rand = rep.cell("good"), rep.cell("rand")
    assert good.uplift_vs_holdout.lo > 0, good.uplift_vs_holdout
    assert good.uplift_vs_holdout.diff > rand.uplift_vs_holdout.diff
