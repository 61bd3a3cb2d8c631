"""``streamrank diff A B``: compare two prediction topics (or two models in one topic) before a promotion."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from consumer.cli import common
from consumer.config import label_config

_HELP = """\
Compare two prediction streams joined on their source record: coverage, score deltas, per-group
rank correlation and top-k overlap, and each model's offline metrics (NDCG@10, AUC, top-k capture)
on the same outcomes (conversions in the label horizon, read from the activity topic; kinds and
horizon from STREAMRANK_CONVERSION_KINDS and STREAMRANK_HORIZON_MS). A and B are TOPIC or
TOPIC@MODEL_VERSION (one model's predictions in a topic holding several, e.g. two replays).
Writes diff.md, diff.png and diff.json into --out and prints the markdown.
"""


def register(sub: Any) -> None:
    def source(text: str) -> Any:
        from consumer.tools.topicreads import Source

        try:
            return Source.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p = sub.add_parser(
        "diff",
        help="compare two prediction topics: coverage, score deltas, rankings, offline metrics",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", type=source, metavar="A", help="TOPIC or TOPIC@MODEL_VERSION")
    p.add_argument("b", type=source, metavar="B", help="TOPIC or TOPIC@MODEL_VERSION")
    p.add_argument(
        "--from",
        dest="start",
        type=common.parse_time_ms,
        metavar="TIME",
        help="only predictions with event_time >= TIME (ISO-8601 or epoch ms)",
    )
    p.add_argument("--until", type=common.parse_time_ms, metavar="TIME", help="only predictions with event_time < TIME")
    p.add_argument("--k", type=common.positive_int, default=3, help="top-k for overlap and capture (default 3)")
    p.add_argument("--out", metavar="DIR", help="report folder (default ./diff-<UTC time>)")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace, cfg: Any) -> int:
    from consumer import logsetup
    from consumer.tools.diff import run_diff, write_report

    logsetup.setup("WARNING", cfg.log_format)
    label = label_config(cfg)
    out = Path(args.out or f"diff-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}")
    rep = run_diff(
        cfg,
        args.a,
        args.b,
        kinds=label.kinds,
        horizon_ms=label.horizon_ms,
        k=args.k,
        start_ms=args.start,
        end_ms=args.until,
        progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
    )
    md_path, png_path, md = write_report(rep, out)
    print(md)
    print(f"report: {md_path} ({png_path.name}, diff.json beside it)")
    return 0
