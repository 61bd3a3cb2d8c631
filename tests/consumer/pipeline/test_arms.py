"""Arm assignment (pure): deterministic, stable, weight changes move only the buckets they must."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import Config
from consumer.errors import ConfigError
from consumer.pipeline.arms import HOLDOUT, N_BUCKETS, ArmConfig, ArmSpec, Assigner, RandomScorer, arm_table, bucket

NAMES = ["a", "b", "c", "d"]


def test_parse_and_default():
    cfg = ArmConfig.parse("control:promoted:50, challenger:v20260101000000-abcdef01:50", holdout=0.05, shadow="none")
    assert [a.name for a in cfg.arms] == ["control", "challenger"] and cfg.holdout == 0.05 and cfg.shadow is None
    assert ArmConfig.parse("").is_default and not cfg.is_default
    assert ArmConfig.from_config(Config()).is_default
    for bad in ("x:promoted", "x:promoted:0", "x:promoted:1,x:random:1", "holdout:promoted:1"):
        with pytest.raises(ConfigError):
            ArmConfig.parse(bad)
    with pytest.raises(ConfigError, match="HOLDOUT"):
        ArmConfig.parse("", holdout=1.0)
    with pytest.raises(ConfigError, match="weight"):
        Config.from_env({"STREAMRANK_ARMS": "a:promoted:x"})


def test_assignment_is_a_pure_function_of_salt_and_business():
    cfg = ArmConfig.parse("a:promoted:1,b:random:1", holdout=0.1, salt="exp1")
    one, two = Assigner(cfg), Assigner(ArmConfig.parse("a:promoted:1,b:random:1", holdout=0.1, salt="exp1"))
    ids = [f"b{i:06d}" for i in range(3000)]
    assert [one(b) for b in ids] == [two(b) for b in ids]  # a second worker / a restart
    assert 0 <= bucket("exp1", "b000001") == bucket("exp1", "b000001") < N_BUCKETS
    shares = {k: sum(one(b) == k for b in ids) / len(ids) for k in ("a", "b", HOLDOUT)}
    assert abs(shares[HOLDOUT] - 0.1) < 0.02 and abs(shares["a"] - 0.45) < 0.03, shares
    other = Assigner(ArmConfig.parse("a:promoted:1,b:random:1", holdout=0.1, salt="exp2"))
    assert sum(one(b) != other(b) for b in ids) > 1000  # a new salt is a fresh assignment


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.integers(1, 100), min_size=2, max_size=4),
    i=st.integers(0, 3),
    new_w=st.integers(1, 100),
)
def test_changing_one_weight_moves_buckets_only_into_or_out_of_that_arm(weights, i, new_w):
    i %= len(weights)
    before = [ArmSpec(NAMES[j], "promoted", w) for j, w in enumerate(weights)]
    after = list(before)
    after[i] = ArmSpec(NAMES[i], "promoted", new_w)
    t0, t1 = arm_table("s", before), arm_table("s", after)
    moved = t0 != t1
    assert np.all((t0[moved] == i) | (t1[moved] == i))
    # Direction: raising the weight only brings buckets in, lowering only takes them out.
    if new_w > weights[i]:
        assert np.all(t1[moved] == i)
    elif new_w < weights[i]:
        assert np.all(t0[moved] == i)
    else:
        assert not moved.any()
    share = np.bincount(t1, minlength=len(after)) / N_BUCKETS
    expected = np.array([a.weight for a in after]) / sum(a.weight for a in after)
    assert np.abs(share - expected).max() < 0.025


@settings(max_examples=10, deadline=None)
@given(h0=st.integers(0, 50), h1=st.integers(0, 50))
def test_changing_the_holdout_moves_only_businesses_between_holdout_and_their_arm(h0, h1):
    a = Assigner(ArmConfig.parse("x:promoted:1,y:promoted:3", holdout=h0 / 100, salt="h"))
    b = Assigner(ArmConfig.parse("x:promoted:1,y:promoted:3", holdout=h1 / 100, salt="h"))
    ids = [f"b{k:05d}" for k in range(2000)]
    for bid in ids:
        if a(bid) != b(bid):
            assert HOLDOUT in (a(bid), b(bid))
            k = a.bucket(bid)
            assert min(h0, h1) * 100 <= k < max(h0, h1) * 100


def test_random_scorer_depends_on_the_business_only():
    r = RandomScorer("fs1")
    X = np.zeros((3, 5), np.float32)
    s = r.score_ids(X, ["b1", "b2", "b1"])
    assert s[0] == s[2] != s[1] and np.all((s > 0) & (s < 1))


def test_process_routes_rows_with_one_call_per_distinct_model():
    from consumer.pipeline.arms import Routing
    from consumer.pipeline.decode import Decoded
    from consumer.pipeline.process import process
    from features.order import ACTIVITY_RANK, BUSINESS_RANK
    from sim.world import WorldConfig, generate

    class Counting:
        feature_set_version = "fs"

        def __init__(self, version):
            self.version, self.calls = version, []

        def score(self, X):
            self.calls.append(len(X))
            return np.nansum(X, axis=1)

    items = []
    for n, e in enumerate(generate(WorldConfig(businesses=30, days=1, seed=2, cities=1, categories=1))):
        rank = ACTIVITY_RANK if hasattr(e, "user_id") else BUSINESS_RANK
        items.append(Decoded("t", rank, 0, n, e))
    cfg = ArmConfig.parse("a1:promoted:1,a2:promoted:1,r:random:1", holdout=0.2, salt="p")
    assign = Assigner(cfg)
    promoted, shadow = Counting("v1"), Counting("v2")
    routing = Routing(assign, {"a1": promoted, "a2": promoted, "r": RandomScorer("fs"), HOLDOUT: promoted}, shadow)
    out = process(items, {}, routing)
    assert promoted.calls == [len(out.predictions) + len(out.holdout) - sum(p["arm"] == "r" for p in out.predictions)]
    assert shadow.calls == [len(out.shadow)] and len(out.shadow) == len(out.predictions) + len(out.holdout)
    assert {p["arm"] for p in out.predictions} == {"a1", "a2", "r"} and all(p["arm"] == HOLDOUT for p in out.holdout)
    assert all(assign(p["business_id"]) == p["arm"] for p in out.predictions + out.holdout)
    # Same record, same model, another arm: another id (A/A arms and a shadow of the promoted model).
    classic = process(items, {}, promoted)
    by_coord = {p["source_offset"]: p for p in classic.predictions}
    for p in out.predictions + out.holdout:
        c = by_coord[p["source_offset"]]
        assert p["feature_hash"] == c["feature_hash"] and p["prediction_id"] != c["prediction_id"]
        if p["arm"] != "r":
            assert p["score"] == c["score"]


def test_a_worker_with_an_arm_on_a_missing_version_refuses_to_start(registry_copy):
    """A fixed arm version that cannot be served stops the worker at start with one clear line,
    before it joins the group or reads anything (not mid-run at its first batch). No broker is
    needed to find that out: the bootstrap here points nowhere."""
    from consumer.errors import ConfigError
    from consumer.runtime.worker import Worker

    cfg = Config(
        bootstrap="127.0.0.1:1", registry_dir=str(registry_copy), arms="a:promoted:1,b:v20990101000000-deadbeef:1"
    )
    with pytest.raises(ConfigError, match=r"arm model 'v20990101000000-deadbeef' cannot be served"):
        Worker(cfg, exit_when_idle_s=1).run()
