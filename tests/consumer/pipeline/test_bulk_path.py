"""The worker's bulk path (activity decoded per poll batch into columns, merged and folded as runs,
predictions as columns) against the record-at-a-time path on the same Kafka records: the same
predictions (every field), feature bits, outcomes, dead letters, states and changelog, across
partitions, poll sizes, release budgets, bad records, tombstones and a restart that re-reads
records its restored states already reflect."""

import random
import zlib
from collections import Counter
from itertools import zip_longest

import numpy as np
import pytest

from consumer.config import Config
from consumer.pipeline.codec import FileSchemaRegistry
from consumer.pipeline.decode import ActivityRun, Decoder
from consumer.pipeline.order import RecordOrder
from consumer.pipeline.predictions import Predictions
from consumer.pipeline.process import process
from consumer.pipeline.store import from_changelog
from features.order import HeadMerger
from features.spec import DEFAULT_SPEC
from sim.world import WorldConfig, generate_records
from tests.kit.records import KafkaRecord, event_codecs

CFG = Config()
REG = FileSchemaRegistry(None)
CODECS = event_codecs(CFG, REG)
PARTS = 3


class SumScorer:
    version = "vbulk"
    feature_set_version = DEFAULT_SPEC.version

    def score(self, X):
        return np.nansum(X, axis=1).astype(np.float64)


def _log(seed: int) -> list[KafkaRecord]:
    """A world over three partitions with garbage, wrong and null keys, a tombstone (its business
    comes back), an out-of-range rating, and empty, null and non-ASCII user ids in each activity
    stream."""
    offsets: dict = {}
    out: list[KafkaRecord] = []

    def add(topic, p, key, value):
        o = offsets.get((topic, p), 0)
        offsets[(topic, p)] = o + 1
        out.append(KafkaRecord(topic, p, o, key, value, 0))

    records = list(generate_records(WorldConfig(businesses=18, days=3, seed=seed, cities=2, categories=3)))
    rng = random.Random(seed)
    for i, (kind, rec) in enumerate(records):
        topic, codec = CODECS[kind]
        key = rec["business_id"].encode()
        p = zlib.crc32(key) % PARTS
        if kind == "activity" and rng.random() < 0.05:
            rec = {**rec, "user_id": rng.choice(["", None, "ü-user"])}  # empty, anonymous, not ASCII
        add(topic, p, key, codec.encode(rec))
        if rng.random() < 0.01:
            add(CFG.activity_topic, p, b"x", b"garbage")
        if rng.random() < 0.01 and kind == "activity":
            add(topic, p, b"someone-else", codec.encode(rec))
            add(topic, p, None, codec.encode(rec))
            add(topic, p, key, codec.encode({**rec, "kind": "PAGE_VIEW", "rating": 9}))  # invalid
        if i == len(records) // 2:
            add(CFG.business_topic, p, key, None)  # tombstone; later records re-create it
    return out


def _polls(log: list[KafkaRecord], rng: random.Random) -> list[tuple[str, int, list[KafkaRecord]]]:
    """Each stream cut into polls of random sizes, the streams' polls interleaved."""
    streams: dict = {}
    for r in log:
        streams.setdefault((r.topic, r.partition), []).append(r)
    chunks = []
    for (topic, p), recs in streams.items():
        i = 0
        while i < len(recs):
            n = rng.choice([1, 3, 50, 400])
            chunks.append((rng.random(), topic, p, recs[i : i + n]))
            i += n
    chunks.sort(key=lambda c: c[0])
    # a stream's polls stay in offset order
    by_stream: dict = {}
    for _, topic, p, recs in chunks:
        by_stream.setdefault((topic, p), []).append(recs)
    order = [(t, p) for _, t, p, _ in chunks]
    return [(t, p, by_stream[(t, p)].pop(0)) for t, p in order]


def _run(log, bulk: bool, budget: int, seed: int, store=None, skip=0):
    """The worker's steps without a broker: polls pushed into per-partition merges, released
    ``budget`` records at a time once every poll is in (both streams caught up), processed."""
    order = RecordOrder(Decoder(CFG, REG), CFG.input_topics, DEFAULT_SPEC if bulk else None)
    mergers = {p: HeadMerger() for p in range(PARTS)}
    for topic, p, recs in _polls(log[skip:], random.Random(seed)):
        m = mergers[p]
        order.push(topic, p, recs, m.push, m.push_run if bulk else None)
    store = {} if store is None else store
    preds, rows, dead, outcomes, runs = [], [], [], Counter(), 0
    while any(m.pending() for m in mergers.values()):
        # the partitions' items interleaved (each partition's in order): kernel calls of several
        # partitions then end in another order than the walk's
        per = [list(m.pop_ready(True, True, budget)) for m in mergers.values()]
        released = [it for group in zip_longest(*per) for it in group if it is not None]
        runs += sum(isinstance(it, ActivityRun) for it in released)
        walk = {}  # (partition, offset) of each activity record -> its place in this batch's walk
        for it in released:
            for one in it.expand() if isinstance(it, ActivityRun) else [it]:
                if getattr(one, "rank", 0) == 1:
                    walk[(one.partition, one.offset)] = len(walk)
        out = process(released, store, SumScorer(), clock=lambda: 1.7e9)
        places = [walk[(p["source_partition"], p["source_offset"])] for p in out.predictions]
        assert places == sorted(places)  # predictions in walk order, whatever order the kernel ran in
        if bulk and len(out.predictions):
            assert isinstance(out.predictions, Predictions)
        preds += list(out.predictions)
        if out.features is not None:
            rows.append(np.array(out.features))
        dead += out.dead_letters
        outcomes.update(out.outcomes)
    return store, preds, rows, dead, outcomes, runs


def _by_partition(preds):
    return {p: [x for x in preds if x["source_partition"] == p] for p in range(PARTS)}


def _rows_by_partition(preds, rows):
    X = np.vstack(rows).view(np.uint32).tolist()
    return {p: [x for x, pr in zip(X, preds, strict=True) if pr["source_partition"] == p] for p in range(PARTS)}


def _where(dl):
    return (dl.topic, dl.partition, dl.offset)


def _changelog(store):
    return {p: dict(part.drain_changes()) for p, part in store.items()}


@pytest.mark.parametrize("seed,budget", [(1, 7), (2, 500), (3, 100_000)])
def test_the_bulk_path_gives_what_the_record_path_gives(seed, budget):
    log = _log(seed)
    s1, p1, r1, d1, o1, n1 = _run(log, False, budget, seed)
    s2, p2, r2, d2, o2, n2 = _run(log, True, budget, seed)
    assert n1 == 0 and n2 > 0  # the bulk path did take runs
    # the two paths walk the partitions in another interleaving (a run is one item): compare per partition
    assert _by_partition(p2) == _by_partition(p1) and len(p1) > 100
    assert _rows_by_partition(p2, r2) == _rows_by_partition(p1, r1)
    assert sorted(d2, key=_where) == sorted(d1, key=_where) and {d.reason for d in d1} >= {
        "undecodable",
        "key_mismatch",
        "invalid",
    }
    assert o2 == o1
    assert _changelog(s2) == _changelog(s1)


def test_after_a_restart_the_bulk_path_skips_what_restored_states_reflect():
    """A checkpoint after part of the log, the states restored from its changelog, then the whole
    log re-read from the start (the commit was lost): the same outcomes and predictions as the
    record path in the same situation, and the re-read records are ``already_applied``."""
    log = _log(5)
    half = len(log) // 2

    def restarted(bulk):
        store, *_ = _run(log[:half], bulk, 300, 5)
        changelog = {p: {k: v for k, v in part.drain_changes()} for p, part in store.items()}
        restored = {p: from_changelog(p, latest) for p, latest in changelog.items()}
        return _run(log, bulk, 300, 6, store=restored)

    s1, p1, _, d1, o1, _ = restarted(False)
    s2, p2, _, d2, o2, n2 = restarted(True)
    assert n2 > 0 and o1["already_applied"] > 100
    assert (_by_partition(p2), sorted(d2, key=_where), o2) == (_by_partition(p1), sorted(d1, key=_where), o1)
    assert _changelog(s2) == _changelog(s1)
