"""``make bench`` / ``streamrank bench``: the worker against its Kafka ceiling, in one run.

One embedded broker, one generated world (encoded once), one trained model; then, per run and per
installed transport (``consumer.io.transport``: kafka-python, confluent-kafka):

1. **passthrough** at saturation: a child process consumes the preloaded input topics and produces
   the same bytes through the worker's transport and settings, flushing and committing per poll
   batch like the worker's checkpoint: the ceiling the Kafka client allows;
2. **worker** at saturation: a child process runs ``Worker`` over the same preloaded topics
   (another group): events/s, CPU µs per event by stage (the worker's own stage timers);
3. **half load**: fresh topics, input produced at 0.5 × the worker's saturation rate while the
   passthrough, then the worker, runs: p50/p99 latency from each input record's timestamp to its
   output record's (both wall clock at send). The passthrough's is the floor that the broker, the
   client and the load generator leave. (At saturation, latency is the age of the backlog: not
   reported.)

With ``--guarantee exactly_once`` (Apache Kafka only: ``--engine kafka`` or ``--bootstrap``), the
worker runs 2 and 3 again with ``STREAMRANK_GUARANTEE=exactly_once``, same run, same input: the
cost of a transaction per checkpoint in throughput and latency.

and once per run:

4. **state**: bytes per business (latest changelog value); restore rate, per transport, from a
   changelog of 50,000 businesses; decode rate of restored states (paid on each one's next event);
5. **trainer**: training-set build events/s on the log's records (the fit is timed once, when the
   bench's model is trained);
6. **replay**: ``consumer.tools.replay.replay`` of the preloaded topics.

and once, after the runs (``consumer.tools.benchcurve``):

7. **latency vs offered load**: the worker, per transport, at ``--load-points`` % of its
   saturation rate (the runs' median): p50/p99 at each, in ``bench.json`` and drawn in
   ``bench-out/latency_vs_load.png``;
8. **cost growth**: the worker's events/s and RSS with 1k, 10k, 100k businesses in its partition
   (``--growth-sizes``), the same number of activity events spread over all of them.

The table marks each figure with a target (issue 20's) met or missed, from its median.

Both Kafka children are separate processes so that the producing/reading parent does not share
their GIL; they are in ``consumer.tools.benchkit`` (and time the worker through its public hooks only),
the load generator and the latency reader in ``consumer.tools.benchload``. The key figure is worker events/s ÷ passthrough
msgs/s, from the same run. Timings are printed and written to ``bench-out/bench.json``; nothing
asserts them. ``--metrics-cost`` prints the cost of the worker's metric updates per batch instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from consumer.config import TRANSPORTS, Config
from consumer.tools.benchcurve import growth, latency_chart
from consumer.tools.benchkit import Child, metrics_cost
from consumer.tools.benchload import (
    encode_world,
    installed_transports,
    latencies,
    pct,
    prediction_latencies,
    publish,
    topic_set,
)

GROWTH_SIZES = (1000, 10_000, 100_000)
GROWTH_EVENTS = 50_000  # activity events timed at every size, after the warm-up: seconds of a worker's time
LOAD_POINTS = (10.0, 25.0, 50.0, 75.0, 100.0)
FIXED_RATE = 10_000  # events/s: the latency comparison at one load for every transport
TRAIN_BUSINESSES = 300
BATCH_STAGES = ("poll", "decode", "state", "score", "produce", "commit")


# ----------------------------------------------------------------------------- phases
def _state_figures(
    cfg: Config, partitions: int, restore_entities: int, transports: list[str], work: Path
) -> dict[str, Any]:
    """Bytes per business from the worker's changelog; the restore rate, with each transport, from
    a changelog of ``restore_entities`` businesses (the bench's own world is far too small to time
    a restore: that figure would be consumer start-up; their states are the worker's, re-keyed);
    and the decode rate of restored states, which the worker pays on each business's next event."""
    from kafka import KafkaProducer

    from consumer.io.changelog import restore_partitions
    from consumer.io.clients import create_topics, producer_kwargs
    from consumer.io.transport import reader
    from consumer.pipeline.store import decode_entry, encode_entry
    from features.state import from_bytes, to_bytes

    def restore(topic: str, transport: str) -> Any:
        return restore_partitions(
            lambda: reader(cfg.with_overrides(transport=transport), "bench-restore"), topic, list(range(partitions))
        )

    parts, _ = restore(cfg.changelog_topic, transports[0])
    entries = [e for ps in parts.values() for e in ps.decode_all().values()]
    sizes = [len(encode_entry(e)) for e in entries]
    out: dict[str, Any] = {
        "businesses": len(sizes),
        "bytes_per_business_mean": statistics.fmean(sizes) if sizes else None,
        "bytes_per_business_max": max(sizes) if sizes else None,
        "restore": {},
    }
    if not entries:
        return out
    big = f"{cfg.changelog_topic}-restore-bench"
    create_topics(cfg, [(big, partitions, {"cleanup.policy": "compact"})])
    producer = KafkaProducer(**producer_kwargs(cfg))
    try:
        for i in range(restore_entities):
            src = entries[i % len(entries)]
            copy = decode_entry(encode_entry(src))
            copy.state = from_bytes(to_bytes(src.state))
            copy.state.business_id = bid = f"restore-{i:08d}"
            producer.send(big, key=bid.encode(), value=encode_entry(copy), partition=i % partitions)
        producer.flush()
    finally:
        producer.close()
    timed = Child("restore", cfg, work, big, {"transports": transports, "partitions": partitions}).result()
    for tr, r in timed["restore"].items():
        if r["entities"] != restore_entities:
            raise RuntimeError(f"restore bench ({tr}): {r['entities']} of {restore_entities} entities restored")
    out.update(timed)
    return out


def _outputs(cfg: Config, tag: str, transport: str) -> Config:
    """The same inputs, outputs and group of its own, and the given transport."""
    return cfg.with_overrides(
        transport=transport,
        predictions_topic=f"{tag}-predictions",
        dead_letter_topic=f"{tag}-dead-letters",
        changelog_topic=f"{tag}-changelog",
        group_id=f"{tag}-worker",
    )


def _transport_run(
    base: Config,
    cfg: Config,
    transport: str,
    tag: str,
    encoded: list[tuple[bool, bytes, bytes]],
    work: Path,
    partitions: int,
    half_load_s: float,
    label: str,
    guarantees: tuple[str, ...] = ("at_least_once",),
) -> dict[str, Any]:
    """With one transport: passthrough and worker at saturation (throughput, on the preloaded
    input), then both at half the worker's rate (latency: the passthrough's is the floor that
    broker, client and load generator allow)."""
    from consumer.io.clients import create_topics

    print(f"{label} passthrough (saturation)", file=sys.stderr)
    pt_out = f"{tag}-{transport}-passthrough-out"
    create_topics(cfg, [(pt_out, partitions, {})])
    p = Child(
        "passthrough", cfg.with_overrides(transport=transport, group_id=f"{tag}-{transport}-passthrough"), work, pt_out
    ).result()
    out: dict[str, Any] = {"passthrough": {**p, "msgs_per_s": p["consumed"] / p["seconds"] if p["seconds"] else None}}

    print(f"{label} worker (saturation)", file=sys.stderr)
    wk = Child("worker", _outputs(cfg, f"{tag}-{transport}", transport), work).result()
    n = wk["consumed"]
    out["worker"] = {
        **wk,
        "events_per_s": n / wk["seconds"] if wk["seconds"] else None,
        "cpu_us_per_event": 1e6 * wk["cpu_seconds"] / n if n else None,
        "stage_us_per_event": {s: 1e6 * v / n for s, v in wk["stage_seconds"].items()} if n else {},
    }
    out["ratio"] = (out["worker"]["events_per_s"] or 0) / (out["passthrough"]["msgs_per_s"] or float("inf"))

    rate = 0.5 * (out["worker"]["events_per_s"] or 1000.0)
    for g in guarantees:
        if g != "at_least_once":
            out[g] = _guarantee_run(
                base, cfg, transport, f"{tag}-{g}", encoded, work, partitions, rate, half_load_s, g, label
            )
    for kind in ("passthrough", "worker"):
        print(f"{label} {kind} (half load)", file=sys.stderr)
        out[f"half_load_{kind}"] = _paced_run(
            base,
            f"{tag}h-{transport}-{kind}",
            transport,
            kind,
            rate,
            encoded[: max(1000, int(rate * half_load_s))],
            work,
            partitions,
        )
    # Half of each client's own rate is not the same load; one fixed rate compares them directly.
    print(f"{label} worker ({FIXED_RATE:,} events/s)", file=sys.stderr)
    out["fixed_rate_worker"] = _paced_run(
        base,
        f"{tag}f-{transport}",
        transport,
        "worker",
        FIXED_RATE,
        encoded[: max(1000, int(FIXED_RATE * half_load_s))],
        work,
        partitions,
    )
    return out


def _guarantee_run(
    base: Config,
    cfg: Config,
    transport: str,
    tag: str,
    encoded: list[tuple[bool, bytes, bytes]],
    work: Path,
    partitions: int,
    rate: float,
    half_load_s: float,
    guarantee: str,
    label: str,
) -> dict[str, Any]:
    """The worker at saturation and at the at-least-once half-load rate, under ``guarantee``."""
    print(f"{label} worker {guarantee} (saturation)", file=sys.stderr)
    wcfg = _outputs(cfg, f"{tag}-{transport}", transport).with_overrides(guarantee=guarantee)
    wk = Child("worker", wcfg.with_overrides(transactional_id=wcfg.group_id), work).result()
    n = wk["consumed"]
    out: dict[str, Any] = {
        "worker": {**wk, "events_per_s": n / wk["seconds"] if wk["seconds"] else None},
    }
    print(f"{label} worker {guarantee} (half load)", file=sys.stderr)
    out["half_load_worker"] = _paced_run(
        base,
        f"{tag}h-{transport}",
        transport,
        "worker",
        rate,
        encoded[: max(1000, int(rate * half_load_s))],
        work,
        partitions,
        guarantee=guarantee,
    )
    return out


def _paced_run(
    base: Config,
    tag: str,
    transport: str,
    kind: str,
    rate: float,
    events: list[tuple[bool, bytes, bytes]],
    work: Path,
    partitions: int,
    guarantee: str = "at_least_once",
) -> dict[str, Any]:
    """Fresh topics; ``kind`` (passthrough or worker) started and fetching; ``events`` produced at
    ``rate`` per second; latency from each input record to its output record."""
    from consumer.io.clients import create_topics

    cfg = topic_set(base, tag).with_overrides(transport=transport)
    cfg = cfg.with_overrides(guarantee=guarantee, transactional_id=cfg.group_id)
    create_topics(cfg)
    copies = f"{cfg.predictions_topic}-copy"
    if kind == "passthrough":
        create_topics(cfg, [(copies, partitions, {})])
    child = Child(kind, cfg, work, copies)
    child.wait_ready()
    t = time.perf_counter()
    sent = publish(cfg, events, rate=rate)
    publish_s = time.perf_counter() - t
    got = child.result()
    if kind == "worker":
        lat = prediction_latencies(cfg, sent)
    else:
        lat = latencies(cfg, copies, lambda r: sent.get(r.value))
    return {
        "rate_events_per_s": rate,
        # What the load generator achieved (it shares the host: at high rates it may fall short).
        "achieved_events_per_s": len(events) / publish_s if publish_s else None,
        "events": len(events),
        "consumed": got["consumed"],
        "activity_events": sum(1 for is_business, _, _ in events if not is_business),
        "predictions": got.get("predictions"),
        "latency_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": len(lat)},
    }


# ----------------------------------------------------------------------------- the bench
def run_bench(
    events: int,
    runs: int,
    out_dir: Path,
    *,
    businesses: int | None = None,
    half_load_s: float = 6.0,
    seed: int = 7,
    partitions: int = 4,
    bootstrap: str | None = None,
    batch_size: int | None = None,
    train_businesses: int = TRAIN_BUSINESSES,
    transports: list[str] | None = None,
    restore_entities: int = 50_000,
    engine: str = "tansu",
    guarantees: tuple[str, ...] = ("at_least_once",),
    growth_sizes: tuple[int, ...] = GROWTH_SIZES,
    growth_events: int = GROWTH_EVENTS,
    load_points: tuple[float, ...] = LOAD_POINTS,
    load_point_s: float | None = None,
) -> dict[str, Any]:
    """``transports``: the Kafka clients to measure (default: every one installed, kafka-python first).
    ``engine``: the broker started when no ``bootstrap`` is given (tansu or kafka).
    ``growth_sizes``: businesses in the partition for the cost-growth phase (empty: skipped), each
    folding ``growth_events`` activity events; ``load_points``: % of each transport's saturation
    rate for the latency-vs-load curve (empty: skipped), ``load_point_s`` seconds of input each
    (default ``half_load_s``)."""
    from consumer import logsetup
    from consumer.io.brokers import start_broker
    from consumer.io.clients import create_topics
    from consumer.io.transport import CONFLUENT
    from consumer.tools.replay import Position, replay
    from models.bench import simulated_records
    from models.registry import ModelRegistry
    from models.rowsets import build_training_set
    from models.train import TrainOptions
    from models.trainer import train_and_register
    from sim.world import WorldConfig

    logsetup.setup("WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # the producer's "task ran for 0.2 s" notes while we flood it
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="streamrank-bench-"))
    tag = f"bench-{uuid.uuid4().hex[:8]}"  # topics of their own, even on a shared broker
    # ~850 events per business and 10 days with the simulator's default traffic; 21 days gives the
    # trainer its validation window.
    days = 21
    n_biz = businesses or max(20, round(events / (days * 40)) + 1)
    world = WorldConfig(businesses=n_biz, days=days, seed=seed, cities=3, categories=4)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "runs": []}
    if engine == "tansu" and bootstrap is None and set(guarantees) - {"at_least_once"}:
        raise SystemExit("exactly_once needs Apache Kafka: --engine kafka, or --bootstrap an Apache Kafka cluster")
    report["machine"]["engine"] = engine if bootstrap is None else "external"
    report["machine"]["guarantees"] = list(guarantees)
    broker_ctx = start_broker(engine) if bootstrap is None else None
    try:
        if broker_ctx is not None:
            bootstrap = broker_ctx.__enter__().bootstrap
        assert bootstrap is not None
        base = Config(bootstrap=bootstrap, registry_dir=str(work / "registry"), partitions=partitions)
        if batch_size:
            base = base.with_overrides(batch_size=batch_size)
        report["machine"]["batch_size"] = base.batch_size
        report["machine"]["checkpoint_interval_ms"] = base.checkpoint_interval_ms
        transports = transports or installed_transports()
        report["machine"]["transports"] = transports
        t = time.perf_counter()
        encoded = encode_world(base, world)[:events] if events else encode_world(base, world)
        report["world"] = {
            "businesses": n_biz,
            "days": days,
            "events": len(encoded),
            "encode_seconds": time.perf_counter() - t,
        }
        print(f"world: {n_biz} businesses x {days} days, {len(encoded):,} events encoded", file=sys.stderr)
        # The model is trained once, on a world big enough for it to pass the worker's sanity set
        # (the worker refuses a model that fails it, whatever the registry says), from records in
        # memory as the trainer gets them from the log reader.
        # The sanity set is strict for a model of a small world: try a few worlds before giving up.
        failures: list[str] = []
        for train_seed in range(seed, seed + 4):
            records = simulated_records(train_businesses, days, train_seed, partitions=4)
            opts = TrainOptions(objective="rank:ndcg", sample_rate=0.2, validation_days=5)
            outcome = train_and_register(records, ModelRegistry(base.registry_dir), options=opts)
            failures = ModelRegistry(base.registry_dir).load(outcome.version).sanity_failures()
            if not failures:
                break
        if failures:
            raise RuntimeError(
                f"the bench's model fails the worker's sanity set (the worker would refuse it): {failures}"
            )
        if not outcome.promoted:  # a bench measures speed: serve it whatever the gates said
            ModelRegistry(base.registry_dir).promote(
                outcome.version, "bench: promoted regardless of gates", decided_by="bench"
            )
        report["model"] = {
            "version": outcome.version,
            "fit_seconds": outcome.fit.seconds,
            "train_events": len(records),
            "train_seed": train_seed,
            "train_build_events_per_s": outcome.build.events_per_s,
            "promoted_by_gates": outcome.promoted,
        }
        for run in range(runs):
            cfg = topic_set(base, f"{tag}-r{run}")
            create_topics(cfg)
            t = time.perf_counter()
            publish(cfg, encoded)
            publish_s = time.perf_counter() - t
            r: dict[str, Any] = {"publish": {"events_per_s": len(encoded) / publish_s}}
            r["transports"] = {}
            for tr in transports:
                r["transports"][tr] = _transport_run(
                    base,
                    cfg,
                    tr,
                    f"{tag}-r{run}",
                    encoded,
                    work,
                    partitions,
                    half_load_s,
                    label=f"[run {run + 1}/{runs}] {tr}",
                    guarantees=guarantees,
                )
            # State figures from the default transport's changelog (the state does not depend on the client).
            r["state"] = _state_figures(
                _outputs(cfg, f"{tag}-r{run}-{transports[0]}", transports[0]),
                partitions,
                restore_entities,
                transports,
                work,
            )

            print(f"[run {run + 1}/{runs}] trainer build, replay", file=sys.stderr)
            r["trainer"] = {}
            for rate, key in ((1.0, "build_events_per_s"), (0.2, "build_events_per_s_sample_0_2")):
                ts = build_training_set(records, sample_rate=rate)
                r["trainer"][key] = ts.stats.events_per_s
            r["trainer"]["events"] = ts.stats.records
            rs = replay(cfg, report["model"]["version"], f"{tag}-r{run}-replay", Position.earliest())
            r["replay"] = {
                "events_per_s": rs.events_per_s,
                "compute_events_per_s": rs.compute_events_per_s,
                "records": rs.records_read,
            }
            report["runs"].append(r)
            print(_run_line(run, r), file=sys.stderr)
        if load_points:
            sat = {tr: statistics.median(_worker_rates(report["runs"], tr)) for tr in transports}
            report["load_curve"] = _load_curve(
                base, tag, sat, load_points, encoded, work, partitions, load_point_s or half_load_s
            )
            report["load_curve_chart"] = str(
                latency_chart(report["load_curve"], out_dir / "latency_vs_load.png", P99_TARGET_MS)
            )
        if growth_sizes:
            from itertools import islice

            from sim.world import generate_records

            templates = list(islice(generate_records(world), 20_000))
            growth_tr = CONFLUENT if CONFLUENT in transports else transports[0]
            report["growth"] = growth(
                base, f"{tag}-growth", growth_tr, templates, list(growth_sizes), growth_events, work
            )
    finally:
        if broker_ctx is not None:
            broker_ctx.__exit__(None, None, None)
    report["summary"] = _summary(report["runs"], transports, guarantees, report["machine"]["engine"])
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def _worker_rates(runs: list[dict[str, Any]], transport: str) -> list[float]:
    rates = [r["transports"][transport]["worker"]["events_per_s"] for r in runs]
    return [x for x in rates if x] or [1000.0]


def _load_curve(
    base: Config,
    tag: str,
    saturation: dict[str, float],
    points: tuple[float, ...],
    encoded: list[tuple[bool, bytes, bytes]],
    work: Path,
    partitions: int,
    point_s: float,
) -> dict[str, Any]:
    """Per transport, the worker's latency at each of ``points`` % of its saturation rate (the
    median of the runs'), ``point_s`` seconds of input each (fewer where the world runs out)."""
    out: dict[str, Any] = {}
    for tr, sat in saturation.items():
        pts = []
        for pc in points:
            rate = sat * pc / 100
            print(f"latency vs load: {tr} worker at {pc:g}% ({rate:,.0f} events/s)", file=sys.stderr)
            evs = encoded[: max(1000, int(rate * point_s))]
            run = _paced_run(base, f"{tag}l{pc:g}-{tr}", tr, "worker", rate, evs, work, partitions)
            pts.append({"percent": pc, "offered_s": len(evs) / rate, **run})
        out[tr] = {"saturation_events_per_s": sat, "points": pts}
    return out


def _run_line(run: int, r: dict[str, Any]) -> str:
    return f"  run {run + 1}: " + "; ".join(
        f"{tr}: passthrough {x['passthrough']['msgs_per_s']:,.0f}/s, worker {x['worker']['events_per_s']:,.0f}/s "
        f"(ratio {x['ratio']:.2f}), half-load p99 {x['half_load_worker']['latency_ms']['p99']} ms "
        f"(passthrough {x['half_load_passthrough']['latency_ms']['p99']} ms)"
        for tr, x in r["transports"].items()
    )


Figure = tuple[str, tuple[str, ...], str, str]  # label, path in a run, unit, target


# Issue 20's targets, per transport where they differ (a transport not named here gets none).
WORKER_TARGET = {"confluent": ">= 100k"}
RATIO_TARGET = {"confluent": ">= 0.5", "kafka-python": ">= 0.65"}
CPU_TARGET = {"confluent": "<= 8"}
P99_TARGET_MS = 50.0


def figures(
    transports: list[str] | tuple[str, ...], guarantees: list[str] | tuple[str, ...] = (), engine: str = ""
) -> list[Figure]:
    """Every figure of a run: label, path in the run's dict, unit, target. ``engine`` (the broker
    the bench ran on) is named in the restore figures' labels: their target is for Apache Kafka."""
    per: list[Figure] = []
    for tr in transports:
        t = ("transports", tr)
        for g in (g for g in guarantees if g != "at_least_once"):
            per += [
                (f"{tr}: worker, {g}", (*t, g, "worker", "events_per_s"), "events/s", ""),
                (f"{tr}: {g} latency p50, half load", (*t, g, "half_load_worker", "latency_ms", "p50"), "ms", ""),
                (f"{tr}: {g} latency p99, half load", (*t, g, "half_load_worker", "latency_ms", "p99"), "ms", ""),
            ]
        per += [
            (f"{tr}: passthrough (ceiling)", (*t, "passthrough", "msgs_per_s"), "msgs/s", ""),
            (f"{tr}: worker", (*t, "worker", "events_per_s"), "events/s", WORKER_TARGET.get(tr, "")),
            (f"{tr}: worker / passthrough", (*t, "ratio"), "", RATIO_TARGET.get(tr, "")),
            (f"{tr}: passthrough latency p50, half load", (*t, "half_load_passthrough", "latency_ms", "p50"), "ms", ""),
            (f"{tr}: passthrough latency p99, half load", (*t, "half_load_passthrough", "latency_ms", "p99"), "ms", ""),
            (f"{tr}: worker latency p50, half load", (*t, "half_load_worker", "latency_ms", "p50"), "ms", ""),
            (
                f"{tr}: worker latency p99, half load",
                (*t, "half_load_worker", "latency_ms", "p99"),
                "ms",
                f"< {P99_TARGET_MS:g}",
            ),
            (
                f"{tr}: worker latency p50, {FIXED_RATE // 1000}k/s",
                (*t, "fixed_rate_worker", "latency_ms", "p50"),
                "ms",
                "",
            ),
            (
                f"{tr}: worker latency p99, {FIXED_RATE // 1000}k/s",
                (*t, "fixed_rate_worker", "latency_ms", "p99"),
                "ms",
                "",
            ),
            (f"{tr}: worker CPU per event", (*t, "worker", "cpu_us_per_event"), "µs", CPU_TARGET.get(tr, "")),
            *[(f"  stage {s}", (*t, "worker", "stage_us_per_event", s), "µs/event", "") for s in BATCH_STAGES],
        ]
    return per + [
        ("trainer build, sample 1.0", ("trainer", "build_events_per_s"), "events/s", ">= 300k"),
        ("trainer build, sample 0.2", ("trainer", "build_events_per_s_sample_0_2"), "events/s", ""),
        ("state per business", ("state", "bytes_per_business_mean"), "bytes", "<= 2048"),
        *[
            (
                f"state restore, {tr}" + (f" ({engine})" if engine else ""),
                ("state", "restore", tr, "entities_per_s"),
                "entities/s",
                ">= 200k",
            )
            for tr in transports
        ],
        ("state decode (on next event)", ("state", "decode_entities_per_s"), "entities/s", ""),
        ("replay", ("replay", "events_per_s"), "events/s", ""),
    ]


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def verdict(target: str, value: float | None) -> str:
    """``met`` or ``missed`` for a target such as ``>= 100k``, ``< 50``; empty without a target;
    ``-`` without a value."""
    m = re.fullmatch(r"(>=|<=|<|>)\s*([0-9.]+)(k?)", target.strip())
    if m is None:
        return ""
    if value is None:
        return "-"
    bound = float(m.group(2)) * (1000 if m.group(3) else 1)
    ok = {">=": value >= bound, "<=": value <= bound, "<": value < bound, ">": value > bound}[m.group(1)]
    return "met" if ok else "missed"


def _summary(
    runs: list[dict[str, Any]], transports: list[str], guarantees: tuple[str, ...] = (), engine: str = ""
) -> dict[str, Any]:
    out = {}
    for label, path, unit, target in figures(transports, guarantees, engine):
        vals = [v for v in (_get(r, path) for r in runs) if v is not None]
        median = statistics.median(vals) if vals else None
        out[".".join(path)] = {
            "label": label.strip(),
            "unit": unit,
            "target": target,
            "min": min(vals) if vals else None,
            "median": median,
            "max": max(vals) if vals else None,
            "n": len(vals),
            "verdict": verdict(target, median),  # from the median of the runs
        }
    return out


def format_table(report: dict[str, Any]) -> str:
    f = _num
    mach = report["machine"]
    lines = [f"{'figure':<50} {'min':>10} {'median':>10} {'max':>10}  {'unit':<11} {'target':<8} met?", "-" * 112]
    for label, path, unit, target in figures(mach["transports"], mach.get("guarantees", ()), mach.get("engine", "")):
        s = report["summary"][".".join(path)]
        lines.append(
            f"{label:<50} {f(s['min']):>10} {f(s['median']):>10} {f(s['max']):>10}  {unit:<11} {target:<8} "
            f"{s.get('verdict', '')}"
        )
    lines += _curve_lines(report)
    m = report.get("model", {})
    w = report.get("world", {})
    lines.append(
        f"model fit {m.get('fit_seconds', 0):.1f} s (once); world {w.get('events', 0):,} events, "
        f"{w.get('businesses')} businesses; {len(report['runs'])} runs, {report['machine']['cpus']} CPUs"
    )
    return "\n".join(lines)


def _curve_lines(report: dict[str, Any]) -> list[str]:
    """The growth and latency-vs-load phases (one run each, after the runs)."""
    lines = []
    g = report.get("growth")
    if g:
        lines += [
            "",
            f"cost growth ({g['transport']}, {g['partitions']} partition, {g['events']:,} activity events per size "
            "over warm states, one run):",
            f"{'businesses':>12} {'events/s':>10} {'CPU µs/ev':>10} {'touched':>9}  {'RSS ready':>10} {'RSS peak':>10}"
            f"  {'warm-up/s':>10}",
        ]
        for x in g["sizes"]:
            lines.append(
                f"{x['businesses']:>12,} {_num(x['events_per_s']):>10} {_num(x['cpu_us_per_event']):>10} "
                f"{x['touched_businesses']:>9,}  {_num(x['rss_mb_at_ready']):>7} MB {_num(x['max_rss_mb']):>7} MB"
                f"  {_num(x['warmup_events_per_s']):>10}"
            )
        lines.append(
            "  (warm-up: one event per business first, each decoding its restored state, and the first "
            "batch's one-off costs; not in events/s)"
        )
    curve = report.get("load_curve")
    if curve:
        lines += ["", f"latency vs offered load (one run; chart: {report.get('load_curve_chart')}):"]
        lines.append(f"{'transport':<14} {'load':>5} {'offered/s':>10} {'achieved/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for tr, c in curve.items():
            for pt in c["points"]:
                lat = pt["latency_ms"]
                lines.append(
                    f"{tr:<14} {pt['percent']:>4g}% {_num(pt['rate_events_per_s']):>10} "
                    f"{_num(pt['achieved_events_per_s']):>10} {_num(lat['p50']):>8} {_num(lat['p99']):>8}"
                )
    return lines


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.0f}"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m consumer.tools.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="input events per run (default 100000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--half-load-s", type=float, default=6.0, help="seconds of paced input for the half-load latency")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--batch-size", type=int, default=None, help="records per poll batch (default: the Config default)")
    ap.add_argument("--bootstrap", default=None, help="an existing broker instead of the embedded one")
    ap.add_argument(
        "--restore-entities", type=int, default=50_000, help="businesses in the restore-rate changelog (default 50000)"
    )
    ap.add_argument(
        "--transport", action="append", choices=TRANSPORTS, help="repeatable; default: every installed transport"
    )
    ap.add_argument("--engine", choices=["tansu", "kafka"], default="tansu", help="broker to start (no --bootstrap)")
    ap.add_argument(
        "--guarantee",
        action="append",
        choices=["at_least_once", "exactly_once"],
        help="repeatable; exactly_once adds the worker's runs in that mode (Apache Kafka only)",
    )
    ap.add_argument(
        "--metrics-cost",
        action="store_true",
        help="only print the per-batch cost of the worker's metric updates (no broker)",
    )
    ap.add_argument(
        "--growth-sizes",
        type=_ints,
        default=GROWTH_SIZES,
        help="businesses in the partition for the cost-growth phase, comma-separated (default 1000,10000,100000)",
    )
    ap.add_argument(
        "--growth-events", type=int, default=GROWTH_EVENTS, help=f"activity events per growth size ({GROWTH_EVENTS})"
    )
    ap.add_argument("--skip-growth", action="store_true", help="leave out the cost-growth phase")
    ap.add_argument(
        "--load-points",
        type=_floats,
        default=LOAD_POINTS,
        help="%% of saturation for the latency-vs-load curve, comma-separated (default 10,25,50,75,100)",
    )
    ap.add_argument("--load-point-s", type=float, default=None, help="seconds of input per load point (--half-load-s)")
    ap.add_argument("--skip-load-curve", action="store_true", help="leave out the latency-vs-load phase")
    a = ap.parse_args(argv)
    if a.metrics_cost:
        print(metrics_cost())
        return 0
    report = run_bench(
        a.events,
        a.runs,
        Path(a.out),
        half_load_s=a.half_load_s,
        bootstrap=a.bootstrap,
        batch_size=a.batch_size,
        transports=a.transport,
        restore_entities=a.restore_entities,
        engine=a.engine,
        guarantees=tuple(a.guarantee or ["at_least_once"]),
        growth_sizes=() if a.skip_growth else a.growth_sizes,
        growth_events=a.growth_events,
        load_points=() if a.skip_load_curve else a.load_points,
        load_point_s=a.load_point_s,
    )
    print(format_table(report))
    print(f"JSON: {Path(a.out) / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
