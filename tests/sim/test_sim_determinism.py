"""Same config -> the identical stream; different seeds differ; the two front ends agree."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

import fastavro
import numpy as np
import pytest

from features.events import ActivityEvent, BusinessEvent
from sim.bench import write_avro
from sim.world import DEFAULT_START_MS, World, WorldConfig, generate, generate_records

SMALL = WorldConfig(businesses=60, days=6, seed=11)


def stream_hash(records) -> str:
    h = hashlib.sha256()
    for topic, rec in records:
        h.update(json.dumps([topic, rec], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def test_same_config_same_stream():
    assert stream_hash(generate_records(SMALL)) == stream_hash(generate_records(SMALL))


def test_world_replays_identically():
    w = World(SMALL)
    assert stream_hash(w.records()) == stream_hash(w.records())


def test_different_seeds_differ():
    other = WorldConfig(businesses=60, days=6, seed=12)
    assert stream_hash(generate_records(SMALL)) != stream_hash(generate_records(other))


def test_default_start_is_fixed_not_now():
    assert WorldConfig().start_time_ms == DEFAULT_START_MS == 1_767_225_600_000  # 2026-01-01T00:00Z
    first = next(iter(generate_records(SMALL)))[1]
    assert first["event_time"] == DEFAULT_START_MS and first["kind"] == "CREATED"


def test_ids_are_deterministic_and_well_formed(default_records, default_world):
    seed = default_world.cfg.seed
    for topic, rec in itertools.islice(default_records, 0, None, 97):
        assert re.fullmatch(rf"{seed}-\d+", rec["event_id"])
        assert re.fullmatch(r"b\d{6}", rec["business_id"])
        if topic == "activity":
            assert rec["user_id"] is None or re.fullmatch(r"u\d{7}", rec["user_id"])
            assert rec["search_id"] is None or re.fullmatch(rf"{seed}-s\d+", rec["search_id"])


def test_event_ids_unique_except_duplicates(default_records):
    first: dict[str, dict] = {}
    for _, rec in default_records:
        if rec["event_id"] in first:
            assert first[rec["event_id"]] == rec  # a duplicate is the identical event
        else:
            first[rec["event_id"]] = rec


def test_generate_and_generate_records_agree():
    pairs = itertools.zip_longest(generate(SMALL), generate_records(SMALL))
    n = 0
    for ev, (topic, rec) in pairs:
        assert isinstance(ev, ActivityEvent if topic == "activity" else BusinessEvent)
        assert ev.to_record() == rec
        n += 1
    assert n > 10_000


def test_neutral_exposure_boost_changes_nothing():
    assert stream_hash(World(SMALL, exposure_boost=lambda b: 1.0).records()) == stream_hash(generate_records(SMALL))


def test_exposure_boost_seam_shifts_views():
    # Exposure is allocated within a city x category group: boost a business that has competitors.
    w = World(SMALL)
    sizes = np.bincount(w.b_group)
    target = next(b for i, b in enumerate(w.business_ids) if sizes[w.b_group[i]] >= 4 and not w.is_new[i])
    calls: list[str] = []

    def boost(business_id: str) -> float:
        calls.append(business_id)
        return 8.0 if business_id == target else 1.0

    def views(stream) -> int:
        return sum(1 for t, r in stream if r["kind"] == "PAGE_VIEW" and r["business_id"] == target)

    base = views(generate_records(SMALL))
    boosted = views(World(SMALL, exposure_boost=boost).records())
    assert target in calls and len(calls) >= SMALL.days * 30  # once per listed business and day
    assert boosted > 2 * base + 10


def test_records_round_trip_through_avro(tmp_path: Path):
    records = list(generate_records(SMALL))
    counts = write_avro(iter(records), tmp_path)
    assert counts == {
        "activity": sum(t == "activity" for t, _ in records),
        "business": sum(t == "business" for t, _ in records),
    }
    with open(tmp_path / "activity_events.avro", "rb") as fo:
        back = list(fastavro.reader(fo))
    assert back == [r for t, r in records if t == "activity"]
    with open(tmp_path / "business_events.avro", "rb") as fo:
        back = list(fastavro.reader(fo))
    assert back == [r for t, r in records if t == "business"]


@pytest.mark.parametrize(
    "bad",
    [
        dict(businesses=0),
        dict(cities=99),
        dict(late_share=1.5),
        dict(conversion_rates=(0.1, 0.1)),
        dict(late_max_ms=10),
    ],
)
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        WorldConfig(**bad)
