"""``streamrank report``: per arm and model, online outcomes and uplift vs hold-out, beside offline metrics."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from consumer.cli import common
from consumer.config import label_config

_HELP = """\
Join the predictions (serving topic, hold-out topic, shadow topic: STREAMRANK_PREDICTIONS_TOPIC,
STREAMRANK_HOLDOUT_TOPIC, STREAMRANK_SHADOW_TOPIC) with the conversions that followed within the
horizon (STREAMRANK_CONVERSION_KINDS, STREAMRANK_HORIZON_MS) and report per arm and model version:
sample sizes, conversions per business per day, top-k capture, online AUC, a calibration
(reliability) table, and uplift versus the hold-out with a 95 % interval; plus the offline metrics
the trainer recorded in the registry. Writes report.md, report.png and report.json into --out and
prints the markdown.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="experiment report: arms vs hold-out, online vs offline metrics",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", metavar="DIR", help="report folder (default ./report-<UTC time>)")
    p.add_argument(
        "--from",
        dest="start",
        type=common.parse_time_ms,
        metavar="TIME",
        help="experiment start (ISO-8601 or epoch ms): uplift counts conversions after it, adjusted (CUPED) "
        "by each business's conversions before it",
    )
    p.add_argument("--top-k", dest="top_k", type=common.positive_int, default=3, help="k of top-k capture (default 3)")
    common.add_kafka_args(p)
    common.add_registry_args(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace, cfg: Any) -> int:
    from consumer import logsetup
    from consumer.tools.report import run_report, write_report
    from models.registry import ModelRegistry

    logsetup.setup("WARNING", cfg.log_format)
    label = label_config(cfg)
    out = Path(args.out or f"report-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}")
    print("reading predictions and activity ...", file=sys.stderr, flush=True)
    rep = run_report(
        cfg,
        kinds=label.kinds,
        horizon_ms=label.horizon_ms,
        k=args.top_k,
        registry=ModelRegistry(cfg.registry_dir),
        start_ms=args.start,
    )
    md_path, png_path, md = write_report(rep, out)
    print(md)
    print(f"report: {md_path} ({png_path.name}, report.json beside it)")
    return 0
