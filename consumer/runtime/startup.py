"""What a worker does once, before its loop: check and create its topics, pick its first model (the
promoted one, else the popularity baseline, else wait), tune the collector.

``prepare_topics`` refuses inputs that are not co-partitioned (partition *p* of both input topics
must land on the same worker, with its state) and a changelog with another partition count, and
says which outputs can take the source record's partition number. ``tune_gc`` is public for tools
that want a process set up like a worker's (``consumer.tools.bench`` times a restore with it).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import NamedTuple

from consumer.config import Config
from consumer.errors import ConfigError, TopicLayoutError
from consumer.io.clients import check_compacted, check_copartitioned, check_reachable, create_topics, partition_counts
from consumer.pipeline.arms import ArmModels
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.pipeline.decode import Decoded, Decoder
from consumer.pipeline.order import RecordOrder
from consumer.pipeline.predictions import encoded
from consumer.pipeline.process import Scorer, process
from consumer.runtime.metrics import WorkerMetrics
from consumer.runtime.modelwatch import ModelHolder
from features.events import MIN_EVENT_TIME_MS, ActivityEvent, BusinessEvent
from features.order import BUSINESS_RANK, HeadMerger
from features.spec import FeatureSpec

log = logging.getLogger("streamrank.worker")

# Young-generation collections every this many container allocations (Python's default: 700).
GC_GEN0_THRESHOLD = 20_000


def prepare_topics(cfg: Config, arms: ArmModels | None) -> set[str]:
    """Create the missing output topics; return those with the inputs' partition count."""
    check_reachable(cfg.bootstrap)
    n = check_copartitioned(cfg)
    cfg = cfg.with_overrides(partitions=n)
    outputs = [
        (cfg.predictions_topic, n, {}),
        (cfg.dead_letter_topic, n, {}),
        (cfg.changelog_topic, n, {"cleanup.policy": "compact"}),
    ]
    if arms is not None:
        if arms.config.holdout > 0:
            outputs.append((cfg.holdout_topic, n, {}))
        if arms.config.shadow:
            outputs.append((cfg.shadow_topic, n, {}))
    create_topics(cfg, outputs)
    counts = partition_counts(cfg, [t for t, _, _ in outputs])
    if counts[cfg.changelog_topic] != n:
        raise TopicLayoutError(
            f"changelog {cfg.changelog_topic} has {counts[cfg.changelog_topic]} partitions, inputs have {n}: they must match"
        )
    if not check_compacted(cfg, cfg.changelog_topic, "changelog"):
        if cfg.guarantee == "exactly_once":
            # Refused rather than warned: the embedded Tansu (the broker that has no DescribeConfigs)
            # accepts transactions but shows aborted records to read_committed readers, so the
            # guarantee would be silently false.
            raise ConfigError(
                "STREAMRANK_GUARANTEE=exactly_once needs a broker that hides aborted transactions from "
                "read_committed readers (Apache Kafka); this one does not answer DescribeConfigs, as the "
                "embedded Tansu does not, and Tansu shows aborted records"
            )
        log.info(
            "changelog compaction not verified: the broker does not answer DescribeConfigs",
            extra={"topic": cfg.changelog_topic},
        )
    # An output with the inputs' partition count takes the source record's partition number:
    # the same partition the key's hash would pick (inputs are keyed by business_id), without
    # hashing every key again in the producer. Otherwise the producer's partitioner decides.
    return {t for t, c in counts.items() if c == n}


def warm_up(cfg: Config, spec: FeatureSpec, scorer: Scorer) -> tuple[float, int]:
    """Run the hot path once on a made-up business in a scratch store (bulk decode, merge, fold,
    features, model, prediction ids and encoding): the compiled kernels load (or compile, the
    first time after an install) before the worker takes partitions, not in its first batch,
    whose records would otherwise wait ~0.5 s (seconds when compiling). Returns the seconds spent
    and the predictions made (the made-up business is scored, so every kernel ran)."""
    t0 = time.perf_counter()
    registry = FileSchemaRegistry(cfg.schema_registry or None)
    decoder = Decoder(cfg, registry)
    t = MIN_EVENT_TIME_MS + 1
    created = BusinessEvent("warm-up-0", "warm-up", t, "CREATED", "n", "c", "s", ("x",), 0.0, 0.0, None, True)
    visits = [ActivityEvent(f"warm-up-{i}", "warm-up", "u", t + i, "PAGE_VIEW", None, None) for i in (1, 2)]
    codec = AvroCodec(registry, "ActivityEvent")
    records = [_Record(b"warm-up", codec.encode(ev.to_record()), i, 0) for i, ev in enumerate(visits)]
    merger: HeadMerger = HeadMerger()
    merger.push(BUSINESS_RANK, t, 0, Decoded(cfg.business_topic, BUSINESS_RANK, 0, 0, created))
    RecordOrder(decoder, cfg.input_topics, spec).push(cfg.activity_topic, 0, records, merger.push, merger.push_run)
    out = process(list(merger.pop_ready(True, True)), {}, scorer, spec=spec)
    encoded(out.predictions, AvroCodec(registry, "Prediction"))
    return time.perf_counter() - t0, len(out.predictions)


class _Record(NamedTuple):
    key: bytes
    value: bytes
    offset: int
    timestamp: int


def tune_gc() -> None:
    """Everything alive once the worker is set up (libraries, the model) is moved out of the
    collector's view, and young collections run less often. Full collections walking those
    objects were most of the p99 latency at half load in ``make bench``."""
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


def wait_for_model(
    models: ModelHolder,
    metrics: WorkerMetrics,
    stop: threading.Event,
    *,
    registry_dir: str,
    poll_s: float,
    give_up_after_s: float | None,
) -> Scorer | None:
    """The first model to serve: the promoted one if the worker accepts it; else, with a fallback
    (``STREAMRANK_BASELINE=popularity``, ``models.baseline``), the fallback at once, until the
    watcher swaps in a promoted model; else (``STREAMRANK_BASELINE=none``) block until the registry
    has a promoted model the worker accepts. None if stopped first, or after ``give_up_after_s``
    (the worker's ``exit_when_idle_s``)."""
    metrics.set_phase("waiting_for_model")
    t0 = time.monotonic()
    announced = False
    while not stop.is_set():
        models.check_now()
        model = models.take_swap()
        if model is not None:
            return model
        fallback = models.serve_fallback()
        if fallback is not None:
            log.warning(
                "no promoted model yet; serving the popularity baseline until one is promoted",
                extra={"registry": registry_dir, "model_version": fallback.version},
            )
            return fallback
        if not announced:
            log.warning("no promoted model yet; waiting", extra={"registry": registry_dir})
            announced = True
        if give_up_after_s is not None and time.monotonic() - t0 > give_up_after_s:
            return None
        stop.wait(min(poll_s, 1.0))
    return None
