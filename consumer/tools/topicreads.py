"""Reading streamrank's topics for analysis: predictions (``diff``, ``report``) and conversions.

``Source`` names a predictions topic or one model's predictions in it (``topic@version``);
``scan_topic`` reads a topic from its start to its high-water mark, decoded, a missing topic
raising ``TopicNotFound``; ``read_predictions`` and ``read_conversions`` build on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumer.config import Config
from consumer.errors import DecodeError, DiffError, TopicNotFound


@dataclass(frozen=True)
class Source:
    topic: str
    model_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        topic, sep, version = text.partition("@")
        if not topic or (sep and not version):
            raise ValueError(f"{text!r} is not TOPIC or TOPIC@MODEL_VERSION")
        return cls(topic, version or None)

    def label(self) -> str:
        return self.topic if self.model_version is None else f"{self.topic}@{self.model_version}"


def scan_topic(cfg: Config, topic: str, idle_timeout_s: float = 30.0) -> Iterator[Any]:
    """Every record of ``topic`` up to the high-water marks of the first fetch; no consumer group.
    ``TopicNotFound`` if there is no such topic, ``DiffError`` if reading it stalls."""
    from kafka import KafkaConsumer, TopicPartition

    from consumer.io.clients import check_reachable, consumer_kwargs, iter_to_highwater

    check_reachable(cfg.bootstrap)
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None, max_poll_records=10_000))
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise TopicNotFound(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        try:
            yield from iter_to_highwater(consumer, tps, idle_timeout_s=idle_timeout_s)
        except TimeoutError as exc:
            raise DiffError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def read_predictions(
    cfg: Config, source: Source, start_ms: int | None = None, end_ms: int | None = None
) -> list[dict[str, Any]]:
    """The predictions of ``source`` with ``start_ms <= event_time < end_ms``, one per prediction id."""
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry

    codec = AvroCodec(FileSchemaRegistry(cfg.schema_registry or None), "Prediction")
    by_id: dict[str, dict[str, Any]] = {}
    versions: Counter = Counter()
    undecodable = 0
    for rec in scan_topic(cfg, source.topic):
        try:
            pred = codec.decode(rec.value, rec.topic, rec.partition, rec.offset)
        except DecodeError:
            undecodable += 1
            continue
        if source.model_version is not None and pred["model_version"] != source.model_version:
            continue
        t = pred["event_time"]
        if (start_ms is not None and t < start_ms) or (end_ms is not None and t >= end_ms):
            continue
        versions[pred["model_version"]] += 1
        by_id[pred["prediction_id"]] = pred
    if source.model_version is None and len(versions) > 1:
        listed = ", ".join(f"{v} ({n})" for v, n in versions.most_common())
        raise DiffError(
            f"{source.topic} holds predictions of several models ({listed}): name one as {source.topic}@VERSION"
        )
    if not by_id:
        raise DiffError(
            f"no predictions in {source.label()}" + (f" ({undecodable} undecodable records)" if undecodable else "")
        )
    return list(by_id.values())


@dataclass
class Conversions:
    """Distinct conversion times per business from the activity log, and where the log ends."""

    times: dict[str, np.ndarray]
    log_end_ms: int
    events: int


def read_conversions(cfg: Config, kinds: tuple[str, ...]) -> Conversions:
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from features.errors import InvalidEvent
    from features.events import ActivityEvent

    codec = AvroCodec(FileSchemaRegistry(cfg.schema_registry or None), "ActivityEvent")
    wanted = frozenset(kinds)
    seen: set[str] = set()
    per_biz: dict[str, list[int]] = {}
    end = -1
    events = 0
    for rec in scan_topic(cfg, cfg.activity_topic):
        try:
            ev = ActivityEvent.from_record(codec.decode(rec.value, rec.topic, rec.partition, rec.offset))
        except (DecodeError, InvalidEvent):
            continue  # the worker dead-letters these: they are no one's outcome
        events += 1
        end = max(end, ev.event_time)
        if ev.kind in wanted and ev.event_id not in seen:
            seen.add(ev.event_id)
            per_biz.setdefault(ev.business_id, []).append(ev.event_time)
    return Conversions({b: np.sort(np.asarray(t, dtype=np.int64)) for b, t in per_biz.items()}, end, events)
