"""Measure generation speed, alone and with writing Avro object-container files.

    python -m sim.bench [--businesses 1000] [--days 30] [--seed 0] [--sparse] [--out DIR]
                        [--codec null] [--events] [--verify]

Writes ``business_events.avro`` and ``activity_events.avro`` (schemas from ``consumer/pipeline/schemas``)
into ``--out`` (default: a temporary directory, removed afterwards) and prints events/s for
generation alone and for generation + write. ``--events`` also times the dataclass path
(``generate`` + ``to_record``); ``--verify`` reads the files back and checks the counts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import fastavro

from sim.world import World, WorldConfig, generate, generate_records

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "consumer" / "pipeline" / "schemas"
FILES = {"business": "business_events.avro", "activity": "activity_events.avro"}


def load_schema(name: str) -> dict:
    """Parsed Avro schema ``consumer/pipeline/schemas/<name>.avsc`` (``business_event`` or ``activity_event``)."""
    return cast(dict, fastavro.parse_schema(json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())))


def write_avro(stream: Iterable[tuple[str, dict]], out_dir: str | os.PathLike, codec: str = "null") -> dict[str, int]:
    """Write a ``(topic_kind, record)`` stream into one Avro file per topic; returns counts per topic.

    Activity records stream straight into the writer; business records (a few per business) are
    collected and written afterwards. Order within each file is delivery order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    business: list[dict] = []
    counts: collections.Counter[str] = collections.Counter()

    def activity() -> Iterator[dict]:
        n = 0
        for topic, rec in stream:
            if topic == "activity":
                n += 1
                yield rec
            else:
                business.append(rec)
        counts["activity"] = n

    with open(out / FILES["activity"], "wb") as fo:
        fastavro.writer(fo, load_schema("activity_event"), activity(), codec=codec)
    with open(out / FILES["business"], "wb") as fo:
        fastavro.writer(fo, load_schema("business_event"), business, codec=codec)
    counts["business"] = len(business)
    return dict(counts)


def _records_from_events(cfg: WorldConfig) -> Iterator[tuple[str, dict]]:
    for ev in generate(cfg):
        yield ("activity" if type(ev).__name__ == "ActivityEvent" else "business"), ev.to_record()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--businesses", type=int, default=1_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparse", action="store_true", help="the sparse, Yelp-like preset (WorldConfig.sparse)")
    ap.add_argument("--out", default=None, help="output directory (default: temporary, removed)")
    ap.add_argument("--codec", default="null", help="Avro codec: null, deflate, ... (default null)")
    ap.add_argument("--events", action="store_true", help="also time the dataclass path (generate + to_record)")
    ap.add_argument("--verify", action="store_true", help="read the files back and check counts")
    args = ap.parse_args(argv)
    make = WorldConfig.sparse if args.sparse else WorldConfig
    cfg = make(businesses=args.businesses, days=args.days, seed=args.seed)

    t = time.perf_counter()
    world = World(cfg)
    expected = world.expected_event_count()
    print(
        f"world: {cfg.businesses} businesses x {cfg.days} days, seed {cfg.seed}, "
        f"{cfg.n_users} users (setup {time.perf_counter() - t:.2f}s); expected ~{expected:,} events"
    )

    t = time.perf_counter()
    kinds = collections.Counter(rec["kind"] for _, rec in world.records())
    dt = time.perf_counter() - t
    n = sum(kinds.values())
    print(f"generate_records:          {n:>10,} events in {dt:6.2f}s = {n / dt:>10,.0f} events/s")

    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="sim-bench-")
    out = tmp.name if tmp is not None else args.out
    try:
        t = time.perf_counter()
        counts = write_avro(generate_records(cfg), out, args.codec)
        dt = time.perf_counter() - t
        m = sum(counts.values())
        size = sum((Path(out) / f).stat().st_size for f in FILES.values())
        print(
            f"generate_records + write:  {m:>10,} events in {dt:6.2f}s = {m / dt:>10,.0f} events/s "
            f"({size / 1e6:.0f} MB, codec {args.codec}, {out})"
        )
        if args.events:
            t = time.perf_counter()
            k = sum(1 for _ in generate(cfg))
            dt = time.perf_counter() - t
            print(f"generate (dataclasses):    {k:>10,} events in {dt:6.2f}s = {k / dt:>10,.0f} events/s")
            t = time.perf_counter()
            counts_ev = write_avro(_records_from_events(cfg), Path(out) / "via-events", args.codec)
            dt = time.perf_counter() - t
            k = sum(counts_ev.values())
            print(f"generate + to_record + write: {k:>7,} events in {dt:6.2f}s = {k / dt:>10,.0f} events/s")
        if args.verify:
            for topic, fname in FILES.items():
                with open(Path(out) / fname, "rb") as fo:
                    got = sum(1 for _ in fastavro.reader(fo))
                if got != counts[topic]:
                    raise SystemExit(f"verify: {fname} has {got} records, wrote {counts[topic]}")
            print("verify: ok")
    finally:
        if tmp is not None:
            tmp.cleanup()

    share = {k: v / n for k, v in kinds.items()}
    conv = sum(kinds[k] for k in ("BIZSITE_VISIT", "CALL", "DIRECTIONS"))
    print("counts: " + ", ".join(f"{k} {v:,}" for k, v in kinds.most_common()))
    if kinds["PAGE_VIEW"]:
        print(
            f"conversions / page views: {conv / kinds['PAGE_VIEW']:.1%}; "
            f"page views {share.get('PAGE_VIEW', 0):.1%} of events"
        )
    months = cfg.days * 12 / 365.25
    print(f"activity events per business and month: {counts['activity'] / cfg.businesses / months:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
