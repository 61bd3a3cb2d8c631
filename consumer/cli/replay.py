"""``streamrank replay``: re-run a model over a range of the input log into a predictions topic."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from consumer.cli import common

_HELP = """\
Rebuild feature state from the input log and emit predictions for the activity records in
[--from, --until) into --output-topic. Reads without a consumer group (no offsets committed, live
workers unaffected) and never reads or writes the state changelog. Prediction ids are the live
ones (source coordinates + model version), so replays are idempotent for consumers that dedupe by id.

Bounds:  earliest (--from only) | TIME (ISO-8601, UTC unless it says otherwise, or epoch ms)
         | P:OFFSET[,P:OFFSET...] (activity-topic partition:offset).
A TIME resolves, per partition, to the first record whose record timestamp >= TIME (the broker's
answer is verified against the records, and searched for when wrong). --from with offsets replays
only the partitions it lists; --until with offsets leaves unlisted partitions open-ended.
"""


def register(sub: Any) -> None:
    def bound(text: str, allow_earliest: bool) -> Any:
        from consumer.tools.replay import Position, looks_like_offsets, parse_offsets

        if text == "earliest":
            if not allow_earliest:
                raise argparse.ArgumentTypeError("--until takes a TIME or P:OFFSET list")
            return Position.earliest()
        if looks_like_offsets(text):
            try:
                return Position.at_offsets(parse_offsets(text))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return Position.at_time(common.parse_time_ms(text))

    def lateness(text: str) -> int:
        return 0 if text.strip() in ("0", "0s") else int(common.parse_duration(text) * 1000)

    p = sub.add_parser(
        "replay",
        help="re-run a model over a range of the input log into a topic",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from",
        dest="start",
        required=True,
        type=lambda t: bound(t, True),
        metavar="earliest|TIME|P:OFFSET,...",
        help="first activity record to emit predictions for",
    )
    p.add_argument(
        "--until",
        type=lambda t: bound(t, False),
        metavar="TIME|P:OFFSET,...",
        help="exclusive end (default: the end of the log when the read starts)",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="VERSION",
        help="model version in the registry, 'promoted', or 'popularity' (the baseline workers serve while nothing is promoted)",
    )
    p.add_argument(
        "--output-topic", required=True, help="where predictions go (created with the input partition count)"
    )
    p.add_argument("--chunk-size", type=common.positive_int, default=5000, help="records per model call (default 5000)")
    p.add_argument(
        "--max-lateness",
        type=lateness,
        default=None,
        metavar="DURATION",
        help="how far record timestamps may run behind the newest before them, for time lookups "
        "(default: the feature spec's allowed lateness, 6h; 0 trusts them to be ordered)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    common.add_kafka_args(p)
    common.add_registry_args(p)
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace, cfg: Any) -> int:
    from consumer import logsetup
    from consumer.io.timeindex import DEFAULT_MAX_LATENESS_MS
    from consumer.tools.replay import ReplayError, replay

    logsetup.setup("WARNING", cfg.log_format)
    version = args.model
    if version == "promoted":
        from models.registry import ModelRegistry

        version = ModelRegistry(cfg.registry_dir).promoted_version()
        if version is None:
            raise ReplayError(f"--model promoted: nothing is promoted in {cfg.registry_dir}")
    last = [0.0]

    def throttled() -> bool:
        now = time.monotonic()
        if now - last[0] < 2.0:
            return False
        last[0] = now
        return True

    def on_ranges(ranges: dict) -> None:
        print(f"replaying {cfg.activity_topic} with model {version} into {args.output_topic}", file=sys.stderr)
        for p, r in sorted(ranges.items()):
            how = []
            for name, lk in (("from", r.start_lookup), ("until", r.end_lookup)):
                if lk is not None:
                    how.append(
                        f"{name}: {lk.method} (broker said {lk.broker_offset}, {lk.probes} probes, {lk.records_read} records read)"
                    )
            end = "end of log" if r.end is None else r.end
            print(f"  partition {p}: offsets [{r.start}, {end}) {'; '.join(how)}", file=sys.stderr)

    def on_read(n: int, pending: int) -> None:
        if throttled():
            print(f"  read {n:,} records ({pending} partitions to go)", file=sys.stderr, flush=True)

    def on_process(partition: int, done: int, total: int) -> None:
        if throttled():
            print(f"  partition {partition}: {done:,}/{total:,} records", file=sys.stderr, flush=True)

    stats = replay(
        cfg,
        version,
        args.output_topic,
        args.start,
        args.until,
        chunk_size=args.chunk_size,
        max_lateness_ms=DEFAULT_MAX_LATENESS_MS if args.max_lateness is None else args.max_lateness,
        on_ranges=on_ranges,
        on_read=on_read,
        on_process=on_process,
    )
    if args.json:
        print(json.dumps(stats.to_dict(), indent=1))
        return 0
    print(
        f"replayed {stats.records_read:,} records with model {stats.model_version} into {stats.output_topic}: "
        f"{stats.predictions:,} predictions"
    )
    print(
        f"  folded before the range: {stats.folded:,}; processed in range: {stats.processed:,}; "
        f"skipped: {({k: v for k, v in stats.skipped.items() if v}) or 'none'}"
    )
    for p, r in sorted(stats.ranges.items()):
        print(f"  partition {p}: activity offsets [{r.start}, {r.end})")
    print(
        f"  throughput: {stats.events_per_s:,.0f} events/s end to end ({stats.seconds:.2f}s: read {stats.read_seconds:.2f}s, "
        f"lookups {stats.lookup_seconds:.2f}s, compute {stats.compute_seconds:.2f}s of which model {stats.score_seconds:.2f}s, "
        f"write {stats.write_seconds:.2f}s); state rebuild + scoring {stats.compute_events_per_s:,.0f} events/s"
    )
    return 0
