"""``streamrank import-yelp DIR``: the Yelp dataset's JSON files as input events (docs/yelp.md).

The events go onto the input topics, or with ``--out FILE`` into an event-log file that
``streamrank train --from-file`` and ``streamrank publish`` read. Bad lines are reported and
skipped; the exit code is 0 whenever the files could be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any

from consumer.cli import common
from consumer.config import Config


class ProgressBar:
    """A text progress bar with the rate, on stderr: redrawn in place on a terminal, else one line per interval."""

    def __init__(self, stream: IO[str], interval_s: float = 1.0, width: int = 24):
        self.stream = stream
        self.interval_s = interval_s
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._label: str | None = None
        self._t0 = 0.0
        self._last = 0.0
        self._open_line = False

    def __call__(self, label: str, unit: str, items: int, done: int, total: int, final: bool) -> None:
        now = time.monotonic()
        if label != self._label:
            self._end_line()
            self._label, self._t0, self._last = label, now, now
        if not final and now - self._last < self.interval_s:
            return
        self._last = now
        frac = min(1.0, done / total) if total else 1.0
        filled = int(frac * self.width)
        rate = items / max(now - self._t0, 1e-6)
        line = (
            f"{label} [{'#' * filled}{'-' * (self.width - filled)}] {frac:6.1%}  {items:,} {unit}  {rate:,.0f} {unit}/s"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._open_line = True
            if final:
                self._end_line()
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def close(self) -> None:
        self._end_line()


def cmd_import_yelp(args: argparse.Namespace, cfg: Config) -> int:
    from consumer.tools.importers.yelp import YelpImport, YelpImportError

    bar = None if args.quiet else ProgressBar(sys.stderr)
    if not args.out:
        # Before hours of reading, not after: the broker must answer and the topics exist.
        from consumer.io.clients import create_topics

        create_topics(cfg)
    t0 = time.perf_counter()
    try:
        with YelpImport(
            args.directory,
            limit=args.limit,
            since_ms=args.since,
            run_size=args.run_size,
            tmp_dir=args.tmp_dir,
            progress=bar,
        ) as imp:
            report = imp.scan()
            if args.out:
                from consumer.io.eventfiles import write_log

                try:
                    n = write_log(args.out, imp.events())
                except OSError as exc:
                    raise YelpImportError(f"cannot write {args.out}: {exc}") from exc
                where = args.out
            else:
                from consumer.io.publish import publish_records

                n = publish_records(cfg, imp.events()).total
                where = f"{cfg.business_topic}/{cfg.activity_topic}"
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    lines = sum(f.lines for f in report.files)
    print(
        f"imported {n:,} events from {lines:,} lines of {len(report.files)} files into {where} "
        f"in {dt:.1f}s ({lines / max(dt, 1e-9):,.0f} lines/s)"
    )
    for line in report.lines():
        print(line)
    return 0


def register(sub: Any) -> None:
    from consumer.tools.importers.yelp import RUN_SIZE

    p = sub.add_parser(
        "import-yelp", help="import the Yelp dataset's JSON files as input events (topics or --out file)"
    )
    p.add_argument(
        "directory",
        metavar="DIR",
        help="folder with business.json, review.json, tip.json, checkin.json (or yelp_academic_dataset_*.json)",
    )
    p.add_argument("--limit", type=common.positive_int, metavar="N", help="read at most N lines of each file")
    p.add_argument(
        "--since",
        type=common.parse_time_ms,
        metavar="TIME",
        help="drop activity before this time (ISO-8601 or epoch ms): a smaller training log; "
        "business events are all kept, dated from all activity",
    )
    p.add_argument("--out", metavar="FILE", help="write an event-log file (like generate --out) instead of publishing")
    p.add_argument(
        "--run-size",
        type=common.positive_int,
        default=RUN_SIZE,
        metavar="N",
        help=f"events per sorted run held in memory (default {RUN_SIZE:,})",
    )
    p.add_argument(
        "--tmp-dir",
        metavar="DIR",
        help="where the sort spills its runs (default: the system temp folder; about 100 bytes per event)",
    )
    p.add_argument("--partitions", type=common.positive_int, help="partitions if topics must be created")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_kafka_args(p)
    p.set_defaults(func=cmd_import_yelp)
