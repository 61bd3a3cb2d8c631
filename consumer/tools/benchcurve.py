"""The bench's curves (``consumer.tools.bench``): the worker's cost as its state grows, and its
latency as the offered load grows.

- **growth** (:func:`growth`): for each population size N, one partition's state is filled with N
  businesses through the input topics (one CREATED business event each, folded by a first worker
  child, which writes them to the changelog); then a second worker child of the same group
  restores them and folds, in order, a *warm-up* pass of one activity event per business (each
  restored state is decoded on its business's first event, ``PartitionState.restored``: a cost
  per business, paid once after a restart) and a fixed number of activity events whose businesses
  are drawn uniformly from all N (not a hot few). The figure is the second part's events/s and
  CPU µs per event: every size folds the same number of events over warm states, so a fold that
  slows with the state shows as fewer events/s. The warm-up's events/s and the child's RSS (once
  restored, and at peak) are reported too.
- **latency vs load** (:func:`latency_chart`): the p50/p99 that ``consumer.tools.bench`` measured at
  fractions of each transport's saturation rate, drawn as a PNG (matplotlib, Agg backend: no display).
"""

from __future__ import annotations

import random
import sys
from itertools import cycle
from pathlib import Path
from typing import Any

from consumer.config import Config
from consumer.tools.benchkit import Child
from consumer.tools.benchload import publish, topic_set

DAY_MS = 86_400_000


def growth_inputs(
    world_records: list[tuple[str, dict]], businesses: int, events: int, prefix: str, seed: int = 7
) -> tuple[list[tuple[bool, bytes, bytes]], list[tuple[bool, bytes, bytes]], int]:
    """Encoded (business events, activity events, distinct businesses the measured events touch).

    Businesses are copies of the world's first CREATED business, renamed. Activity events are the
    world's own (kinds, users, searches), cycled, with an event id of their own (the worker drops
    repeated ids): first one per business (the warm-up, shuffled), then ``events`` more, each for a
    business drawn uniformly from all of them. Event times stay increasing across cycles and start
    after every business was created."""
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry

    registry = FileSchemaRegistry(None)
    bcodec, acodec = AvroCodec(registry, "BusinessEvent"), AvroCodec(registry, "ActivityEvent")
    template = next(r for k, r in world_records if k == "business" and r["kind"] == "CREATED")
    acts = [r for k, r in world_records if k == "activity"]
    if not acts:
        raise ValueError("the world has no activity events to copy")
    span = acts[-1]["event_time"] - acts[0]["event_time"] + 1
    created = acts[0]["event_time"] - DAY_MS
    ids = [f"{prefix}-{i:07d}" for i in range(businesses)]
    biz = [
        (
            True,
            bid.encode(),
            bcodec.encode({**template, "event_id": f"{bid}-c", "business_id": bid, "event_time": created}),
        )
        for bid in ids
    ]
    rng = random.Random(seed)
    order = rng.sample(ids, businesses) + [ids[rng.randrange(businesses)] for _ in range(events)]
    out = []
    for i, (bid, rec) in enumerate(zip(order, cycle(acts), strict=False)):
        t = rec["event_time"] + (i // len(acts)) * span
        out.append(
            (
                False,
                bid.encode(),
                acodec.encode({**rec, "event_id": f"{prefix}-a{i}", "business_id": bid, "event_time": t}),
            )
        )
    return biz, out, len(set(order[businesses:]))


def growth(
    base: Config,
    tag: str,
    transport: str,
    world_records: list[tuple[str, dict]],
    sizes: list[int],
    events: int,
    work: Path,
) -> dict[str, Any]:
    """The worker's events/s and RSS at each population size in ``sizes`` (one partition each),
    ``events`` activity events after the warm-up."""
    out: dict[str, Any] = {"transport": transport, "partitions": 1, "events": events, "sizes": []}
    for n in sizes:
        print(f"growth: {n:,} businesses, {events:,} activity events ({transport})", file=sys.stderr)
        out["sizes"].append(_growth_point(base, f"{tag}-g{n}", transport, world_records, n, events, work))
    return out


def _growth_point(
    base: Config, tag: str, transport: str, world_records: list[tuple[str, dict]], n: int, events: int, work: Path
) -> dict[str, Any]:
    from consumer.io.clients import create_topics

    cfg = topic_set(base, tag).with_overrides(transport=transport, partitions=1)
    create_topics(cfg)
    biz, acts, touched = growth_inputs(world_records, n, events, tag)
    publish(cfg, biz)
    filled = Child("worker", cfg, work).result()
    if filled["consumed"] != n:
        raise RuntimeError(f"growth {n}: the first worker folded {filled['consumed']} of {n} business events")
    publish(cfg, acts)
    # Same group: restores the N states, then folds the activity; every activity event is scored,
    # so predictions count the events folded (the warm-up's end is found by them).
    wk = Child("worker", cfg, work, extra={"warmup": n}).result()
    if wk["consumed"] != len(acts) or wk["predictions"] != len(acts) or "after_warmup" not in wk:
        raise RuntimeError(
            f"growth {n}: the worker read {wk['consumed']} and scored {wk['predictions']} of {len(acts)} activity events"
        )
    after, warm = wk["after_warmup"], wk["warmup"]
    k = after["predictions"]
    return {
        "businesses": n,
        "events": k,
        "touched_businesses": touched,
        "events_per_s": k / after["seconds"] if after["seconds"] else None,
        "cpu_us_per_event": 1e6 * after["cpu_seconds"] / k if k else None,
        "warmup_events": warm["predictions"],
        "warmup_events_per_s": warm["predictions"] / warm["seconds"] if warm["seconds"] else None,
        "rss_mb_at_ready": _mb(wk.get("rss_kb_at_ready")),
        "max_rss_mb": _mb(wk.get("max_rss_kb")),
        "dead_letters": wk["dead_letters"],
        "populate_max_rss_mb": _mb(filled.get("max_rss_kb")),
    }


def _mb(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def latency_chart(curve: dict[str, Any], path: Path, target_ms: float | None = None) -> Path:
    """p50 and p99 against the load achieved (% of each transport's saturation rate), one colour
    per transport; log scale (latency at saturation is the backlog's age, orders above the rest).
    The x is what the load generator achieved, not what was asked: on a busy host it falls short
    at the high points, and the chart would otherwise credit the worker with a load it never got."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (tr, c) in enumerate(curve.items()):
        pts = [p for p in c["points"] if p["latency_ms"]["n"]]
        sat = c["saturation_events_per_s"]
        x = [100 * (p["achieved_events_per_s"] or p["rate_events_per_s"]) / sat for p in pts]
        colour = f"C{i}"
        for q, style in (("p99", "-o"), ("p50", "--s")):
            y = [max(p["latency_ms"][q], 0.5) for p in pts]  # 0 ms (rounded) cannot sit on a log axis
            ax.plot(x, y, style, color=colour, label=f"{tr} {q} (100% = {sat:,.0f} events/s)")
    if target_ms is not None:
        ax.axhline(target_ms, color="grey", linestyle=":", label=f"target p99 < {target_ms:g} ms")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 100, not 10^2
    ax.set_xlim(0, 105)
    ax.set_xlabel("load achieved by the generator, % of the worker's saturation rate")
    ax.set_ylabel("event -> prediction latency (ms)")
    ax.set_title("streamrank worker: latency vs offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
