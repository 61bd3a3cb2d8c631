"""Replay: rebuild feature state from the input log and re-emit predictions for a range, with any model.

What a replay does, per partition of the input topics:

1. read both input topics as a finished log (``logreader``, up to the high-water marks seen at
   start; no consumer group, so nothing is committed and live offsets are untouched);
2. put the partition's records in the order the live worker applies them
   (``features.order.merge_finished``: the same head merge the worker's ``HeadMerger`` makes when
   the log is complete);
3. fold everything before the range into fresh state (no scoring), then run the range through the
   worker's own core, ``consumer.pipeline.process.process``, in chunks: the same scoring rule, the same
   features, one model call per chunk;
4. write the predictions to the output topic, keyed by business_id, Avro like the worker's.

State is rebuilt from the beginning of the log; the live changelog is never read nor written
(starting from a changelog snapshot would need every entry to reflect exactly the records before
the start, which changelog entries do not promise).

**Determinism.** A prediction's id is ``prediction_id(topic, partition, offset, model_version)``,
as live. With the model the live worker used, a replay reproduces the live predictions exactly
(ids, scores, features; ``scored_at`` aside), so replaying into the same topic twice, or into the
live predictions topic, only repeats ids that consumers deduplicate. Records the worker would
dead-letter (undecodable, invalid, key not the business_id) are skipped: they change no state live
either, and their place in the merge is order-neutral (a dead letter carries the time of the
record before it).

**The range** is per partition of the activity topic (business records are always folded: they
never produce predictions): predictions are emitted for activity records with
``start <= offset < end``.

* ``--from earliest``: start at the beginning of each partition.
* ``--from P:OFFSET,...`` (e.g. ``0:1200,1:900``): those partitions from those offsets; partitions
  not listed are not replayed at all.
* ``--from TIME`` (ISO-8601 or epoch ms): per partition, the first record whose record timestamp is
  ``>= TIME`` (``consumer.io.timeindex``; the publisher stamps records with their event time).
* ``--until`` (exclusive) takes a TIME or offsets the same way; partitions it does not list run to
  the high-water mark at the start of the read. Without it: to the high-water mark.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from consumer.config import Config
from consumer.errors import ReplayError
from consumer.io.inputlog import LogRange, LogRecord, read_input_log
from consumer.io.timeindex import DEFAULT_MAX_LATENESS_MS, TimeLookup
from consumer.pipeline.decode import Decoded
from consumer.pipeline.predictions import encoded
from consumer.pipeline.process import (
    RowBuffer,
    Scorer,
    fold_items,
    process,
)
from consumer.pipeline.store import PartitionState
from features.order import ACTIVITY_RANK, merge_finished
from features.spec import DEFAULT_SPEC, FeatureSpec

DEFAULT_CHUNK = 5_000
KEY_MISMATCH = "key_mismatch"
_OFFSETS_RE = re.compile(r"^\s*\d+\s*:\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*)*$")


# ------------------------------------------------------------------------------------- range
@dataclass(frozen=True)
class Position:
    """A range bound as given: ``earliest``, a time (epoch ms), or offsets per partition."""

    kind: str  # "earliest" | "time" | "offsets"
    time_ms: int | None = None
    offsets: tuple[tuple[int, int], ...] = ()

    @classmethod
    def earliest(cls) -> Position:
        return cls("earliest")

    @classmethod
    def at_time(cls, ms: int) -> Position:
        return cls("time", time_ms=int(ms))

    @classmethod
    def at_offsets(cls, offsets: dict[int, int]) -> Position:
        return cls("offsets", offsets=tuple(sorted(offsets.items())))

    @property
    def at_ms(self) -> int:
        """The time of a ``time`` bound."""
        if self.time_ms is None:
            raise ValueError(f"{self.kind} bound has no time")
        return self.time_ms

    def describe(self) -> str:
        if self.kind == "time":
            return f"time {self.time_ms}"
        if self.kind == "offsets":
            return "offsets " + ",".join(f"{p}:{o}" for p, o in self.offsets)
        return self.kind


def looks_like_offsets(text: str) -> bool:
    return bool(_OFFSETS_RE.match(text))


def parse_offsets(text: str) -> dict[int, int]:
    """``"0:1200,1:900"`` → ``{0: 1200, 1: 900}``; a partition given twice is an error."""
    if not looks_like_offsets(text):
        raise ValueError(f"{text!r} is not PARTITION:OFFSET[,PARTITION:OFFSET...]")
    out: dict[int, int] = {}
    for part in text.split(","):
        p, o = (int(x) for x in part.split(":"))
        if p in out:
            raise ValueError(f"partition {p} given twice in {text!r}")
        out[p] = o
    return out


@dataclass
class PartitionRange:
    partition: int
    start: int  # first activity offset whose predictions are emitted
    end: int | None  # exclusive; None: the high-water mark when the log is read
    start_lookup: TimeLookup | None = None
    end_lookup: TimeLookup | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"partition": self.partition, "start": self.start, "end": self.end}
        for name, lk in (("start_lookup", self.start_lookup), ("end_lookup", self.end_lookup)):
            if lk is not None:
                d[name] = {
                    "method": lk.method,
                    "broker_offset": lk.broker_offset,
                    "probes": lk.probes,
                    "records_read": lk.records_read,
                }
        return d


def resolve_ranges(
    cfg: Config,
    partitions: int,
    start: Position,
    until: Position | None = None,
    *,
    max_lateness_ms: int = DEFAULT_MAX_LATENESS_MS,
) -> dict[int, PartitionRange]:
    """Turn the bounds into activity-offset ranges per partition (time bounds are looked up)."""
    from kafka import KafkaConsumer, TopicPartition

    from consumer.io.clients import consumer_kwargs
    from consumer.io.timeindex import offset_for_time

    if start.kind == "offsets":
        wanted = dict(start.offsets)
        bad = sorted(p for p in wanted if not 0 <= p < partitions)
        if bad:
            raise ReplayError(f"--from names partitions {bad}; {cfg.activity_topic} has partitions 0..{partitions - 1}")
        parts = sorted(wanted)
    else:
        wanted = {}
        parts = list(range(partitions))
    ends = dict(until.offsets) if until is not None and until.kind == "offsets" else {}
    bad = sorted(p for p in ends if not 0 <= p < partitions)
    if bad:
        raise ReplayError(f"--until names partitions {bad}; {cfg.activity_topic} has partitions 0..{partitions - 1}")
    if until is not None and until.kind == "earliest":
        raise ReplayError("--until earliest is an empty range")

    need_lookup = start.kind == "time" or (until is not None and until.kind == "time")
    consumer = None
    if need_lookup:
        # Smaller fetches: a lookup reads single records and short windows.
        consumer = KafkaConsumer(**consumer_kwargs(cfg, None, max_partition_fetch_bytes=256 * 1024))
    try:
        out: dict[int, PartitionRange] = {}
        for p in parts:
            tp = TopicPartition(cfg.activity_topic, p)
            r = PartitionRange(p, 0, None)
            if start.kind == "offsets":
                r.start = wanted[p]
            elif start.kind == "time":
                r.start_lookup = offset_for_time(consumer, tp, start.at_ms, max_lateness_ms=max_lateness_ms)
                r.start = r.start_lookup.offset
            if until is not None and until.kind == "time":
                r.end_lookup = offset_for_time(consumer, tp, until.at_ms, max_lateness_ms=max_lateness_ms)
                r.end = r.end_lookup.offset
            elif p in ends:
                r.end = ends[p]
            if r.end is not None and r.end < r.start:
                raise ReplayError(f"partition {p}: --until offset {r.end} is before --from offset {r.start}")
            out[p] = r
        return out
    finally:
        if consumer is not None:
            consumer.close()


# -------------------------------------------------------------------------------------- core
@dataclass
class ReplayStats:
    model_version: str = ""
    output_topic: str = ""
    ranges: dict[int, PartitionRange] = field(default_factory=dict)
    records_read: int = 0  # input records read from the log (both topics)
    folded: int = 0  # records applied to state before their partition's range (no scoring)
    processed: int = 0  # records run through ``process`` (range and the business records inside it)
    predictions: int = 0
    skipped: Counter = field(default_factory=Counter)  # key_mismatch, undecodable, invalid, after_end
    outcomes: Counter = field(default_factory=Counter)
    read_seconds: float = 0.0  # reading and decoding the log
    lookup_seconds: float = 0.0
    compute_seconds: float = 0.0  # merge + fold + process (incl. model calls)
    score_seconds: float = 0.0  # model calls alone
    write_seconds: float = 0.0  # encoding and producing predictions
    seconds: float = 0.0  # end to end

    @property
    def events_per_s(self) -> float:
        return self.records_read / self.seconds if self.seconds > 0 else float("nan")

    @property
    def compute_events_per_s(self) -> float:
        n = self.folded + self.processed
        return n / self.compute_seconds if self.compute_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "output_topic": self.output_topic,
            "ranges": [r.to_dict() for _, r in sorted(self.ranges.items())],
            "records_read": self.records_read,
            "folded": self.folded,
            "processed": self.processed,
            "predictions": self.predictions,
            "skipped": dict(self.skipped),
            "outcomes": dict(self.outcomes),
            "seconds": {
                k: round(getattr(self, f"{k}_seconds"), 3) for k in ("read", "lookup", "compute", "score", "write")
            }
            | {"total": round(self.seconds, 3)},
            "events_per_s": round(self.events_per_s),
            "compute_events_per_s": round(self.compute_events_per_s),
        }


Emit = Callable[[Sequence[dict[str, Any]]], None]


def partition_items(
    records: Iterable[LogRecord],
    ranges: dict[int, PartitionRange],
    topics: tuple[str, str],
    stats: ReplayStats,
) -> dict[int, list[tuple[int, int, int, Any]]]:
    """Bucket the log into ``(rank, time, offset, item)`` per replayed partition, as the worker
    pushes them into its merge (the log reader has already dropped what it dead-letters); drop
    activity past the range end (it cannot change anything released before it)."""
    by_part: dict[int, list[tuple[int, int, int, Any]]] = {p: [] for p in ranges}
    for rec in records:
        r = ranges.get(rec.partition)
        if r is None:
            continue
        if rec.rank == ACTIVITY_RANK and r.end is not None and rec.offset >= r.end:
            stats.skipped["after_end"] += 1
            continue
        by_part[rec.partition].append(rec.merge_entry(topics))
    return by_part


def fold(items: Iterable[Any], store: dict[int, PartitionState], spec: FeatureSpec, outcomes: Counter) -> int:
    """``process`` without scoring: the same state transitions, no feature rows, no model call."""
    return fold_items(items, store, spec, outcomes)


def run_partition(
    partition: int,
    items: list[tuple[int, int, int, Any]],
    start: int,
    scorer: Scorer,
    emit: Emit,
    stats: ReplayStats,
    *,
    spec: FeatureSpec = DEFAULT_SPEC,
    chunk_size: int = DEFAULT_CHUNK,
    rows: RowBuffer | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> None:
    """Fold the partition up to its first activity record at ``start`` or later, then process
    the rest in chunks, emitting each chunk's predictions."""
    t_part = time.perf_counter()
    write0 = stats.write_seconds
    store: dict[int, PartitionState] = {}
    rows = rows if rows is not None else RowBuffer(len(spec.names))
    total = len(items)
    merged: Iterator[Any] = merge_finished(items)
    before: list[Any] = []
    first = None
    for item in merged:
        if type(item) is Decoded and item.rank == ACTIVITY_RANK and item.offset >= start:
            first = item
            break
        before.append(item)
    stats.folded += fold(before, store, spec, Counter())
    done = len(before)
    del before
    if first is not None:
        rest = _prepend(first, merged)
        while chunk := list(islice(rest, chunk_size)):
            out = process(chunk, store, scorer, spec=spec, rows=rows)
            stats.score_seconds += out.score_seconds
            stats.processed += len(chunk)
            stats.outcomes.update(out.outcomes)
            done += len(chunk)
            if out.predictions:
                t1 = time.perf_counter()
                emit(out.predictions)
                stats.write_seconds += time.perf_counter() - t1
                stats.predictions += len(out.predictions)
            if progress is not None:
                progress(partition, done, total)
    stats.compute_seconds += time.perf_counter() - t_part - (stats.write_seconds - write0)


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# ------------------------------------------------------------------------------ with Kafka
def check_output_topic(cfg: Config, output_topic: str) -> None:
    """Refuse to write predictions where they would corrupt inputs or live state."""
    if not output_topic:
        raise ReplayError("--output-topic is required")
    forbidden = {
        cfg.business_topic: "an input topic",
        cfg.activity_topic: "an input topic",
        cfg.changelog_topic: "the live state changelog",
        cfg.dead_letter_topic: "the dead-letter topic",
    }
    if output_topic in forbidden:
        raise ReplayError(f"refusing to replay into {output_topic}: it is {forbidden[output_topic]}")


def replay(
    cfg: Config,
    model_version: str,
    output_topic: str,
    start: Position,
    until: Position | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    max_lateness_ms: int = DEFAULT_MAX_LATENESS_MS,
    on_ranges: Callable[[dict[int, PartitionRange]], None] | None = None,
    on_read: Callable[[int, int], None] | None = None,
    on_process: Callable[[int, int, int], None] | None = None,
) -> ReplayStats:
    """Replay ``[start, until)`` of the input log with model ``model_version`` into ``output_topic``.

    ``on_ranges`` sees the resolved ranges before reading; ``on_read(records, partitions_left)`` and
    ``on_process(partition, items_done, items_total)`` report progress.
    """
    from consumer.config import label_config
    from consumer.io.clients import check_copartitioned, check_reachable, create_topics
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from consumer.runtime.sink import Sink
    from models.baseline import POPULARITY, PopularityScorer
    from models.errors import ModelRefused, RegistryError
    from models.registry import ModelRegistry

    t_start = time.perf_counter()
    check_output_topic(cfg, output_topic)
    model: Scorer
    try:
        if model_version == POPULARITY or model_version.startswith(POPULARITY + "-"):
            # What workers serve while nothing is promoted (models.baseline); its version names the
            # feature set and kinds, so a version other than this code's is refused like a model's.
            model = PopularityScorer(DEFAULT_SPEC, label_config(cfg).kinds)
            if model_version not in (POPULARITY, model.version):
                raise ModelRefused(f"{model_version} is not this code's popularity baseline ({model.version})")
        else:
            model = ModelRegistry(cfg.registry_dir).load(model_version)
    except (ModelRefused, RegistryError) as exc:
        raise ReplayError(f"cannot replay with model {model_version!r} from {cfg.registry_dir}: {exc}") from exc
    check_reachable(cfg.bootstrap)
    n = check_copartitioned(cfg)
    stats = ReplayStats(model_version=model.version, output_topic=output_topic)

    t0 = time.perf_counter()
    stats.ranges = resolve_ranges(cfg, n, start, until, max_lateness_ms=max_lateness_ms)
    stats.lookup_seconds = time.perf_counter() - t0
    if on_ranges is not None:
        on_ranges(stats.ranges)
    create_topics(cfg, [(output_topic, n, {})])

    t0 = time.perf_counter()
    rng = LogRange()
    records = read_input_log(cfg, rng, progress=on_read)
    by_part = partition_items(records, stats.ranges, cfg.input_topics, stats)
    for reason in ("undecodable", "invalid", KEY_MISMATCH):
        stats.skipped[reason] += getattr(rng, reason)
    stats.records_read += rng.records  # dead-lettered records included
    stats.read_seconds = time.perf_counter() - t0
    for p, r in stats.ranges.items():
        # A range end past what was read means "to the end"; say what the end actually was.
        read_end = rng.offsets.get(cfg.activity_topic, {}).get(p, [0, 0])[1]
        if r.end is None or r.end > read_end:
            r.end = max(read_end, r.start)

    registry = FileSchemaRegistry(cfg.schema_registry or None)
    codec = AvroCodec(registry, "Prediction")
    sink = Sink(cfg, f"replay-{uuid.uuid4().hex[:8]}")
    try:

        def emit(preds: Sequence[dict[str, Any]]) -> None:
            keys, values, _ = encoded(preds, codec)
            for k, v in zip(keys, values, strict=True):
                sink.send(output_topic, k, v)
            sink.flush()

        rows = RowBuffer(len(DEFAULT_SPEC.names))
        for p in sorted(by_part):
            items = by_part.pop(p)  # each partition's records are freed once it is replayed
            run_partition(
                p,
                items,
                stats.ranges[p].start,
                model,
                emit,
                stats,
                spec=DEFAULT_SPEC,
                chunk_size=chunk_size,
                rows=rows,
                progress=on_process,
            )
    finally:
        sink.close()
    stats.seconds = time.perf_counter() - t_start
    return stats
