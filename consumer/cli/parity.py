"""``streamrank parity``: recompute sampled predictions' features from the log with the trainer's fold."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from consumer.cli import common

_HELP = """\
Sample predictions (serving, hold-out and shadow topics), replay the input log with the trainer's
fold (models.dataset.scoring_moments) and compare the hash of the recomputed feature row with the
prediction's feature_hash. Prints the mismatch rate; exits 1 when it is above --max-rate.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "parity",
        help="online/offline feature parity: mismatch rate on a sample of predictions",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sample", type=common.positive_int, default=1000, help="predictions to check (default 1000)")
    p.add_argument("--max-rate", type=float, default=0.0, help="exit 1 when the mismatch rate exceeds this (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_parity)


def cmd_parity(args: argparse.Namespace, cfg: Any) -> int:
    from consumer import logsetup
    from consumer.tools.parity import check_parity, to_markdown
    from consumer.tools.report import ReportError, read_prediction_topics

    logsetup.setup("WARNING", cfg.log_format)
    preds = read_prediction_topics(cfg, [cfg.predictions_topic, cfg.holdout_topic, cfg.shadow_topic])
    if not preds:
        raise ReportError(f"no predictions in {cfg.predictions_topic}, {cfg.holdout_topic} or {cfg.shadow_topic}")
    res = check_parity(cfg, preds, args.sample, progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    print(json.dumps(res.to_dict(), indent=2) if args.json else to_markdown(res))
    return 1 if res.mismatch_rate > args.max_rate else 0
