"""``streamrank train``: one training run, or one every ``--every`` until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from consumer.cli import common
from consumer.config import Config


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model from the event log; register it, promote it if it passes the gates")
    p.add_argument(
        "--every", type=common.parse_duration, metavar="DURATION", help="retrain periodically (e.g. 6h) until SIGTERM"
    )
    p.add_argument(
        "--start",
        type=common.parse_time_ms,
        metavar="TIME",
        help="make training examples from this time on (ISO-8601 or epoch ms); the state is still built from "
        "the whole log, as the worker's; default: earliest",
    )
    p.add_argument(
        "--objective",
        default="auto",
        choices=["auto", "rank:ndcg", "binary:logistic"],
        help="auto (default): the one that does better on an inner split of the training period",
    )
    p.add_argument(
        "--sample-rate",
        type=float,
        default=None,
        help="share of scoring moments kept as event examples (default: all of a log up to 100k activity "
        "records, about 100k moments of a larger one)",
    )
    p.add_argument(
        "--examples",
        default=None,
        choices=["snapshots", "events", "both"],
        help="training examples: every served business of a market at training snapshot times, scoring "
        "moments grouped by market x day, or both (default: models.train.TrainOptions.examples)",
    )
    p.add_argument(
        "--base-margin",
        default=None,
        choices=["popularity", "none"],
        help="start every row from log1p(popularity) and learn corrections, or not "
        "(default: models.train.TrainOptions.base_margin)",
    )
    p.add_argument("--validation-days", type=common.positive_int, default=7)
    p.add_argument(
        "--window-days",
        type=common.positive_int,
        default=None,
        help="train and judge on the last N days of data; the state still folds the whole log "
        "(default: $STREAMRANK_TRAIN_WINDOW_DAYS, 0 = all)",
    )
    p.add_argument(
        "--workers",
        type=common.positive_int,
        default=None,
        help="processes building partitions in parallel (default: $STREAMRANK_TRAIN_WORKERS)",
    )
    p.add_argument(
        "--memory-budget",
        type=int,
        metavar="MB",
        default=None,
        help="fit the training snapshots out of core when their features exceed MB (default: "
        "$STREAMRANK_TRAIN_MEMORY_MB, 0 = always in memory)",
    )
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="build and fit on a Dask cluster: tcp://scheduler:8786, or local[:N] (default: $STREAMRANK_DASK_SCHEDULER)",
    )
    p.add_argument(
        "--work-dir",
        metavar="DIR",
        help="the build's checkpoint and example shards; a run reads only the log after the last run's "
        "(default: $STREAMRANK_TRAIN_DIR, else REGISTRY/.train-build)",
    )
    p.add_argument("--from-file", metavar="FILE", help="train from an event-log file (generate --out) instead of Kafka")
    p.add_argument(
        "--conversion-kinds",
        metavar="KINDS",
        help="label: activity kinds counted as conversions, comma-separated, e.g. REVIEW,TIP,CHECKIN "
        "(default: $STREAMRANK_CONVERSION_KINDS)",
    )
    p.add_argument(
        "--horizon",
        type=common.parse_duration,
        metavar="DURATION",
        help="label horizon H: conversions in (t, t+H], e.g. 1d or 30d (default: $STREAMRANK_HORIZON_MS)",
    )
    common.add_kafka_args(p)
    common.add_registry_args(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace, cfg: Config) -> int:
    from consumer import logsetup
    from consumer.trainer.loop import run_every

    logsetup.setup("WARNING", cfg.log_format)
    # A long partition's progress (records/s, rows written, memory) every 30 s of its build.
    logging.getLogger("streamrank.models.build").setLevel(logging.INFO)
    # The label flags override the environment's STREAMRANK_CONVERSION_KINDS / STREAMRANK_HORIZON_MS.
    cfg = cfg.with_overrides(
        conversion_kinds=args.conversion_kinds,
        horizon_ms=None if args.horizon is None else round(args.horizon * 1000),
        train_dir=args.work_dir,
        train_workers=args.workers,
        train_window_days=args.window_days,
        train_memory_mb=args.memory_budget,
        dask_scheduler=args.dask,
    )
    if args.every is None:
        return train_and_print(args, cfg)

    def retry_later(exc: Exception) -> None:
        print(f"error: {exc}; retrying at the next period", file=sys.stderr)

    run_every(args.every, lambda: train_and_print(args, cfg), common.stop_on_signals(), retry_later)
    return 0


def train_and_print(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.trainer.loop import TrainRequest, describe, train_once
    from models.train import TrainOptions

    options = TrainOptions(
        objective=args.objective,
        sample_rate=args.sample_rate,
        start_ms=args.start,
        validation_days=args.validation_days,
    )
    if args.examples is not None:
        options = options.with_(examples=args.examples)
    if args.base_margin is not None:
        options = options.with_(base_margin=args.base_margin)
    request = TrainRequest(options, from_file=args.from_file, serve_metrics=args.every is not None)
    # A failed run raises (``TrainingError`` and the rest of the project's errors): ``main`` prints
    # it on one line and exits 1; under --every, ``run_every`` logs it and retries next period (a
    # settings mistake, ConfigError or SpecError, still ends it).
    result = train_once(cfg, request, progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    print("\n".join(describe(result)))
    return 0
