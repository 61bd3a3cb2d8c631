"""``streamrank monitor``: the business-metric monitor (``consumer.monitor``)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

from consumer.cli import common
from consumer.config import LOG_FORMATS, Config

_HELP = """\
Read the prediction topics (serving, hold-out, shadow) and the activity topic and keep, per arm and
market over sliding event-time windows (STREAMRANK_MONITOR_WINDOWS): online top-k capture next to
the popularity ranking's, conversions per business per day, uplift vs the hold-out with its 95 %
interval (the estimator of `streamrank report`), the prediction-to-conversion delay and the
coverage. Serves them on /metrics with /healthz and /readyz (STREAMRANK_METRICS_PORT or --port).
The windows are rebuilt from the topics on every start. --snapshot reads the topics to their end
once, prints the figures and exits.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "monitor",
        help="business-metric monitor: capture, uplift, coverage per arm and market (Prometheus)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=common.port, help="metrics port (default: $STREAMRANK_METRICS_PORT)")
    p.add_argument("--snapshot", action="store_true", help="read the topics to their end once, print, exit")
    p.add_argument("--market", default="all", help="market of the --snapshot tables (default: all)")
    p.add_argument("--json", metavar="FILE", help="with --snapshot: also write every figure as JSON")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", choices=LOG_FORMATS, help="default: $STREAMRANK_LOG_FORMAT or auto")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace, cfg: Config) -> int:
    from consumer import logsetup
    from consumer.monitor.exposition import to_dict, to_markdown
    from consumer.monitor.loop import Monitor
    from consumer.runtime.health import MetricsServer

    logsetup.setup("WARNING" if args.snapshot else args.log_level, cfg.log_format)
    monitor = Monitor(cfg)
    if args.snapshot:
        snap = monitor.run(until_caught_up=True)
        print(to_markdown(snap, args.market))
        if args.json:
            Path(args.json).write_text(json.dumps(to_dict(snap), indent=1), encoding="utf-8")
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: monitor.request_stop())
    port = args.port if args.port is not None else cfg.metrics_port
    server = (
        MetricsServer(monitor.metrics.registry, port, health=monitor.health, readiness=monitor.readiness)
        if port
        else None
    )
    try:
        monitor.run()
    finally:
        if server is not None:
            server.close()
    return 0
