"""The served model without a broker: the popularity baseline while nothing is promoted, the hot
swap to the first promoted model, back to the baseline when the pointer goes (consumer.runtime.modelwatch)."""

import threading
from types import SimpleNamespace

from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.modelwatch import ModelHolder
from consumer.runtime.startup import wait_for_model
from features.spec import DEFAULT_SPEC
from models.baseline import PopularityScorer


class FakeRegistry:
    """A promotion pointer and models that load; ``load`` counts its calls."""

    def __init__(self):
        self.pointer = None
        self.loads = 0

    def promoted_version(self):
        return self.pointer

    def load(self, version):
        self.loads += 1
        return SimpleNamespace(version=version, feature_set_version=DEFAULT_SPEC.version, validate=lambda: None)


def _first(holder, **kw):
    return wait_for_model(
        holder, WorkerMetrics("w"), threading.Event(), registry_dir="r", poll_s=0.01, give_up_after_s=0.2, **kw
    )


def test_without_a_promoted_model_the_baseline_serves_at_once():
    baseline = PopularityScorer(DEFAULT_SPEC)
    holder = ModelHolder(FakeRegistry(), 1.0, fallback=baseline)
    assert _first(holder) is baseline
    assert holder.current is baseline and holder.serving_fallback


def test_with_baseline_none_the_worker_waits_as_before():
    holder = ModelHolder(FakeRegistry(), 1.0)  # STREAMRANK_BASELINE=none: no fallback
    assert _first(holder) is None  # gave up after give_up_after_s, nothing served
    assert holder.current is None


def test_a_promoted_model_is_served_first_when_there_is_one():
    reg = FakeRegistry()
    reg.pointer = "v20260101000000-aaaaaaaa"
    holder = ModelHolder(reg, 1.0, fallback=PopularityScorer(DEFAULT_SPEC))
    assert _first(holder).version == reg.pointer
    assert not holder.serving_fallback


def test_first_promoted_model_replaces_the_baseline_and_a_removed_pointer_brings_it_back():
    reg = FakeRegistry()
    baseline = PopularityScorer(DEFAULT_SPEC)
    holder = ModelHolder(reg, 1.0, fallback=baseline)
    _first(holder)
    holder.check_now()
    assert holder.take_swap() is None  # still nothing promoted: the baseline keeps serving, no swap

    reg.pointer = "v20260101000000-aaaaaaaa"
    holder.check_now()
    model = holder.take_swap()
    assert model.version == reg.pointer and holder.current is model and not holder.serving_fallback

    reg.pointer = None  # demoted: nothing promoted any more
    holder.check_now()
    holder.check_now()
    assert holder.take_swap() is baseline and holder.serving_fallback
    assert holder.take_swap() is None

    # Promoted again before the staged baseline swapped in: the model keeps serving, no reload.
    reg.pointer = "v20260101000000-aaaaaaaa"
    holder.check_now()
    holder.take_swap()
    loads = reg.loads
    reg.pointer = None
    holder.check_now()  # baseline staged
    reg.pointer = "v20260101000000-aaaaaaaa"
    holder.check_now()  # the same model again: unstaged
    assert holder.take_swap() is None and holder.current.version == reg.pointer and reg.loads == loads


def test_an_unreadable_pointer_does_not_bring_the_baseline_back():
    reg = FakeRegistry()
    holder = ModelHolder(reg, 1.0, fallback=PopularityScorer(DEFAULT_SPEC))
    reg.pointer = "v20260101000000-aaaaaaaa"
    _first(holder)

    def broken():
        raise OSError("volume gone")

    reg.promoted_version = broken
    holder.check_now()
    assert holder.take_swap() is None and holder.current.version == "v20260101000000-aaaaaaaa"


def test_metrics_and_readiness_say_the_baseline_serves():
    m = WorkerMetrics("w")
    baseline = PopularityScorer(DEFAULT_SPEC)
    m.model_swapped(baseline)
    m.set_phase("running")
    m.heartbeat()
    m.set_ready(True)
    ok, info = m.readiness()
    assert ok and info["baseline"] == "popularity" and info["model_version"] == baseline.version
    reg = m.registry
    assert reg.get_sample_value("streamrank_serving_baseline") == 1.0
    assert reg.get_sample_value(
        "streamrank_model_info", {"model_version": baseline.version, "feature_set_version": DEFAULT_SPEC.version}
    )
    m.model_swapped(SimpleNamespace(version="v20260101000000-aaaaaaaa", feature_set_version="x", metadata={}))
    assert reg.get_sample_value("streamrank_serving_baseline") == 0.0
    assert m.readiness()[1]["baseline"] is None
