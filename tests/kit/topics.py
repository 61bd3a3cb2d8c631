"""The session broker's topics: a unique topic set per test, a world published onto the input
topics, and every output topic read back (predictions and changelog states decoded)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from consumer.config import Config
from consumer.io.clients import consumer_kwargs, create_topics, iter_to_highwater
from consumer.io.publish import publish_records
from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
from consumer.pipeline.store import decode_entry, is_deletion
from sim.world import WorldConfig, generate_records


def unique_config(bootstrap: str, tmp_path, partitions: int = 2) -> Config:
    """A Config on ``bootstrap`` with topic names and a group unique to one test, a registry and a
    schema registry under ``tmp_path``; the topics are created (the ``kafka_config`` fixture)."""
    suffix = uuid.uuid4().hex[:10]
    cfg = Config(
        bootstrap=bootstrap,
        business_topic=f"business-events-{suffix}",
        activity_topic=f"activity-events-{suffix}",
        predictions_topic=f"predictions-{suffix}",
        dead_letter_topic=f"dead-letters-{suffix}",
        changelog_topic=f"changelog-{suffix}",
        group_id=f"streamrank-{suffix}",
        partitions=partitions,
        registry_dir=str(tmp_path / "registry"),
        schema_registry=str(tmp_path / "schemas.json"),
    )
    create_topics(cfg)
    return cfg


def fresh_outputs(cfg: Config, partitions: int = 2, tag: str = "") -> Config:
    """The same inputs with a new group and new output topics: one published world serves many trials."""
    s = f"{tag}{uuid.uuid4().hex[:8]}"
    out = cfg.with_overrides(
        group_id=f"rel-{s}", predictions_topic=f"pred-{s}", changelog_topic=f"cl-{s}", dead_letter_topic=f"dlq-{s}"
    )
    create_topics(
        out,
        [
            (out.predictions_topic, partitions, {}),
            (out.dead_letter_topic, partitions, {}),
            (out.changelog_topic, partitions, {"cleanup.policy": "compact"}),
        ],
    )
    return out


def publish_world(cfg: Config, businesses=80, days=4, seed=5) -> int:
    """A small generated world (2 cities x 2 categories) onto ``cfg``'s input topics; the record count."""
    return publish_records(
        cfg, generate_records(WorldConfig(businesses=businesses, days=days, seed=seed, cities=2, categories=2))
    ).total


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
    return [
        codec.decode(r.value, cfg.predictions_topic, r.partition, r.offset)
        for r in read_topic(cfg, cfg.predictions_topic)
    ]


def read_changelog_states(cfg: Config) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for r in read_topic(cfg, cfg.changelog_topic):
        latest[r.key.decode()] = r.value
    return {k: decode_entry(v).state for k, v in latest.items() if not is_deletion(v)}


def input_offsets(cfg: Config) -> set[tuple[str, int, int]]:
    """The coordinates (topic, partition, offset) of every record on the input topics now."""
    return {(t, r.partition, r.offset) for t in cfg.input_topics for r in read_topic(cfg, t)}


def prediction_count(cfg: Config) -> int:
    """Records in the predictions topic now (sum of high-water marks after one fetch)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    try:
        tps = [
            TopicPartition(cfg.predictions_topic, p)
            for p in sorted(consumer.partitions_for_topic(cfg.predictions_topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 5
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=1)
        return sum(consumer.highwater(tp) or 0 for tp in tps)
    finally:
        consumer.close()
