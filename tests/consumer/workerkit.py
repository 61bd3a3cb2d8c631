"""Helpers for worker integration tests: publish a world, compute the expected outcome with the
broker-free core, run workers as real processes, read output topics back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.config import Config
from consumer.io.clients import consumer_kwargs, iter_to_highwater
from consumer.io.inputlog import LogRange, read_input_log
from consumer.pipeline.process import process
from consumer.io.publish import publish_records
from consumer.pipeline.store import decode_entry, is_deletion
from features.order import merge_finished
from models.registry import ModelRegistry
from sim.world import WorldConfig, generate_records


def publish_world(cfg: Config, businesses=80, days=4, seed=5) -> int:
    return publish_records(cfg, generate_records(WorldConfig(businesses=businesses, days=days, seed=seed, cities=2, categories=2))).total


def expected_run(cfg: Config, registry_dir) -> tuple[dict[str, dict], dict[int, Any], Any]:
    """What a fault-free worker must produce: (predictions by id, store, outcomes), from the log."""
    model = ModelRegistry(registry_dir).load()
    by_part: dict[int, list] = defaultdict(list)
    for rec in read_input_log(cfg, LogRange()):  # through the worker's order step (consumer.pipeline.order)
        by_part[rec.partition].append(rec.merge_entry(cfg.input_topics))
    store: dict[int, Any] = {}
    preds: dict[str, dict] = {}
    outcomes: dict[str, int] = defaultdict(int)
    for p in sorted(by_part):
        out = process(list(merge_finished(by_part[p])), store, model)
        for pred in out.predictions:
            preds[pred["prediction_id"]] = pred
        for k, v in out.outcomes.items():
            outcomes[k] += v
    return preds, store, dict(outcomes)


def read_topic(cfg: Config, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every record of ``topic`` up to its high-water marks."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return list(iter_to_highwater(consumer, tps, max_records=100_000, idle_timeout_s=timeout_s))
    finally:
        consumer.close()


def read_predictions(cfg: Config) -> list[dict]:
    codec = AvroCodec(FileSchemaRegistry(), "Prediction")
    return [codec.decode(r.value, cfg.predictions_topic, r.partition, r.offset) for r in read_topic(cfg, cfg.predictions_topic)]


def read_changelog_states(cfg: Config) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for r in read_topic(cfg, cfg.changelog_topic):
        latest[r.key.decode()] = r.value
    return {k: decode_entry(v).state for k, v in latest.items() if not is_deletion(v)}


def worker_env(cfg: Config) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=cfg.bootstrap,
        STREAMRANK_BUSINESS_TOPIC=cfg.business_topic,
        STREAMRANK_ACTIVITY_TOPIC=cfg.activity_topic,
        STREAMRANK_PREDICTIONS_TOPIC=cfg.predictions_topic,
        STREAMRANK_DEAD_LETTER_TOPIC=cfg.dead_letter_topic,
        STREAMRANK_CHANGELOG_TOPIC=cfg.changelog_topic,
        STREAMRANK_GROUP=cfg.group_id,
        STREAMRANK_REGISTRY=cfg.registry_dir,
        STREAMRANK_BATCH_SIZE=str(cfg.batch_size),
        STREAMRANK_MODEL_POLL_S="0.5",
        STREAMRANK_TRANSPORT=cfg.transport,
        STREAMRANK_CHECKPOINT_INTERVAL_MS=str(cfg.checkpoint_interval_ms),
    )
    return env


def start_worker(cfg: Config, idle_s: float = 3.0, log_path=None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run", "--exit-when-idle", str(idle_s), "--log-level", os.environ.get("STREAMRANK_TEST_WORKER_LOG_LEVEL", "INFO")],
        env=worker_env(cfg), stdout=out, stderr=out,
    )


def prediction_count(cfg: Config) -> int:
    """Records in the predictions topic now (sum of high-water marks after one fetch)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    try:
        tps = [TopicPartition(cfg.predictions_topic, p) for p in sorted(consumer.partitions_for_topic(cfg.predictions_topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 5
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=1)
        return sum(consumer.highwater(tp) or 0 for tp in tps)
    finally:
        consumer.close()
