"""The ``streamrank`` command.

Configuration is read from the environment once here (``Config.from_env``), flags override it,
and the resulting frozen ``Config`` is passed down. Expected failures (bad arguments, an
unreachable broker, a refused model) print one line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from consumer.config import TRANSPORTS, Config
from consumer.errors import StreamrankError

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _add_kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")


def _add_registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="DIR", help="model registry directory (default: $STREAMRANK_REGISTRY)")


def _config(args: argparse.Namespace) -> Config:
    cfg = Config.from_env()
    overrides = {
        "bootstrap": getattr(args, "bootstrap", None),
        "registry_dir": getattr(args, "registry", None),
        "partitions": getattr(args, "partitions", None),
        "replication": getattr(args, "replication", None),
        "group_id": getattr(args, "group", None),
        "batch_size": getattr(args, "batch_size", None),
        "transport": getattr(args, "transport", None),
    }
    cfg = cfg.with_overrides(**overrides)
    cfg.validate()
    return cfg


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _port(text: str) -> int:
    v = _positive_int(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a TCP port")
    return v


# Shared helpers for command modules (consumer/commands/*).
def add_kafka_args(p: argparse.ArgumentParser) -> None:
    _add_kafka_args(p)


def add_registry_args(p: argparse.ArgumentParser) -> None:
    _add_registry_args(p)


def positive_int(text: str) -> int:
    return _positive_int(text)


# ---------------------------------------------------------------------------------------- broker
def cmd_broker(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.broker import start_broker

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with start_broker(args.engine, port=args.port, log_path=args.log) as broker:
        print(f"bootstrap={broker.bootstrap}", flush=True)
        log_file = getattr(broker, "log_file", None)
        if log_file:
            print(f"log={log_file}", flush=True)
        while not stop.is_set():
            if not broker.running:
                print(f"error: the {args.engine} broker exited", file=sys.stderr)
                return EXIT_FAILURE
            stop.wait(0.5)
    print("broker stopped", flush=True)
    return 0


# ---------------------------------------------------------------------------------------- topics
def cmd_topics(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.kafka import create_topics

    if args.action == "create":
        for name, outcome in create_topics(cfg).items():
            print(f"{name}: {outcome}")
    return 0


# -------------------------------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace, cfg: Config) -> int:
    from sim.world import WorldConfig, generate_records

    world = WorldConfig(businesses=args.businesses, days=args.days, seed=args.seed, cities=args.cities, categories=args.categories)
    t0 = time.perf_counter()
    if args.out:
        from consumer.eventlog import write_log

        n = write_log(args.out, generate_records(world))
        dt = time.perf_counter() - t0
        print(f"generated {n} events into {args.out} in {dt:.1f}s ({n / dt:,.0f} events/s)")
        return 0
    from consumer.kafka import create_topics
    from consumer.publish import publish_records

    create_topics(cfg)
    stats = publish_records(cfg, generate_records(world), progress=lambda n: print(f"  {n:,} events published", file=sys.stderr))
    print(
        f"generated {stats.total} events ({stats.business} business, {stats.activity} activity) into "
        f"{cfg.business_topic}/{cfg.activity_topic} in {stats.seconds:.1f}s ({stats.total / max(stats.seconds, 1e-9):,.0f} events/s)"
    )
    return 0


def cmd_publish(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.eventlog import read_log
    from consumer.kafka import create_topics
    from consumer.publish import publish_records

    create_topics(cfg)
    stats = publish_records(cfg, read_log(args.file))
    print(f"published {stats.total} events from {args.file} in {stats.seconds:.1f}s")
    return 0


# ----------------------------------------------------------------------------------------- train
def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '1d' (or plain seconds) → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 6h, 1d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def parse_time_ms(text: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or epoch milliseconds → epoch ms."""
    import datetime as dt

    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch ms nor an ISO-8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def label_config(cfg: Config):
    from models.dataset import LabelConfig

    kinds = tuple(k.strip() for k in cfg.conversion_kinds.split(",") if k.strip())
    try:
        return LabelConfig(kinds=kinds, horizon_ms=cfg.horizon_ms)
    except ValueError as exc:
        from consumer.errors import ConfigError

        raise ConfigError(f"conversion kinds {cfg.conversion_kinds!r} (--conversion-kinds or STREAMRANK_CONVERSION_KINDS): {exc}") from exc


def file_log_records(path: str):
    """An event-log file as trainer records: one partition, offsets counted per topic."""
    from consumer.logreader import LogRecord
    from features.errors import InvalidEvent
    from features.events import ActivityEvent, BusinessEvent
    from features.order import ACTIVITY_RANK, BUSINESS_RANK

    from consumer.eventlog import read_log

    offsets = [0, 0]
    for kind, rec in read_log(path):
        rank = BUSINESS_RANK if kind == "business" else ACTIVITY_RANK
        offset = offsets[rank]
        offsets[rank] += 1
        try:
            event = (BusinessEvent if rank == BUSINESS_RANK else ActivityEvent).from_record(rec)
        except InvalidEvent:
            continue
        yield LogRecord(rank, 0, offset, event, event.business_id)


def _train_once(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.logreader import LogRange, read_input_log
    from models.errors import TrainingError
    from models.registry import ModelRegistry
    from models.train import TrainOptions
    from models.trainer import train_and_register

    options = TrainOptions(objective=args.objective, sample_rate=args.sample_rate, start_ms=args.start, validation_days=args.validation_days)
    # The label flags override the environment's STREAMRANK_CONVERSION_KINDS / STREAMRANK_HORIZON_MS.
    cfg = cfg.with_overrides(
        conversion_kinds=getattr(args, "conversion_kinds", None),
        horizon_ms=None if getattr(args, "horizon", None) is None else round(args.horizon * 1000),
    )
    rng = LogRange()
    if args.from_file:
        records = file_log_records(args.from_file)
    else:
        def progress(n: int, pending: int) -> None:
            if n and n % 200_000 < 5000:
                print(f"  read {n:,} records ({pending} partitions to go)", file=sys.stderr, flush=True)

        records = read_input_log(cfg, rng, progress=progress)
    t0 = time.perf_counter()
    from consumer.metrics import TrainingRun

    try:
        # The run's facts go to the log and the metrics textfile, failures included (consumer.metrics).
        with TrainingRun(cfg, rng, serve=getattr(args, "every", None) is not None) as run:
            outcome = run.done(train_and_register(records, ModelRegistry(cfg.registry_dir), label_cfg=label_config(cfg),
                                                  options=options, data_range=rng))
    except TrainingError as exc:
        print(f"error: training failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    dt = time.perf_counter() - t0
    ev = outcome.evaluation
    b = outcome.build
    print(f"model {outcome.version}: {'PROMOTED' if outcome.promoted else 'not promoted'} ({outcome.reason})")
    print(f"  training set: {b.records:,} events -> {b.examples:,} examples in {dt:.1f}s ({b.records / dt:,.0f} events/s overall); fit {outcome.fit.seconds:.2f}s")
    print(f"  top-{ev.k} capture: model {ev.model.capture:.3f}  popularity {ev.popularity.capture:.3f}  random {ev.random.capture:.3f}")
    print(f"  NDCG@10: model {ev.model.ndcg10:.3f}  popularity {ev.popularity.ndcg10:.3f}   AUC: model {ev.model.auc:.3f}  popularity {ev.popularity.auc:.3f}")
    for g in outcome.gates:
        print(f"  gate {g.name}: {'skipped' if g.passed is None else 'pass' if g.passed else 'FAIL'} - {g.detail}")
    for shift in outcome.shifts:
        print(f"  importance shift: {shift}")
    print(f"  report: {ModelRegistry(cfg.registry_dir).version_dir(outcome.version) / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace, cfg: Config) -> int:
    from consumer import logs

    logs.setup("WARNING")
    if args.every is None:
        return _train_once(args, cfg)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        started = time.monotonic()
        try:
            _train_once(args, cfg)
        except StreamrankError as exc:  # a broker hiccup must not end a periodic trainer
            print(f"error: {exc}; retrying at the next period", file=sys.stderr)
        stop.wait(max(0.0, args.every - (time.monotonic() - started)))
    return 0


# ------------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    import json

    from consumer import logs
    from consumer.worker import Worker

    logs.setup(args.log_level)
    worker = Worker(cfg, exit_when_idle_s=args.exit_when_idle)
    worker.install_signal_handlers()
    stats = worker.run()
    if args.summary:
        print(json.dumps(stats.summary(), indent=1, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrank", description="Score local businesses from Kafka event streams.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("broker", help="run a local broker on 127.0.0.1 until SIGINT/SIGTERM (Tansu, or Apache Kafka on the JVM)")
    p.add_argument("--engine", choices=["tansu", "kafka"], default="tansu",
                   help="tansu: the embedded zero-dependency broker (default); kafka: Apache Kafka, single-node KRaft (needs Java 17+)")
    p.add_argument("--port", type=_port, help="listen port (default: a free one)")
    p.add_argument("--log", metavar="FILE", help="broker log file (kafka: default a file in a temp folder, printed at start)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="manage streamrank's topics")
    p.add_argument("action", choices=["create"], help="create: make missing topics (idempotent, co-partitioned inputs)")
    p.add_argument("--partitions", type=_positive_int, help="partitions per topic (default: $STREAMRANK_PARTITIONS or 4)")
    p.add_argument("--replication", type=_positive_int, help="replication factor (default: $STREAMRANK_REPLICATION or 1)")
    _add_kafka_args(p)
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("generate", help="write a simulated event history to the input topics or a file")
    p.add_argument("--businesses", type=_positive_int, default=200)
    p.add_argument("--days", type=_positive_int, default=14)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cities", type=_positive_int, default=12, help="number of cities (default 12)")
    p.add_argument("--categories", type=_positive_int, default=12, help="number of categories (default 12)")
    p.add_argument("--out", metavar="FILE", help="write an Avro container file instead of publishing")
    p.add_argument("--partitions", type=_positive_int, help="partitions if topics must be created")
    _add_kafka_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("publish", help="publish an event-log file (from generate --out) onto the input topics")
    p.add_argument("file")
    p.add_argument("--partitions", type=_positive_int, help="partitions if topics must be created")
    _add_kafka_args(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("train", help="train a model from the event log; register it, promote it if it passes the gates")
    p.add_argument("--every", type=parse_duration, metavar="DURATION", help="retrain periodically (e.g. 6h) until SIGTERM")
    p.add_argument("--start", type=parse_time_ms, metavar="TIME",
                   help="make training examples from this time on (ISO-8601 or epoch ms); the state is still built from the whole log, as the worker's; default: earliest")
    p.add_argument("--objective", default="rank:ndcg", choices=["rank:ndcg", "binary:logistic"])
    p.add_argument("--sample-rate", type=float, default=0.1, help="share of scoring moments kept as examples (default 0.1)")
    p.add_argument("--validation-days", type=_positive_int, default=7)
    p.add_argument("--from-file", metavar="FILE", help="train from an event-log file (generate --out) instead of Kafka")
    p.add_argument("--conversion-kinds", metavar="KINDS",
                   help="label: activity kinds counted as conversions, comma-separated, e.g. REVIEW,TIP,CHECKIN "
                        "(default: $STREAMRANK_CONVERSION_KINDS)")
    p.add_argument("--horizon", type=parse_duration, metavar="DURATION",
                   help="label horizon H: conversions in (t, t+H], e.g. 1d or 30d (default: $STREAMRANK_HORIZON_MS)")
    _add_kafka_args(p)
    _add_registry_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="the long-running scoring worker (joins the consumer group)")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS", help="exit after this long with nothing to do (batch runs, tests)")
    p.add_argument("--group", help="consumer group (default: $STREAMRANK_GROUP)")
    p.add_argument("--batch-size", type=_positive_int, help="max records per batch (default: $STREAMRANK_BATCH_SIZE)")
    p.add_argument("--transport", choices=TRANSPORTS, help="Kafka client (default: $STREAMRANK_TRANSPORT)")
    p.add_argument("--summary", action="store_true", help="print a JSON summary on exit")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_kafka_args(p)
    _add_registry_args(p)
    p.set_defaults(func=cmd_run)

    _register_command_modules(sub)
    return parser


def _register_command_modules(sub: argparse._SubParsersAction) -> None:
    import importlib
    import pkgutil

    import consumer.commands

    this = sys.modules[__name__]
    for info in sorted(pkgutil.iter_modules(consumer.commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"consumer.commands.{info.name}").register(sub, this)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = _config(args)
        return args.func(args, cfg)
    except StreamrankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        from kafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            print(f"error: Kafka: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise


if __name__ == "__main__":
    sys.exit(main())
