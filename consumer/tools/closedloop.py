"""The closed-loop world: acting on predictions changes what happens next, as in production.

The driver generates the world one delivery day at a time (``World.daily_records``), publishes the
day to the input topics, lets an in-process worker (``consumer.runtime.worker.Worker``) score it, reads the
*serving* predictions topic, and sets tomorrow's exposure from the rankings it finds there:

* per ranking group (``group_key``) and per arm, the ``top_k`` businesses by their latest score get
  exposure x ``(1 + effect)`` the next day (the site shows them first: more page views, and with
  them more conversions); the rest keep x 1. Each arm ranks its own businesses (the arms split the
  inventory of every group), so an arm's only lever is *which* of its businesses it promotes.
* hold-out businesses are never served (their predictions go to the hold-out topic, which the
  driver does not read): they keep x 1, their organic exposure.
* the shadow topic is not read either: a shadow model changes nothing.

Exposure shares a group's demand (``World``: a group's daily views do not grow with boosts), so
promoting some businesses takes views from the others, the hold-out included: the interference a
real marketplace has; uplift versus the hold-out therefore includes the views the arms took from it.

The ground truth stays in ``World`` (``LoopResult.world``): the product only ever sees events.

Needs a broker (``cfg.bootstrap``) and a registry with a promoted model (``cfg.registry_dir``).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.world import World, WorldConfig


@dataclass(frozen=True)
class LoopConfig:
    world: WorldConfig
    top_k: int = 3  # businesses promoted per group and arm ...
    effect: float = 2.0  # ... with exposure x (1 + effect) the next day
    warmup_days: int = 0  # days before the loop acts: the pre-period of a CUPED-adjusted report
    day_timeout_s: float = 120.0  # how long one day may take to be scored


@dataclass
class LoopResult:
    world: World
    days: int = 0
    published: int = 0
    predictions: int = 0
    boosted_per_day: list[int] = field(default_factory=list)
    experiment_start_ms: int = 0  # first moment that boosts act on
    seconds: float = 0.0


class _Boost:
    """The exposure seam the world calls once per listed business per day."""

    def __init__(self) -> None:
        self.factor: dict[str, float] = {}

    def __call__(self, business_id: str) -> float:
        return self.factor.get(business_id, 1.0)


def rank_boosts(latest: dict[str, dict[str, Any]], top_k: int, effect: float) -> dict[str, float]:
    """business -> exposure factor from the latest serving prediction of each business."""
    by_cell: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    for bid, p in latest.items():
        by_cell[(p["group_key"], p["arm"])].append((p["score"], bid))
    boosts: dict[str, float] = {}
    for cands in by_cell.values():
        cands.sort(key=lambda x: (-x[0], x[1]))  # ties by id: deterministic
        for _, bid in cands[:top_k]:
            boosts[bid] = 1.0 + effect
    return boosts


def run_closed_loop(cfg: Any, loop: LoopConfig, progress: Callable[[str], None] | None = None) -> LoopResult:
    from kafka import KafkaConsumer, TopicPartition

    from consumer.errors import ClosedLoopError
    from consumer.io.clients import consumer_kwargs
    from consumer.io.publish import publish_records
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry
    from consumer.runtime.worker import Worker

    t_start = time.perf_counter()
    boost = _Boost()
    world = World(loop.world, exposure_boost=boost)
    res = LoopResult(world, experiment_start_ms=world.day_start(loop.warmup_days))
    worker = Worker(cfg, exit_when_idle_s=None, worker_id="closed-loop")
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver thread
            failure.append(exc)

    thread = threading.Thread(target=serve, name="closed-loop-worker", daemon=True)
    codec = AvroCodec(FileSchemaRegistry(cfg.schema_registry or None), "Prediction")
    reader: Any = None
    latest: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    try:
        for d, records in enumerate(world.daily_records()):
            res.published += publish_records(cfg, records).total
            if d == 0:
                thread.start()  # after the first publish: the worker creates its output topics
            deadline = time.monotonic() + loop.day_timeout_s
            while sum(worker.stats.outcomes.values()) < res.published:
                if failure or not thread.is_alive() and d > 0:
                    raise ClosedLoopError(f"closed loop: the worker stopped on day {d}") from (
                        failure[0] if failure else None
                    )
                if time.monotonic() > deadline:
                    raise ClosedLoopError(
                        f"closed loop: day {d} not scored within {loop.day_timeout_s:.0f}s "
                        f"({sum(worker.stats.outcomes.values())} of {res.published} records)"
                    )
                time.sleep(0.05)
            if reader is None:
                reader = KafkaConsumer(**consumer_kwargs(cfg, None))
                parts = reader.partitions_for_topic(cfg.predictions_topic) or set()
                tps = [TopicPartition(cfg.predictions_topic, p) for p in sorted(parts)]
                reader.assign(tps)
                reader.seek_to_beginning(*tps)
            # Predictions are acknowledged before the batch commits, so they are all in the topic now.
            want = worker.stats.predictions
            while len(seen) < want:
                if time.monotonic() > deadline:
                    raise ClosedLoopError(f"closed loop: read {len(seen)} of {want} serving predictions on day {d}")
                for recs in reader.poll(timeout_ms=200, max_records=50_000).values():
                    for r in recs:
                        p = codec.decode(r.value, r.topic, r.partition, r.offset)
                        seen.add(p["prediction_id"])
                        cur = latest.get(p["business_id"])
                        if cur is None or (p["event_time"], p["source_offset"]) >= (
                            cur["event_time"],
                            cur["source_offset"],
                        ):
                            latest[p["business_id"]] = p
            # Computed from today's predictions, consulted when tomorrow is generated.
            boost.factor = rank_boosts(latest, loop.top_k, loop.effect) if d + 1 >= loop.warmup_days else {}
            res.boosted_per_day.append(len(boost.factor))
            res.days = d + 1
            if progress:
                progress(
                    f"day {d}: {res.published} records published, {want} serving predictions, {len(boost.factor)} boosted"
                )
        res.predictions = worker.stats.predictions
    finally:
        worker.request_stop()
        if thread.is_alive():
            thread.join(30)
        if reader is not None:
            reader.close()
    res.seconds = time.perf_counter() - t_start
    return res


def main(argv: list[str] | None = None) -> int:
    """Run closed-loop experiments on an embedded broker and print each report's uplift lines:
    ``python -m consumer.tools.closedloop --registry DIR --arms a1:promoted:50,a2:promoted:50 --seeds 1 2 3``."""
    import argparse
    import uuid

    from consumer.config import Config
    from consumer.io.brokers.tansu import EmbeddedBroker
    from consumer.io.clients import create_topics
    from consumer.tools.report import build_report, read_prediction_topics, to_markdown
    from consumer.tools.topicreads import read_conversions

    ap = argparse.ArgumentParser(prog="python -m consumer.tools.closedloop")
    ap.add_argument("--registry", required=True, help="registry with a promoted model")
    ap.add_argument("--arms", default="good:promoted:50,rand:random:50")
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3])
    ap.add_argument("--businesses", type=int, default=600)
    ap.add_argument("--days", type=int, default=9)
    ap.add_argument("--warmup-days", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--effect", type=float, default=3.0)
    ap.add_argument("--full", action="store_true", help="print the whole report, not only the uplift lines")
    ap.add_argument("--views", type=float, default=4.0, help="views per business and day")
    ap.add_argument("--popularity-sigma", type=float, default=0.6)
    ap.add_argument("--dump", metavar="DIR", help="also write each run's predictions and conversions there (JSON)")
    a = ap.parse_args(argv)
    with EmbeddedBroker() as broker:
        for seed in a.seeds:
            s = uuid.uuid4().hex[:8]
            cfg = Config(
                bootstrap=broker.bootstrap,
                business_topic=f"b-{s}",
                activity_topic=f"a-{s}",
                predictions_topic=f"p-{s}",
                dead_letter_topic=f"d-{s}",
                changelog_topic=f"c-{s}",
                group_id=f"g-{s}",
                partitions=2,
                registry_dir=a.registry,
                arms=a.arms,
                holdout=a.holdout,
                holdout_topic=f"p-{s}-holdout",
                shadow_topic=f"p-{s}-shadow",
            )
            create_topics(cfg)
            world = WorldConfig(
                businesses=a.businesses,
                days=a.days,
                seed=seed,
                cities=2,
                categories=2,
                views_per_business_day=a.views,
                conversion_rates=(0.033, 0.018, 0.027),
                popularity_sigma=a.popularity_sigma,
            )
            res = run_closed_loop(cfg, LoopConfig(world, top_k=a.top_k, effect=a.effect, warmup_days=a.warmup_days))
            preds = read_prediction_topics(cfg, [cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic])
            conv = read_conversions(cfg, ("BIZSITE_VISIT", "CALL", "DIRECTIONS"))
            rep = build_report(
                preds, conv.times, conv.log_end_ms, horizon_ms=cfg.horizon_ms, k=3, start_ms=res.experiment_start_ms
            )
            if a.dump:
                import json
                from pathlib import Path

                Path(a.dump).mkdir(parents=True, exist_ok=True)
                with open(Path(a.dump) / f"seed{seed}.json", "w") as fh:
                    json.dump(
                        {
                            "preds": preds,
                            "conv": conv.times,
                            "end": conv.log_end_ms,
                            "start": res.experiment_start_ms,
                            "horizon": cfg.horizon_ms,
                        },
                        fh,
                        default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o),
                    )
            print(
                f"seed {seed}: {res.published} records, {res.predictions} serving predictions, {res.seconds:.1f}s",
                flush=True,
            )
            if a.full:
                print(to_markdown(rep, None))
            for c in rep.cells:
                for name, u in (("vs holdout", c.uplift_vs_holdout), ("vs first arm", c.uplift_vs_first)):
                    if u is not None:
                        print(
                            f"  {c.arm:8s} {name:13s} {u.diff:+.4f} [{u.lo:+.4f}, {u.hi:+.4f}]{' *' if u.excludes_zero else ''}",
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
