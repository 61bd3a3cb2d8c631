"""``make demo``: the whole pipeline on an embedded broker, end to end, with a summary.

broker → topics → generate a world → train (register, gates, promote) → a few malformed records
→ run the worker until idle → read the predictions back → print what happened → stop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from consumer.config import Config
from consumer.io.brokers.tansu import EmbeddedBroker


def _read_predictions(cfg: Config) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    from consumer.io.clients import consumer_kwargs, iter_to_highwater
    from consumer.pipeline.codec import AvroCodec, FileSchemaRegistry

    codec = AvroCodec(FileSchemaRegistry(cfg.schema_registry or None), "Prediction")
    consumer = KafkaConsumer(**consumer_kwargs(cfg, None))
    tps = [
        TopicPartition(cfg.predictions_topic, p) for p in sorted(consumer.partitions_for_topic(cfg.predictions_topic))
    ]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out = [
        codec.decode(r.value, r.topic, r.partition, r.offset)
        for r in iter_to_highwater(consumer, tps, max_records=50_000)
    ]
    consumer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streamrank-demo")
    ap.add_argument("--businesses", type=int, default=300)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", help="keep the registry here (default: a temporary folder)")
    args = ap.parse_args(argv)

    from kafka import KafkaProducer

    from consumer import logsetup
    from consumer.io.clients import create_topics, producer_kwargs
    from consumer.io.publish import publish_records
    from consumer.runtime.worker import Worker
    from consumer.trainer.loop import TrainRequest, describe, train_once
    from models.errors import TrainingError
    from models.train import TrainOptions
    from sim.world import WorldConfig, generate_records

    work = Path(args.workdir or tempfile.mkdtemp(prefix="streamrank-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    # The console tells the story; every log record (the worker's included) goes to this file.
    log_path = work / "demo.log"
    # The malformed records the demo publishes on purpose are dead-lettered with a WARNING each;
    # the story reports them, so the console shows only errors (something that did go wrong).
    logsetup.setup("INFO", file=log_path, console_level="ERROR")
    t_all = time.perf_counter()
    with EmbeddedBroker() as broker:
        cfg = Config(bootstrap=broker.bootstrap, registry_dir=str(work / "registry"), partitions=4)
        print(f"[1/6] embedded Tansu broker at {broker.bootstrap}; registry {cfg.registry_dir}; full log {log_path}")
        for name, outcome in create_topics(cfg).items():
            print(f"      topic {name}: {outcome}")

        world = WorldConfig(businesses=args.businesses, days=args.days, seed=args.seed, cities=3, categories=4)
        stats = publish_records(cfg, generate_records(world))
        print(
            f"[2/6] generated {stats.total:,} events ({stats.business} business, {stats.activity:,} activity) "
            f"for {args.businesses} businesses x {args.days} days in {stats.seconds:.1f}s"
        )

        print("[3/6] training from the event log")
        try:
            result = train_once(cfg, TrainRequest(TrainOptions(sample_rate=0.2, validation_days=5)))
        except TrainingError as exc:
            print(f"      training failed: {exc}", file=sys.stderr)
            return 1
        print("\n".join("    " + line for line in describe(result)))
        if not result.outcome.promoted:
            # The worker does not wait for one: it serves the popularity baseline (models.baseline).
            print(
                "      no model was promoted: the worker serves the popularity baseline (model_version popularity-...)"
            )

        producer = KafkaProducer(**producer_kwargs(cfg))
        bad = [b"not avro at all", b"\x00\x00\x00\x00\x02\x02", b"\x00\x00\x00\x27\x0f\x00"]
        for value in bad:
            producer.send(cfg.activity_topic, key=b"b000001", value=value)
        producer.flush()
        producer.close()
        print(
            f"[4/6] published {len(bad)} malformed records to {cfg.activity_topic} (they must land in {cfg.dead_letter_topic})"
        )

        print("[5/6] running the worker until idle")
        t0 = time.perf_counter()
        worker = Worker(cfg, exit_when_idle_s=3)
        ws = worker.run()
        dt = time.perf_counter() - t0 - 3
        consumed = sum(ws.consumed.values())
        print(
            f"      consumed {consumed:,} records in {dt:.1f}s (incl. group join and restore): "
            f"{ws.predictions:,} predictions, {sum(ws.dead_letters.values())} dead letters {dict(ws.dead_letters)}"
        )
        print(f"      outcomes: {dict(ws.outcomes)}")
        for m in ws.models:
            print(f"      model {m['version']} first scored {m['first_scored']}")

        preds = _read_predictions(cfg)
        print(
            f"[6/6] read back {len(preds):,} predictions from {cfg.predictions_topic}; latest score per business, top 3 per group:"
        )
        latest: dict[str, dict] = {}
        for p in preds:
            cur = latest.get(p["business_id"])
            if cur is None or (p["event_time"], p["source_offset"]) >= (cur["event_time"], cur["source_offset"]):
                latest[p["business_id"]] = p
        groups: dict[str, list[dict]] = defaultdict(list)
        for p in latest.values():
            groups[p["group_key"]].append(p)
        for g in sorted(groups):
            top = sorted(groups[g], key=lambda p: -p["score"])[:3]
            print(f"      {g:<32} " + "  ".join(f"{p['business_id']} ({p['score']:+.2f})" for p in top))
    print(
        f"demo finished in {time.perf_counter() - t_all:.0f}s; model report: {cfg.registry_dir}/<version>/report.md; "
        f"full log: {log_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
